"""Build a generator from a backend spec string, as the CLI and the gateway take it.

``"tiny"``, ``"procedural"``, ``"diffusers:/path/to/checkpoint"``, ``"http:https://host/v1"`` ...
Backends are looked up in :data:`BACKENDS` (import paths, resolved on first use) so that optional
dependencies load only when a backend is chosen. A backend class takes the text after the colon
(if any) as its first argument.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from t2iguard.core.errors import ConfigurationError
from t2iguard.generate.base import Generator

BACKENDS: Mapping[str, str] = MappingProxyType(
    {
        "procedural": "t2iguard.generate.procedural:ProceduralGenerator",
        "tiny": "t2iguard.generate.tiny.generator:TinyGenerator",
        "diffusers": "t2iguard.generate.diffusers_backend:DiffusersGenerator",
        "http": "t2iguard.generate.http_backend:HTTPGenerator",
    }
)


def make_generator(spec: str, backends: Mapping[str, str] | None = None, **kwargs: Any) -> Generator:
    """``"name"`` or ``"name:argument"`` -> a generator instance."""
    table = BACKENDS if backends is None else backends
    name, sep, arg = spec.partition(":")
    if name not in table:
        raise ConfigurationError(f"unknown generator backend {name!r}; available: {', '.join(sorted(table))}")
    module_name, _, attr = table[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"generator backend {name!r} cannot be loaded: {exc}") from exc
    gen = cls(arg, **kwargs) if sep else cls(**kwargs)
    if not isinstance(gen, Generator):
        raise ConfigurationError(f"backend {name!r} does not implement the Generator protocol")
    return gen
