"""Deterministic sets of real, unmarked images for the image benchmarks (no downloads).

Public-domain photos from ``skimage.data`` with seeded crops, flips, rescales and colour jitter;
scenes from the procedural generator; and smooth/noisy synthetic textures. The same seed gives
the same images on every machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "immunohistochemistry",
    "coins", "moon", "page", "text", "clock", "horse", "grass", "gravel", "brick", "cell", "retina",
    "colorwheel", "logo", "motorcycle_left", "kidney",
)  # fmt: skip


def _photos() -> list[Image.Image]:
    from skimage import data

    out = []
    for name in PHOTOS:
        try:
            arr = getattr(data, name)()
        except Exception:  # noqa: BLE001 - some samples need optional downloads (pooch): skip them
            continue
        arr = np.asarray(arr)
        if arr.ndim == 3 and arr.shape[-1] == 3 and arr.dtype == np.uint8:
            img = Image.fromarray(arr)
        elif arr.ndim == 3 and arr.shape[-1] == 4:
            img = Image.fromarray(arr.astype(np.uint8)).convert("RGB")
        elif arr.ndim == 2:
            a = arr.astype(np.float64)
            a = (a - a.min()) / max(1e-9, a.max() - a.min()) * 255
            img = Image.fromarray(a.astype(np.uint8)).convert("RGB")
        else:
            continue
        out.append(img)
    return out


def augment(img: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    w, h = img.size
    scale = rng.uniform(0.5, 1.0)
    cw, ch = max(32, int(w * scale)), max(32, int(h * scale))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = img.crop((x, y, x + cw, y + ch)).resize((size, size), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.6, 1.4))
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2))
    if rng.random() < 0.2:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    return out


def photo_set(n: int, size: int = 512, seed: int = 0) -> list[Image.Image]:
    """``n`` augmented photos (the first ones are the plain samples, resized)."""
    rng = np.random.default_rng(seed)
    base = _photos()
    out = [b.resize((size, size), Image.Resampling.BICUBIC) for b in base[:n]]
    while len(out) < n:
        out.append(augment(base[int(rng.integers(len(base)))], rng, size))
    return out


def unmarked(n: int = 1000, size: int = 512, seed: int = 1) -> Iterator[tuple[str, Image.Image]]:
    """``n`` unmarked images: 60 % photos, 30 % procedural scenes, 10 % synthetic textures."""
    from t2iguard.generate.base import GenerationRequest
    from t2iguard.generate.procedural import ProceduralGenerator

    rng = np.random.default_rng(seed)
    base = _photos()
    gen = ProceduralGenerator()
    n_photo, n_proc = int(n * 0.6), int(n * 0.3)
    for i in range(n):
        if i < n_photo:
            yield "photo", augment(base[int(rng.integers(len(base)))], rng, size)
        elif i < n_photo + n_proc:
            req = GenerationRequest(prompt=f"scene {i}", width=size, height=size, seed=int(rng.integers(2**31)))
            yield "procedural", gen.generate(req).images[0]
        else:
            kind = i % 3
            if kind == 0:
                arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            elif kind == 1:
                g = np.linspace(0, 255, size)
                gx, gy = np.meshgrid(g, g[::-1])
                arr = np.stack([gx, gy, np.full((size, size), rng.uniform(0, 255))], -1)
            else:
                arr = np.full((size, size, 3), rng.integers(0, 256, 3))
            yield "synthetic", Image.fromarray(np.asarray(arr, dtype=np.uint8))
