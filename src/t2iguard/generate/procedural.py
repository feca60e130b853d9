"""A dependency-free generator that renders simple deterministic scenes.

Not a model: it draws shapes whose layout and colours are seeded by the prompt and seed. It exists
so that the whole stack (pipeline, gateway, load tests) can run where no diffusion model is
available, and as a fast backend for measuring the stack's own overhead.
"""

from __future__ import annotations

import hashlib
import random

from PIL import Image, ImageDraw

from t2iguard.generate.base import GenerationRequest, GenerationResult


class ProceduralGenerator:
    """Deterministic shapes: same prompt + seed -> same image."""

    name = "procedural"

    def __init__(self, max_side: int = 1024) -> None:
        self.max_side = max_side

    def generate(self, request: GenerationRequest) -> GenerationResult:
        if not 1 <= request.n <= 16:
            raise ValueError(f"n must be between 1 and 16, got {request.n}")
        w, h = request.width, request.height
        if not (8 <= w <= self.max_side and 8 <= h <= self.max_side):
            raise ValueError(f"size {w}x{h} is outside 8..{self.max_side} pixels")
        seed = (
            request.seed
            if request.seed is not None
            else int(hashlib.sha256(request.prompt.encode()).hexdigest()[:8], 16)
        )
        images = []
        for i in range(request.n):
            rng = random.Random(f"{request.prompt}\x00{seed}\x00{i}")
            bg = tuple(rng.randrange(40, 220) for _ in range(3))
            img = Image.new("RGB", (w, h), bg)
            draw = ImageDraw.Draw(img)
            for _ in range(rng.randrange(2, 6)):
                x0, y0 = rng.randrange(w), rng.randrange(h)
                x1, y1 = x0 + rng.randrange(w // 8, w // 2 + 1), y0 + rng.randrange(h // 8, h // 2 + 1)
                color = tuple(rng.randrange(256) for _ in range(3))
                if rng.random() < 0.5:
                    draw.ellipse([x0, y0, x1, y1], fill=color)
                else:
                    draw.rectangle([x0, y0, x1, y1], fill=color)
            images.append(img)
        return GenerationResult(images=images, seed=seed, metadata={"backend": self.name})
