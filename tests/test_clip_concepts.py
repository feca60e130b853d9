"""The CLIP concept scorer on tiny CLIPs built from configs with random weights, in both
checkpoint formats. The open_clip path is checked against an independent reference: a minimal
OpenAI-architecture CLIP written with ``torch.nn.MultiheadAttention`` (whose packed ``in_proj``
layout is what OpenAI and open_clip checkpoints store)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from PIL import Image  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: E402

from t2iguard.core.errors import ConfigurationError  # noqa: E402
from t2iguard.core.pipeline import SafetyStack  # noqa: E402
from t2iguard.core.policy import policy_from_dict  # noqa: E402
from t2iguard.core.stage import ModelCache  # noqa: E402
from t2iguard.core.types import Phase  # noqa: E402
from t2iguard.image.clip_concepts import CLIPBundle, load_clip  # noqa: E402

WORDS = "a photo of the gore blood swastika flag landscape object food animal building painting dog cat person"
VOCAB = 64  # ids: 0 pad, 1 unk, words..., 62 bos, 63 eos


def _tokenizer(directory: Path) -> Path:
    vocab = {"<pad>": 0, "<unk>": 1}
    for w in WORDS.split():
        vocab.setdefault(w, len(vocab))
    vocab["<bos>"], vocab["<eos>"] = VOCAB - 2, VOCAB - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", VOCAB - 2), ("<eos>", VOCAB - 1)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(str(directory))
    return directory


def _hf_config() -> object:
    return transformers.CLIPConfig(
        text_config={
            "vocab_size": VOCAB,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 12,
            "bos_token_id": VOCAB - 2,
            "eos_token_id": VOCAB - 1,
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny-clip-hf")
    torch.manual_seed(0)
    transformers.CLIPModel(_hf_config()).save_pretrained(str(d))
    _tokenizer(d)
    return d


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)) for _ in range(3)]


def test_transformers_checkpoint_scores_match_the_model(hf_dir: Path) -> None:
    bundle = load_clip(hf_dir)
    ref = transformers.CLIPModel.from_pretrained(str(hf_dir)).eval()
    imgs = _images()
    x = torch.from_numpy(np.stack([bundle.preprocess(im) for im in imgs]))
    with torch.no_grad():
        expect = ref.visual_projection(ref.vision_model(pixel_values=x).pooler_output).numpy()
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(bundle.image_embeddings(imgs), expect, atol=1e-5)
    t = bundle.text_embeddings(["a photo of gore", "a dog"])
    assert t.shape == (2, 16) and np.allclose(np.linalg.norm(t, axis=1), 1.0)


def test_stage_in_a_policy_reports_per_category_scores(hf_dir: Path) -> None:
    policy = policy_from_dict(
        {
            "name": "clip",
            "stages": [
                {
                    "stage": "clip_concepts",
                    "params": {
                        "model_path": str(hf_dir),
                        "concepts": {"shocking": ["gore", "blood"], "hate": ["swastika flag"]},
                        "neutral": ["a photo", "a landscape", "a dog"],
                    },
                    "categories": {"shocking": {"threshold": 0.0, "action": "review"}, "hate": {"action": "allow"}},
                }
            ],
        }
    )
    stack = SafetyStack(policy, models=ModelCache())
    d = stack.check_image(_images()[0])
    assert set(d.categories) == {"shocking", "hate"}
    assert 0.0 < d.categories["hate"] < 1.0
    assert d.action == "review", d.reason  # threshold 0 on shocking: the rule fires, from the policy
    entry = next(e for e in d.trace if e.category == "shocking")
    assert entry.evidence["concept"] in ("gore", "blood") and "cosine" in entry.evidence


def test_cosine_scoring_is_one_half_at_the_threshold(hf_dir: Path) -> None:
    from t2iguard.core.inputs import load_image
    from t2iguard.image.clip_concepts import CLIPConceptStage

    models = ModelCache()
    bundle = load_clip(hf_dir)
    img = _images()[0]
    cos = float(bundle.text_embeddings(["gore"])[0] @ bundle.image_embeddings([img])[0])

    def score(threshold: float) -> float:
        policy = policy_from_dict(
            {
                "name": "cos",
                "stages": [
                    {
                        "stage": "clip_concepts",
                        "params": {
                            "model_path": str(hf_dir),
                            "scoring": "cosine",
                            "concepts": {"shocking": ["gore"]},
                            "cosine_thresholds": {"shocking": threshold},
                        },
                    }
                ],
            }
        )
        (stage,) = SafetyStack(policy, models=models).stages(Phase.OUTPUT_IMAGE)
        assert isinstance(stage, CLIPConceptStage)
        ((s, ev),) = stage.scores([load_image(img)])[0].values()
        assert ev["cosine"] == pytest.approx(cos, abs=1e-4) and ev["cosine_threshold"] == threshold
        return s

    assert score(cos) == pytest.approx(0.5, abs=0.01)
    assert score(cos - 0.1) > 0.99 and score(cos + 0.1) < 0.01


# ---- open_clip / OpenAI format -----------------------------------------------------------------
class _Block(torch.nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(width, heads)
        self.ln_1 = torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Sequential()
        self.mlp.add_module("c_fc", torch.nn.Linear(width, width * 2))
        self.mlp.add_module("c_proj", torch.nn.Linear(width * 2, width))
        self.ln_2 = torch.nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # (L, N, D)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        h = self.mlp.c_fc(self.ln_2(x))
        return x + self.mlp.c_proj(h * torch.sigmoid(1.702 * h))  # QuickGELU, as OpenAI's CLIP


class _Transformer(torch.nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = torch.nn.ModuleList([_Block(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for b in self.resblocks:
            x = b(x, mask)
        return x


class _Visual(torch.nn.Module):
    def __init__(self, size: int, patch: int, width: int, layers: int, heads: int, out: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = torch.nn.Parameter(torch.randn(width) * 0.1)
        self.positional_embedding = torch.nn.Parameter(torch.randn((size // patch) ** 2 + 1, width) * 0.1)
        self.ln_pre = torch.nn.LayerNorm(width)
        self.transformer = _Transformer(width, layers, heads)
        self.ln_post = torch.nn.LayerNorm(width)
        self.proj = torch.nn.Parameter(torch.randn(width, out) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj


class _OpenAICLIP(torch.nn.Module):
    """OpenAI's CLIP layout (clip/model.py), tiny."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = _Visual(32, 8, 32, 2, 2, 16)
        self.transformer = _Transformer(24, 2, 2)
        self.token_embedding = torch.nn.Embedding(VOCAB, 24)
        self.positional_embedding = torch.nn.Parameter(torch.randn(12, 24) * 0.1)
        self.ln_final = torch.nn.LayerNorm(24)
        self.text_projection = torch.nn.Parameter(torch.randn(24, 16) * 0.1)
        self.logit_scale = torch.nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        mask = torch.full((n, n), float("-inf")).triu(1)
        x = self.token_embedding(ids) + self.positional_embedding[:n]
        x = self.ln_final(self.transformer(x.permute(1, 0, 2), mask).permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


@pytest.mark.parametrize("weights", ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"])
def test_open_clip_checkpoint_converts_exactly(tmp_path: Path, weights: str) -> None:
    torch.manual_seed(1)
    ref = _OpenAICLIP().eval()
    sd = ref.state_dict()
    if weights.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / weights))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, str(tmp_path / weights))
    cfg = {
        "model_cfg": {"embed_dim": 16, "quick_gelu": True, "text_cfg": {"heads": 2}, "vision_cfg": {"head_width": 16}}
    }
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    tok_dir = _tokenizer(tmp_path / "tok")
    with pytest.raises(ConfigurationError, match="tokenizer_path"):
        load_clip(tmp_path)
    bundle: CLIPBundle = load_clip(tmp_path, tokenizer_path=tok_dir)
    imgs = _images()
    x = torch.from_numpy(np.stack([bundle.preprocess(im) for im in imgs]))
    texts = ["a photo of gore", "a dog", "swastika flag painting"]
    ids = bundle.tokenizer(texts, padding="max_length", max_length=12, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        img_ref = ref.visual(x).numpy()
        txt_ref = ref.encode_text(ids).numpy()
    img_ref /= np.linalg.norm(img_ref, axis=1, keepdims=True)
    txt_ref /= np.linalg.norm(txt_ref, axis=1, keepdims=True)
    np.testing.assert_allclose(bundle.image_embeddings(imgs), img_ref, atol=1e-5)
    np.testing.assert_allclose(bundle.text_embeddings(texts), txt_ref, atol=1e-5)
    assert bundle.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)


def test_clear_errors_for_bad_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        load_clip(tmp_path / "missing")
    with pytest.raises(ConfigurationError, match=r"no config\.json"):
        load_clip(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigurationError, match="not a CLIP model"):
        load_clip(tmp_path)
    bad = tmp_path / "weights.bin"
    torch.save({"foo": torch.zeros(2)}, str(bad))
    with pytest.raises(ConfigurationError, match="not an OpenAI/open_clip ViT CLIP"):
        load_clip(bad, tokenizer_path=tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigurationError, match="cannot read CLIP checkpoint"):
        load_clip(garbage, tokenizer_path=tmp_path)
