"""Censoring image regions (blur, pixelate, fill) so an operator can return a redacted image
instead of refusing. Used by image stages whose policy action is ``transform``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from PIL import Image, ImageDraw, ImageFilter

CensorMode = Literal["blur", "pixelate", "fill"]


def censor(
    image: Image.Image,
    boxes: Sequence[Sequence[int]],
    mode: CensorMode = "pixelate",
    *,
    padding: float = 0.1,
    strength: int = 16,
) -> Image.Image:
    """A copy of ``image`` with each ``(x, y, w, h)`` box (grown by ``padding`` of its size on
    each side) blurred (Gaussian, radius = ``strength``), pixelated (``strength``-pixel cells)
    or filled black."""
    out = image.convert("RGB").copy()
    for box in boxes:
        x, y, w, h = (int(v) for v in box[:4])
        px, py = int(w * padding), int(h * padding)
        x0, y0 = max(0, x - px), max(0, y - py)
        x1, y1 = min(out.width, x + w + px), min(out.height, y + h + py)
        if x1 <= x0 or y1 <= y0:
            continue
        region = out.crop((x0, y0, x1, y1))
        if mode == "fill":
            ImageDraw.Draw(out).rectangle([x0, y0, x1 - 1, y1 - 1], fill=(0, 0, 0))
            continue
        if mode == "blur":
            # blur twice: a single Gaussian pass at this radius still shows outlines
            region = region.filter(ImageFilter.GaussianBlur(strength)).filter(ImageFilter.GaussianBlur(strength))
        else:
            cell = max(2, strength)
            small = region.resize(
                (max(1, region.width // cell), max(1, region.height // cell)), Image.Resampling.BILINEAR
            )
            region = small.resize(region.size, Image.Resampling.NEAREST)
        out.paste(region, (x0, y0))
    return out
