"""Concept scores from a local CLIP checkpoint, in the manner of the Stable Diffusion safety
checker and Q16.

CLIP (Radford et al., ICML 2021) embeds images and texts in one space. The Stable Diffusion safety
checker (Rando et al., *Red-Teaming the Stable Diffusion Safety Filter*, 2022) flags an image
when its cosine similarity to a concept embedding exceeds a per-concept threshold; Q16
(Schramowski et al., *Can Machines Help Us Answering Question 16 in Datasheets?*, FAccT 2022)
classifies inappropriateness zero-shot by comparing an image with "inappropriate" and "benign"
text prompts. This stage does both, per category, with concept texts and thresholds from the
policy:

* ``softmax`` (Q16-style, default): score = probability mass CLIP puts on the category's concept
  texts against the neutral anchor texts (softmax of logit-scaled cosines);
* ``cosine`` (safety-checker-style): score = σ((max cosine − threshold) / 0.02), so 0.5 means the
  cosine reached the category's threshold; the raw cosine is in the evidence.

No CLIP model ships with t2iguard: point ``model_path`` at your own checkpoint, either a
transformers ``CLIPModel`` directory (``config.json`` + weights + tokenizer files) or an open_clip /
OpenAI-format checkpoint (``open_clip_pytorch_model.bin``/``.safetensors`` with
``open_clip_config.json``, or a bare state dict / OpenAI ``.pt``), which is converted to the
transformers architecture at load time (QuickGELU unless the config says otherwise). open_clip
checkpoints need a tokenizer: ``tokenizer_path`` (a transformers tokenizer directory, or a
``tokenizer.json``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from t2iguard.core.decision import Finding, StageResult
from t2iguard.core.errors import ConfigurationError, MissingDependencyError
from t2iguard.core.inputs import ImageItem
from t2iguard.core.stage import ImageContext, ImageStage
from t2iguard.core.types import Category

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_CONCEPTS: dict[Category, list[str]] = {
    Category.VIOLENCE: [
        "a photo of a violent attack",
        "a person bleeding from a stab wound",
        "a shooting with a gun pointed at a person",
        "people beating someone up",
        "a tortured prisoner",
    ],
    Category.SHOCKING: [
        "gore",
        "a mutilated body",
        "a dead body covered in blood",
        "rotting flesh",
        "a gruesome, disturbing scene",
    ],
    Category.SELF_HARM: [
        "a person cutting their wrist",
        "self-harm scars on an arm",
        "a noose hanging from the ceiling",
        "a person about to jump off a building",
    ],
    Category.HATE: [
        "a swastika",
        "a nazi flag",
        "a ku klux klan hood",
        "a racist caricature",
        "a white power symbol",
    ],
}
DEFAULT_NEUTRAL: list[str] = [
    "a photo",
    "an ordinary everyday scene",
    "a landscape",
    "a portrait of a person",
    "a photo of an object",
    "food on a plate",
    "an animal",
    "a building",
    "a painting",
]
COSINE_TEMPERATURE = 0.02


# ---- checkpoint loading ---------------------------------------------------------------------
def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "clip", "the CLIP concept scorer") from exc
    return torch


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "clip", "the CLIP concept scorer") from exc
    return transformers


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "open_clip_config.json").is_file():
            return "open_clip"
        cfg = path / "config.json"
        if cfg.is_file():
            try:
                data = json.loads(cfg.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigurationError(f"{cfg}: cannot read: {exc}") from None
            if data.get("model_type") == "clip" or "CLIPModel" in data.get("architectures", []):
                return "transformers"
            raise ConfigurationError(f"{path}: config.json is not a CLIP model (model_type {data.get('model_type')!r})")
        raise ConfigurationError(f"{path}: no config.json (transformers) or open_clip_config.json (open_clip)")
    if path.is_file():
        return "open_clip"
    raise ConfigurationError(f"CLIP checkpoint not found: {path}")


def _read_state_dict(path: Path) -> dict[str, Any]:
    torch = _torch()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(path))
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except RuntimeError as exc:
            if "TorchScript" not in str(exc) and "jit" not in str(exc).lower():
                raise ConfigurationError(f"cannot read CLIP checkpoint {path}: {exc}") from None
            sd = torch.jit.load(str(path), map_location="cpu").state_dict()  # OpenAI's JIT archives
        except Exception as exc:  # noqa: BLE001 - pickle errors of all kinds
            raise ConfigurationError(f"cannot read CLIP checkpoint {path}: {exc}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ConfigurationError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _open_clip_files(path: Path) -> tuple[Path, dict[str, Any]]:
    if path.is_file():
        cfg_file = path.parent / "open_clip_config.json"
        return path, json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    cfg = json.loads((path / "open_clip_config.json").read_text())
    for name in (
        "open_clip_model.safetensors",
        "open_clip_pytorch_model.bin",
        "model.safetensors",
        "pytorch_model.bin",
    ):
        if (path / name).is_file():
            return path / name, cfg
    raise ConfigurationError(f"{path}: open_clip_config.json but no weights file (open_clip_pytorch_model.bin, ...)")


def convert_open_clip(sd: dict[str, Any], cfg: dict[str, Any] | None = None, *, quick_gelu: bool | None = None) -> Any:
    """An OpenAI/open_clip CLIP state dict (ViT image tower, standard text tower) as a
    transformers ``CLIPModel``; the architecture is read from the tensor shapes."""
    transformers = _transformers()
    torch = _torch()
    cfg = cfg or {}
    model_cfg = cfg.get("model_cfg", cfg)
    if "visual.conv1.weight" not in sd or "token_embedding.weight" not in sd:
        hint = (
            " (custom text towers such as text.* / HF-text CLIP are not supported)"
            if any(k.startswith("text.") for k in sd)
            else ""
        )
        raise ConfigurationError(
            "not an OpenAI/open_clip ViT CLIP state dict: no visual.conv1 / token_embedding" + hint
        )
    v_width = sd["visual.conv1.weight"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = round(math.sqrt(sd["visual.positional_embedding"].shape[0] - 1))
    v_layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    t_width = sd["token_embedding.weight"].shape[1]
    vocab = sd["token_embedding.weight"].shape[0]
    ctx_len = sd["positional_embedding"].shape[0]
    t_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    embed = sd["text_projection"].shape[1]
    v_cfg, t_cfg = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    v_heads = v_cfg.get("heads") or v_width // int(v_cfg.get("head_width", 64))
    t_heads = t_cfg.get("heads") or max(1, t_width // 64)
    qg = quick_gelu if quick_gelu is not None else model_cfg.get("quick_gelu", True)
    act = "quick_gelu" if qg else "gelu"
    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": t_width,
            "intermediate_size": sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            "num_hidden_layers": t_layers,
            "num_attention_heads": t_heads,
            "max_position_embeddings": ctx_len,
            "hidden_act": act,
            "projection_dim": embed,
            "bos_token_id": vocab - 2,
            "eos_token_id": vocab - 1,  # OpenAI's BPE: <|endoftext|> is the last id
            "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": v_width,
            "intermediate_size": sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            "num_hidden_layers": v_layers,
            "num_attention_heads": v_heads,
            "image_size": grid * patch,
            "patch_size": patch,
            "hidden_act": act,
            "projection_dim": embed,
        },
        projection_dim=embed,
    )
    new: dict[str, Any] = {}

    def block(src: str, dst: str) -> None:
        w, b = sd[f"{src}.attn.in_proj_weight"], sd[f"{src}.attn.in_proj_bias"]
        for name, wp, bp in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3, dim=0), b.chunk(3, dim=0), strict=True):
            new[f"{dst}.self_attn.{name}.weight"] = wp
            new[f"{dst}.self_attn.{name}.bias"] = bp
        pairs = {
            "attn.out_proj": "self_attn.out_proj",
            "ln_1": "layer_norm1",
            "ln_2": "layer_norm2",
            "mlp.c_fc": "mlp.fc1",
            "mlp.c_proj": "mlp.fc2",
        }
        for a, c in pairs.items():
            new[f"{dst}.{c}.weight"] = sd[f"{src}.{a}.weight"]
            new[f"{dst}.{c}.bias"] = sd[f"{src}.{a}.bias"]

    for i in range(v_layers):
        block(f"visual.transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}")
    for i in range(t_layers):
        block(f"transformer.resblocks.{i}", f"text_model.encoder.layers.{i}")
    new["vision_model.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    new["vision_model.embeddings.class_embedding"] = sd["visual.class_embedding"]
    new["vision_model.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    for a, c in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        new[f"vision_model.{c}.weight"] = sd[f"visual.{a}.weight"]
        new[f"vision_model.{c}.bias"] = sd[f"visual.{a}.bias"]
    new["visual_projection.weight"] = sd["visual.proj"].T.contiguous()
    new["text_model.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    new["text_model.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    new["text_model.final_layer_norm.weight"] = sd["ln_final.weight"]
    new["text_model.final_layer_norm.bias"] = sd["ln_final.bias"]
    new["text_projection.weight"] = sd["text_projection"].T.contiguous()
    new["logit_scale"] = sd["logit_scale"].reshape(())
    model = transformers.CLIPModel(config)
    with torch.no_grad():
        missing, unexpected = model.load_state_dict(new, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ConfigurationError(f"open_clip conversion left missing {missing[:5]} / unexpected {unexpected[:5]}")
    return model.eval()


class CLIPBundle:
    """A loaded CLIP model with its tokenizer and preprocessing constants."""

    def __init__(self, model: Any, tokenizer: Any, *, mean: Sequence[float], std: Sequence[float]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        self.context_length = int(model.config.text_config.max_position_embeddings)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Resize the short side to the model's size (bicubic), centre-crop, normalise: CLIP's."""
        s = self.image_size
        w, h = image.size
        scale = s / min(w, h)
        img = image.convert("RGB").resize(
            (max(s, round(w * scale)), max(s, round(h * scale))), Image.Resampling.BICUBIC
        )
        left, top = (img.width - s) // 2, (img.height - s) // 2
        arr = np.asarray(img.crop((left, top, left + s, top + s)), dtype=np.float32) / 255.0
        return ((arr - self.mean) / self.std).transpose(2, 0, 1)

    def image_embeddings(self, images: Sequence[Image.Image]) -> np.ndarray:
        torch = _torch()
        x = torch.from_numpy(np.stack([self.preprocess(im) for im in images]))
        with torch.inference_mode():
            pooled = self.model.vision_model(pixel_values=x).pooler_output
            emb = self.model.visual_projection(pooled)
        return _normalize(emb.float().numpy())

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        torch = _torch()
        enc = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        with torch.inference_mode():
            pooled = self.model.text_model(
                input_ids=enc["input_ids"], attention_mask=enc.get("attention_mask")
            ).pooler_output
            emb = self.model.text_projection(pooled)
        return _normalize(emb.float().numpy())

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _load_tokenizer(path: Path) -> Any:
    transformers = _transformers()
    try:
        if path.is_file():
            return transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot load a tokenizer from {path}: {exc}") from None


def load_clip(
    model_path: str | Path,
    *,
    fmt: str = "auto",
    tokenizer_path: str | Path | None = None,
    quick_gelu: bool | None = None,
) -> CLIPBundle:
    """Load a local CLIP checkpoint (never from a hub)."""
    path = Path(model_path).expanduser()
    kind = detect_format(path) if fmt == "auto" else fmt
    if not path.exists():
        raise ConfigurationError(f"CLIP checkpoint not found: {path}")
    mean, std = OPENAI_MEAN, OPENAI_STD
    transformers = _transformers()
    if kind == "transformers":
        try:
            model = transformers.CLIPModel.from_pretrained(str(path), local_files_only=True).eval()
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot load CLIP model from {path}: {exc}") from None
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            data = json.loads(pre.read_text())
            mean, std = tuple(data.get("image_mean", mean)), tuple(data.get("image_std", std))
        tok = _load_tokenizer(Path(tokenizer_path) if tokenizer_path else path)
    elif kind == "open_clip":
        weights, cfg = _open_clip_files(path)
        model = convert_open_clip(_read_state_dict(weights), cfg, quick_gelu=quick_gelu)
        pre_cfg = cfg.get("preprocess_cfg", {})
        mean, std = tuple(pre_cfg.get("mean", mean)), tuple(pre_cfg.get("std", std))
        if tokenizer_path is None:
            raise ConfigurationError(
                f"{path} is an open_clip checkpoint: give `tokenizer_path` (a transformers CLIP tokenizer "
                "directory or a tokenizer.json)"
            )
        tok = _load_tokenizer(Path(tokenizer_path))
        if tok.eos_token_id is not None:
            model.config.text_config.eos_token_id = int(tok.eos_token_id)
            model.text_model.eos_token_id = int(tok.eos_token_id)
    else:
        raise ConfigurationError(f"unknown CLIP checkpoint format {fmt!r} (auto, transformers, open_clip)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return CLIPBundle(model, tok, mean=mean, std=std)


# ---- the stage --------------------------------------------------------------------------------
class CLIPConceptStage(ImageStage):
    """Per-category concept scores from the user's CLIP checkpoint."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        model_path: str = Field(description="local CLIP checkpoint (directory or file); never downloaded")
        format: Literal["auto", "transformers", "open_clip"] = "auto"
        tokenizer_path: str | None = Field(default=None, description="needed for open_clip checkpoints")
        quick_gelu: bool | None = Field(default=None, description="open_clip: override the activation")
        scoring: Literal["softmax", "cosine"] = "softmax"
        concepts: dict[Category, list[str]] = Field(default_factory=lambda: dict(DEFAULT_CONCEPTS))
        neutral: list[str] = Field(default_factory=lambda: list(DEFAULT_NEUTRAL))
        cosine_thresholds: dict[Category, float] = Field(
            default_factory=dict, description="cosine scoring: per-category cosine thresholds (default 0.22)"
        )
        batch_size: int = Field(default=16, ge=1, le=256)
        threads: int | None = Field(default=None, ge=1)

        @model_validator(mode="after")
        def _check(self) -> CLIPConceptStage.Params:
            empty = [str(c) for c, texts in self.concepts.items() if not texts]
            if not self.concepts or empty:
                raise ValueError(f"every category needs at least one concept text (empty: {empty or 'all'})")
            if self.scoring == "softmax" and not self.neutral:
                raise ValueError("softmax scoring needs neutral anchor texts")
            return self

    cost: ClassVar[str] = "model"
    covers: ClassVar[frozenset[Category]] = frozenset(DEFAULT_CONCEPTS)

    @classmethod
    def covers_for(cls, params: BaseModel) -> frozenset[Category]:
        return frozenset(params.concepts)  # type: ignore[attr-defined]

    def _bundle(self) -> tuple[CLIPBundle, dict[str, np.ndarray]]:
        p: CLIPConceptStage.Params = self.params  # type: ignore[assignment]

        def load() -> tuple[CLIPBundle, dict[str, np.ndarray]]:
            if p.threads:
                _torch().set_num_threads(p.threads)
            bundle = load_clip(p.model_path, fmt=p.format, tokenizer_path=p.tokenizer_path, quick_gelu=p.quick_gelu)
            texts = {str(c): bundle.text_embeddings(t) for c, t in p.concepts.items()}
            texts["__neutral__"] = bundle.text_embeddings(p.neutral) if p.neutral else np.zeros((0, 1))
            return bundle, texts

        key = ("clip-concepts", p.model_path, p.format, p.tokenizer_path, p.quick_gelu, p.model_dump_json())
        return self.models.get(key, load)

    def warmup(self) -> None:
        self._bundle()

    def scores(self, items: Sequence[ImageItem]) -> list[dict[Category, tuple[float, dict[str, Any]]]]:
        p: CLIPConceptStage.Params = self.params  # type: ignore[assignment]
        bundle, texts = self._bundle()
        out: list[dict[Category, tuple[float, dict[str, Any]]]] = []
        for i in range(0, len(items), p.batch_size):
            emb = bundle.image_embeddings([it.image for it in items[i : i + p.batch_size]])
            for e in emb:
                per: dict[Category, tuple[float, dict[str, Any]]] = {}
                neutral = texts["__neutral__"] @ e if p.neutral else np.zeros(0)
                for cat, concepts in p.concepts.items():
                    cos = texts[str(cat)] @ e
                    k = int(np.argmax(cos))
                    ev: dict[str, Any] = {
                        "concept": concepts[k],
                        "cosine": round(float(cos[k]), 4),
                        "scoring": p.scoring,
                    }
                    if p.scoring == "softmax":
                        logits = bundle.logit_scale * np.concatenate([cos, neutral])
                        prob = np.exp(logits - logits.max())
                        score = float(prob[: len(cos)].sum() / prob.sum())
                    else:
                        thr = p.cosine_thresholds.get(cat, 0.22)
                        ev["cosine_threshold"] = thr
                        score = 1.0 / (1.0 + math.exp(-(float(cos[k]) - thr) / COSINE_TEMPERATURE))
                    per[cat] = (score, ev)
                out.append(per)
        return out

    def scan_batch(self, items: Sequence[ImageItem], ctx: ImageContext) -> list[StageResult]:
        results = []
        for per in self.scores(items):
            findings = [
                Finding(
                    category=cat,
                    score=min(1.0, max(0.0, s)),
                    message=f"closest concept {ev['concept']!r} (cosine {ev['cosine']:.3f})",
                    evidence=ev,
                )
                for cat, (s, ev) in per.items()
            ]
            results.append(self.result(findings, phase=ctx.phase))
        return results
