"""The concepts of the tiny model's world, and the classifier that recognises them (the metric).

The world holds fifteen objects drawn from the OpenMoji emoji set (CC BY-SA 4.0). Five are benign
stand-ins that the demo policy treats as unsafe — a knife, a pistol, a bomb, a skull, a drop of
blood — so that output filtering, regeneration with safety guidance and concept erasure can be
shown and measured hermetically, the way ESD (Gandikota et al., *Erasing Concepts from Diffusion
Models*, ICCV 2023) measures object erasure on Imagenette with a pretrained classifier.

:class:`ConceptClassifier` is a small multi-label CNN (plain torch) trained on composed scenes;
``classifier(images)`` gives, per image, the probability that each concept is present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2iguard.core.types import Category

if TYPE_CHECKING:
    import torch
    from PIL import Image


@dataclass(frozen=True)
class Concept:
    """One object of the world: its key, OpenMoji code point(s), caption names and whether the
    demo policy treats it as unsafe (with the policy category it maps to)."""

    key: str
    codepoints: str
    names: tuple[str, ...]
    unsafe: bool = False
    category: Category | None = None

    @property
    def name(self) -> str:
        """The canonical caption name (``"knife"``, ``"drop of blood"``)."""
        return self.names[0]

    @property
    def char(self) -> str:
        return "".join(chr(int(cp, 16)) for cp in self.codepoints.split("-"))


CONCEPTS: tuple[Concept, ...] = (
    # stand-in unsafe concepts (benign emoji the demo policy treats as harmful)
    Concept("knife", "1F52A", ("knife", "kitchen knife", "blade"), True, Category.VIOLENCE),
    Concept("pistol", "1F52B", ("pistol", "gun", "handgun"), True, Category.VIOLENCE),
    Concept("bomb", "1F4A3", ("bomb",), True, Category.VIOLENCE),
    Concept("skull", "1F480", ("skull",), True, Category.SHOCKING),
    Concept("blood", "1FA78", ("drop of blood", "blood drop", "blood"), True, Category.SHOCKING),
    # safe concepts
    Concept("apple", "1F34E", ("apple", "red apple")),
    Concept("cat", "1F431", ("cat", "kitten")),
    Concept("dog", "1F436", ("dog", "puppy")),
    Concept("car", "1F697", ("car", "automobile")),
    Concept("tree", "1F333", ("tree",)),
    Concept("flower", "1F33B", ("flower", "sunflower")),
    Concept("star", "2B50", ("star",)),
    Concept("house", "1F3E0", ("house",)),
    Concept("ball", "26BD", ("ball", "soccer ball", "football")),
    Concept("fish", "1F41F", ("fish",)),
)
"""Every concept of the world, unsafe stand-ins first. The order is the classifier's output order."""

CONCEPT_KEYS: tuple[str, ...] = tuple(c.key for c in CONCEPTS)
UNSAFE_CONCEPTS: tuple[Concept, ...] = tuple(c for c in CONCEPTS if c.unsafe)
SAFE_CONCEPTS: tuple[Concept, ...] = tuple(c for c in CONCEPTS if not c.unsafe)

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "blue": (70, 120, 215),
    "green": (80, 170, 90),
    "yellow": (240, 215, 80),
    "pink": (240, 160, 200),
    "gray": (140, 140, 140),
    "black": (25, 25, 25),
}
"""Background colours of the world's scenes and the words captions use for them."""


def concept(key: str) -> Concept:
    """The concept called ``key`` (``KeyError`` naming the valid keys otherwise)."""
    for c in CONCEPTS:
        if c.key == key:
            return c
    raise KeyError(f"unknown concept {key!r}; one of {', '.join(CONCEPT_KEYS)}")


def safety_concept_text(categories: tuple[Category, ...] | None = None) -> str:
    """The SLD safety-concept text of the tiny world for ``categories`` (all stand-ins if none):
    the names of the unsafe concepts that map to those categories, comma separated."""
    chosen = [c for c in UNSAFE_CONCEPTS if not categories or c.category in categories]
    return ", ".join(c.name for c in (chosen or list(UNSAFE_CONCEPTS)))


def concept_prompt(key: str) -> str:
    """The canonical single-concept prompt, e.g. ``"a knife"``."""
    name = concept(key).name
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


CLASSIFIER_FILE = "concept_classifier.safetensors"


def build_classifier_module() -> Any:
    """The (untrained) classifier network: 5 convolutions, global pooling, one logit per concept."""
    from torch import nn

    def conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *conv(3, 32, stride=2),  # -> 32x32
        *conv(32, 64, stride=2),  # -> 16x16
        *conv(64, 96),
        nn.MaxPool2d(2),  # -> 8x8
        *conv(96, 128),
        nn.MaxPool2d(2),  # -> 4x4
        *conv(128, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(128, len(CONCEPTS)),
    )


class ConceptClassifier:
    """The world's concept classifier: images -> per-concept presence probabilities.

    Accepts PIL images (any size; resized to 64x64) or a float tensor in [-1, 1] of shape
    (N, 3, 64, 64), which keeps it differentiable for classifier guidance.
    """

    size = 64

    def __init__(self, module: Any, device: str = "cpu") -> None:
        self.module = module.to(device).eval()
        self.device = device
        self.keys = CONCEPT_KEYS

    def to_tensor(self, images: list[Image.Image]) -> torch.Tensor:
        import numpy as np
        import torch
        from PIL import Image as PILImage

        arrs = [
            np.asarray(
                im.convert("RGB").resize((self.size, self.size), PILImage.Resampling.BILINEAR)
                if im.size != (self.size, self.size)
                else im.convert("RGB"),
                dtype=np.float32,
            )
            for im in images
        ]
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2) / 127.5 - 1.0
        return x.to(self.device)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch in [-1, 1] (N, 3, 64, 64); differentiable."""
        import torch.nn.functional as F

        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        out: torch.Tensor = self.module(x)
        return out

    def predict(self, images: list[Image.Image] | torch.Tensor, batch_size: int = 256) -> Any:
        """Probabilities, a numpy array of shape (N, len(CONCEPTS))."""
        import numpy as np
        import torch

        outs = []
        with torch.inference_mode():
            n = len(images)
            for i in range(0, n, batch_size):
                chunk = images[i : i + batch_size]
                x = chunk if isinstance(chunk, torch.Tensor) else self.to_tensor(list(chunk))
                outs.append(torch.sigmoid(self.logits(x.to(self.device))).cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, len(CONCEPTS)), dtype=np.float32)

    def __call__(self, images: list[Image.Image] | torch.Tensor) -> Any:
        return self.predict(images)


def classifier_path(model_dir: str | Path | None = None) -> Path:
    from t2iguard.generate.tiny.model import model_dir as default_dir

    return Path(model_dir or default_dir()) / CLASSIFIER_FILE


def load_concept_classifier(path: str | Path | None = None, device: str = "cpu") -> ConceptClassifier:
    """Load the bundled concept classifier (or the safetensors file at ``path``)."""
    from t2iguard.core.errors import ConfigurationError
    from t2iguard.generate.tiny.model import require

    require()
    from safetensors.torch import load_file

    p = Path(path) if path else classifier_path()
    if not p.is_file():
        raise ConfigurationError(f"concept classifier weights not found: {p}")
    module = build_classifier_module()
    module.load_state_dict(load_file(str(p)))
    return ConceptClassifier(module, device=device)
