"""The trained weights of the tiny text-to-image model (a diffusers pipeline folder) and of the
concept classifier, committed as safetensors; ``README.md`` here is the model card."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from t2iguard.core.errors import MissingDependencyError


def model_dir() -> Path:
    """The folder holding the bundled pipeline (``model_index.json``) and the classifier."""
    return Path(__file__).resolve().parent


def require(purpose: str = "the tiny text-to-image model") -> None:
    """Raise :class:`MissingDependencyError` unless torch, diffusers and transformers import."""
    for package in ("torch", "diffusers", "transformers", "safetensors"):
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(package, "diffusion", purpose)
