"""Concept erasure in the weights of diffusers SD-family models, behind one API.

Methods (one file each, citing its paper): ESD-x / ESD-u (:mod:`~t2iguard.erase.esd`), UCE
(:mod:`~t2iguard.erase.uce`), SDD (:mod:`~t2iguard.erase.sdd`) and SafeGen-style self-attention
editing (:mod:`~t2iguard.erase.safegen`); one configuration (:class:`ErasureConfig`), one training
loop for the gradient methods (:mod:`~t2iguard.erase.trainer`), one output format (changed
weights only + a JSON record, :mod:`~t2iguard.erase.record`)::

    from t2iguard.erase import ErasureConfig, erase, load_components

    comps = load_components("path/to/diffusers-folder")          # or "tiny"
    result = erase(comps, ErasureConfig(method="esd-x", concepts=["knife"]), "out/knife-esd-x")
    result.record["changed_parameters"]                           # what the method touched

Everything heavy (torch, diffusers) is imported lazily; the ``erase`` extra installs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from t2iguard.erase.config import METHODS, ErasureConfig

if TYPE_CHECKING:
    from t2iguard.erase.api import ErasureResult, erase
    from t2iguard.erase.components import DiffusionComponents, load_components
    from t2iguard.erase.record import apply_erasure, load_erased

__all__ = [
    "METHODS",
    "DiffusionComponents",
    "ErasureConfig",
    "ErasureResult",
    "apply_erasure",
    "erase",
    "load_components",
    "load_erased",
]

_LAZY = {
    "erase": "t2iguard.erase.api",
    "ErasureResult": "t2iguard.erase.api",
    "DiffusionComponents": "t2iguard.erase.components",
    "load_components": "t2iguard.erase.components",
    "apply_erasure": "t2iguard.erase.record",
    "load_erased": "t2iguard.erase.record",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 't2iguard.erase' has no attribute {name!r}")
