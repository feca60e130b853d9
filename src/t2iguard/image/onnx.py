"""ONNX Runtime sessions for the packaged image models, created once per model cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from t2iguard.core.errors import ConfigurationError, MissingDependencyError
from t2iguard.core.stage import ModelCache


def package_file(package: str, filename: str, *, extra: str, purpose: str) -> Path:
    """Path of a data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(package, extra, purpose)
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise ConfigurationError(f"package '{package}' is installed but has no {filename}")


def session(models: ModelCache, path: str | Path, *, threads: int | None = None) -> Any:
    """A CPU (or CUDA, when available) ONNX Runtime session for ``path``, shared per cache."""
    p = Path(path)
    if not p.is_file():
        raise ConfigurationError(f"model file not found: {p}")

    def build() -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            return ort.InferenceSession(str(p), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConfigurationError(f"cannot load ONNX model {p}: {exc}") from exc

    return models.get(("onnx", str(p.resolve()), threads), build)
