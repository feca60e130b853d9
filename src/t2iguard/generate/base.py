"""The generator interface: any text-to-image backend behind one small protocol.

Backends (diffusers checkpoints, HTTP endpoints, the bundled tiny model) implement
:class:`Generator`. The pipeline passes :class:`SafetyGuidance` when it regenerates an image that
an output check flagged, so that a backend that supports safety-guided sampling (Safe Latent
Diffusion, Schramowski et al., CVPR 2023; classifier guidance) can steer away from the harm
instead of the stack refusing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from t2iguard.core.types import Category

if TYPE_CHECKING:
    from PIL import Image

    from t2iguard.core.inputs import ImageItem

GUIDANCE_STRENGTHS = ("weak", "medium", "strong", "max")
"""Safety-guidance presets, named after SLD's WEAK/MEDIUM/STRONG/MAX configurations."""


@dataclass(frozen=True)
class SafetyGuidance:
    """Ask the generator to steer away from ``categories`` (and the ``concepts`` that describe
    them) at a preset ``strength``."""

    categories: tuple[Category, ...]
    strength: str = "medium"
    concepts: tuple[str, ...] = ()
    attempt: int = 0

    def __post_init__(self) -> None:
        if self.strength not in GUIDANCE_STRENGTHS:
            raise ValueError(f"unknown guidance strength {self.strength!r}; one of {GUIDANCE_STRENGTHS}")


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate. ``image`` (+ ``mask``) make it an edit (img2img / inpainting)."""

    prompt: str
    negative_prompt: str | None = None
    n: int = 1
    width: int = 512
    height: int = 512
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    image: ImageItem | None = None
    mask: ImageItem | None = None
    strength: float | None = None
    safety: SafetyGuidance | None = None
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_edit(self) -> bool:
        return self.image is not None

    def with_changes(self, **changes: Any) -> GenerationRequest:
        return replace(self, **changes)


@dataclass
class GenerationResult:
    """Images produced by a backend, with the seed actually used and backend metadata."""

    images: list[Image.Image]
    seed: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Generator(Protocol):
    """A text-to-image backend."""

    name: str

    def generate(self, request: GenerationRequest) -> GenerationResult: ...
