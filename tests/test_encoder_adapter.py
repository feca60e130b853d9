"""The MiniLM encoder with a LoRA adapter: the training model (PyTorch) and the runtime (the
adapter merged into the ONNX graph's weights) compute the same embeddings, and a head names the
adapter it was trained on, checked before use."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from t2iguard import ModelCache
from t2iguard.core.errors import ConfigurationError
from t2iguard.prompt.classifier import HEAD_DIR, load_classifier
from t2iguard.prompt.embedding import ADAPTER_FORMAT, MiniLMEncoder, get_encoder

TEXTS = ["a chicken breast on the grill", "a red bicycle leaning on a wall", "portrait of a woman, oil painting"]
QUERY = "encoder.layer.0.attention.self.query"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache directory: adapted graphs are built here, not in the user's cache."""
    monkeypatch.setenv("T2IGUARD_CACHE", str(tmp_path / "cache"))
    return tmp_path


def write_adapter(path: Path, tensors: dict[str, np.ndarray], **meta: str) -> Path:
    save_file(tensors, str(path), metadata={"format": ADAPTER_FORMAT, "rank": "2", "alpha": "4"} | meta)
    return path


def one_layer(b_scale: float, rank: int = 2, d_out: int = 384) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        f"{QUERY}.lora_A": rng.normal(0, 0.1, (rank, 384)).astype(np.float32),
        f"{QUERY}.lora_B": (b_scale * rng.normal(0, 0.1, (d_out, rank))).astype(np.float32),
    }


@pytest.fixture
def finetune(monkeypatch: pytest.MonkeyPatch) -> Any:
    """training/prompt_classifier/finetune_encoder.py, imported as the script runs."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "training" / "prompt_classifier"))
    return importlib.import_module("finetune_encoder")


def test_training_model_and_merged_runtime_graph_agree(cache: Path, finetune: Any, capsys: Any) -> None:
    """``export`` then ``check``: the PyTorch MiniLM rebuilt from the runtime's own weights, with a
    random rank-4 adapter on every linear layer, matches the ONNX graph with that adapter merged."""
    finetune.export_weights(cache / "w")
    finetune.check(argparse.Namespace(weights=cache / "w" / "bert.safetensors", rank=4, alpha=8.0, adapter=None))
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["max_abs_diff_torch_vs_onnx"] < 1e-3
    assert report["max_abs_change_vs_base"] > 0.05  # the adapter did change the embeddings


def test_a_zero_update_leaves_the_embeddings_unchanged_and_a_real_one_moves_them(cache: Path) -> None:
    base = MiniLMEncoder(threads=1).encode(TEXTS)
    zero = MiniLMEncoder(threads=1, adapter=write_adapter(cache / "zero.safetensors", one_layer(0.0)))
    moved = MiniLMEncoder(threads=1, adapter=write_adapter(cache / "moved.safetensors", one_layer(5.0)))
    assert np.abs(zero.encode(TEXTS) - base).max() < 1e-4
    assert np.abs(moved.encode(TEXTS) - base).max() > 1e-3
    assert zero.name != moved.name and "+lora-" in moved.name  # training caches embeddings by name
    assert str(moved.model_path).startswith(str(cache / "cache"))


@pytest.mark.parametrize(
    ("tensors", "meta", "message"),
    [
        ({f"{QUERY}.weight": np.zeros((384, 384), np.float32)}, {}, "not a LoRA adapter"),
        ({f"{QUERY}.lora_A": np.zeros((2, 384), np.float32)}, {}, "needs both lora_A and lora_B"),
        (
            {f"encoder.layer.9.output.x.{p}": np.zeros((2, 2), np.float32) for p in ("lora_A", "lora_B")},
            {},
            "not a linear layer",
        ),
        (one_layer(1.0, d_out=100), {}, "update is"),
        (one_layer(1.0), {"format": "peft"}, "unknown adapter format"),
        (one_layer(1.0), {"rank": "0"}, "non-zero 'rank'"),
    ],
)
def test_bad_adapters_are_configuration_errors(
    cache: Path, tensors: dict[str, np.ndarray], meta: dict[str, str], message: str
) -> None:
    path = write_adapter(cache / "bad.safetensors", tensors, **meta)
    with pytest.raises(ConfigurationError, match=message):
        MiniLMEncoder(threads=1, adapter=path)


def test_unreadable_or_missing_adapter(cache: Path) -> None:
    (cache / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigurationError, match="cannot read encoder adapter"):
        MiniLMEncoder(threads=1, adapter=cache / "junk.safetensors")
    with pytest.raises(ConfigurationError, match="adapter not found"):
        MiniLMEncoder(threads=1, adapter=cache / "absent.safetensors")


def head_on_adapter(directory: Path, adapter: Path, sha256: str | None = None) -> Path:
    directory.mkdir()
    shutil.copy(HEAD_DIR / "head.safetensors", directory / "head.safetensors")
    meta = json.loads((HEAD_DIR / "head.json").read_text())
    digest = sha256 or hashlib.sha256(adapter.read_bytes()).hexdigest()
    meta["encoder"]["adapter"] = {"path": f"../{adapter.name}", "sha256": digest}
    (directory / "head.json").write_text(json.dumps(meta))
    return directory


def test_a_head_reads_through_the_adapter_it_names(cache: Path) -> None:
    adapter = write_adapter(cache / "a.safetensors", one_layer(5.0))
    models = ModelCache()
    clf = load_classifier(models, head_on_adapter(cache / "head", adapter))
    assert isinstance(clf.encoder, MiniLMEncoder) and clf.encoder.adapter == adapter.resolve()
    plain = load_classifier(models)
    assert plain.encoder is not clf.encoder
    assert not np.allclose(clf.predict(TEXTS), plain.predict(TEXTS), atol=1e-4)
    # the same adapter file, however its path is spelled, is one encoder (one pass for two heads)
    spelled = cache / "head" / ".." / "a.safetensors"
    assert get_encoder(models, "minilm", max_length=128, threads=None, adapter=spelled) is clf.encoder


def test_a_head_refuses_an_adapter_that_is_not_the_one_it_was_trained_on(cache: Path) -> None:
    adapter = write_adapter(cache / "a.safetensors", one_layer(5.0))
    head = head_on_adapter(cache / "head", adapter, sha256="0" * 64)
    with pytest.raises(ConfigurationError, match="the head was trained on 000000000000"):
        load_classifier(ModelCache(), head)
    meta = json.loads((head / "head.json").read_text())
    meta["encoder"]["adapter"] = "a.safetensors"
    (head / "head.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigurationError, match="needs 'path' and 'sha256'"):
        load_classifier(ModelCache(), head)
