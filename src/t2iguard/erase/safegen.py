"""SafeGen-style text-agnostic erasure (Li, Ye, Li, Xu & Chen, *SafeGen: Mitigating Sexually
Explicit Content Generation in Text-to-Image Models*, ACM CCS 2024).

SafeGen edits only the UNet's **self-attention** layers (``attn1``), with the empty prompt, so the
change does not depend on the words used: an adversarial or paraphrased prompt that still makes
the model *draw* the concept meets the edited vision layers. It trains on image triplets
(unsafe, censored, benign): for the unsafe image the model learns to denoise towards the censored
(mosaicked) version, for the benign image it keeps denoising as before. With noise ε added to the
unsafe latent z_u (and z_m the censored latent), the reference implementation's targets are

    L = w_m ‖ε_θ(z_u,t, ∅, t) − (ε + z_u − z_m)‖² + w_p ‖ε_θ(z_b,t, ∅, t) − ε_b‖²

with w_m = 0.1, w_p = 0.9 (v-prediction models use the corresponding velocities). SafeGen's
triplets are nude photos, their mosaicked versions and benign photos; on t2iguard's tiny emoji
world, the censored image is the scene with the concept's region mosaicked (:func:`mosaic`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from t2iguard.core.errors import ConfigurationError, InputError
from t2iguard.erase.sampling import unet_out
from t2iguard.erase.trainer import GradientMethod

if TYPE_CHECKING:
    import torch

    from t2iguard.erase.components import DiffusionComponents
    from t2iguard.erase.config import ErasureConfig

Box = tuple[int, int, int, int]
"""x0, y0, x1, y1 in pixels (x1, y1 exclusive)."""


@dataclass
class Triplets:
    """A batch of (unsafe, censored, benign) images, each ``(N, 3, H, W)`` in [-1, 1]."""

    unsafe: torch.Tensor
    censored: torch.Tensor
    benign: torch.Tensor


class TripletSource(Protocol):
    """Where SafeGen's training triplets come from."""

    def sample(self, n: int, generator: torch.Generator) -> Triplets: ...


def mosaic(images: torch.Tensor, boxes: list[list[Box]], block: int = 8) -> torch.Tensor:
    """Pixelate the ``boxes`` of each image with ``block``-pixel cells (the usual censoring mosaic:
    each cell becomes its mean colour); the rest of the image is unchanged."""
    import torch.nn.functional as F

    out = images.clone()
    for i, img_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in img_boxes:
            h, w = images.shape[-2:]
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
            if x1 <= x0 or y1 <= y0:
                continue
            region = images[i : i + 1, :, y0:y1, x0:x1]
            cells = F.avg_pool2d(region, kernel_size=block, stride=block, ceil_mode=True)
            out[i, :, y0:y1, x0:x1] = F.interpolate(cells, scale_factor=block, mode="nearest")[
                0, :, : y1 - y0, : x1 - x0
            ]
    return out


class TensorTriplets:
    """Triplets held in memory; ``sample`` draws random rows."""

    def __init__(self, unsafe: torch.Tensor, censored: torch.Tensor, benign: torch.Tensor) -> None:
        if not (unsafe.shape == censored.shape and unsafe.shape[1:] == benign.shape[1:]):
            raise ValueError("unsafe and censored images must have the same shape, benign the same image size")
        if len(unsafe) == 0 or len(benign) == 0:
            raise ValueError("SafeGen needs at least one unsafe/censored pair and one benign image")
        self.unsafe, self.censored, self.benign = unsafe, censored, benign

    def sample(self, n: int, generator: torch.Generator) -> Triplets:
        import torch

        i = torch.randint(0, len(self.unsafe), (n,), generator=generator)
        j = torch.randint(0, len(self.benign), (n,), generator=generator)
        return Triplets(self.unsafe[i], self.censored[i], self.benign[j])


def folder_triplets(csv_path: str | Path, size: int) -> TensorTriplets:
    """Triplets listed in a CSV with columns ``unsafe,censored,benign`` (image paths, relative to
    the CSV's folder), resized to ``size`` × ``size``."""
    import numpy as np
    import torch
    from PIL import Image

    from t2iguard.core.inputs import load_image

    path = Path(csv_path)
    try:
        rows = list(csv.DictReader(path.read_text().splitlines()))
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the triplet list: {exc}") from exc
    if not rows or not {"unsafe", "censored", "benign"} <= set(rows[0]):
        raise ConfigurationError(f"{path}: a triplet list is a CSV with columns unsafe,censored,benign")

    def load(p: str) -> torch.Tensor:
        try:
            img = load_image(path.parent / p).image.resize((size, size), Image.Resampling.BICUBIC)
        except InputError as exc:
            raise ConfigurationError(f"{path}: {exc}") from exc
        return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0

    stack = {k: torch.stack([load(r[k]) for r in rows]) for k in ("unsafe", "censored", "benign")}
    return TensorTriplets(stack["unsafe"], stack["censored"], stack["benign"])


class SafeGen(GradientMethod):
    """Self-attention-only, text-agnostic editing towards mosaicked images."""

    name = "safegen"

    def __init__(
        self, components: DiffusionComponents, config: ErasureConfig, triplets: TripletSource | None = None
    ) -> None:
        if triplets is None:
            raise ConfigurationError("SafeGen trains on (unsafe, censored, benign) image triplets: give a source")
        super().__init__(components, config)
        from diffusers import DDPMScheduler

        self.triplets = triplets
        self.noise_scheduler = DDPMScheduler.from_config(components.scheduler.config)
        self.prediction = str(self.noise_scheduler.config.get("prediction_type", "epsilon"))
        if self.prediction not in ("epsilon", "v_prediction"):
            raise ConfigurationError(f"SafeGen supports epsilon and v-prediction models, not {self.prediction}")
        self.uncond = components.encode_prompts([""]).to(self.device, self.frozen_dtype)

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad():
            return self.components.encode_images(images.to(self.device, self.frozen_dtype)).float()

    def loss(self, step: int) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        cfg = self.config
        b = cfg.batch_size
        batch = self.triplets.sample(b, self.generator)
        z_u, z_m, z_b = self._encode(batch.unsafe), self._encode(batch.censored), self._encode(batch.benign)
        n_train = int(self.noise_scheduler.config.num_train_timesteps)
        t = torch.randint(0, n_train, (b,), generator=self.generator).to(self.device)
        noise, noise_b = self.randn(tuple(z_u.shape)), self.randn(tuple(z_b.shape))
        sched = self.noise_scheduler
        noisy_u = sched.add_noise(z_u, noise, t)
        noisy_b = sched.add_noise(z_b, noise_b, t)
        if self.prediction == "epsilon":
            target_m = noise + (z_u - z_m)
            target_b = noise_b
        else:
            target_m = sched.get_velocity(z_u - z_m, noise, t)
            target_b = sched.get_velocity(z_b, noise_b, t)
        u = self.uncond.expand(b, -1, -1)
        pred_m = unet_out(self.unet, noisy_u, t, u).float()
        pred_b = unet_out(self.unet, noisy_b, t, u).float()
        return cfg.mosaic_weight * F.mse_loss(pred_m, target_m) + cfg.preserve_weight * F.mse_loss(pred_b, target_b)


def tiny_world_triplets(concepts: list[str], n: int = 256, *, block: int = 8, seed: int = 0) -> TripletSource:
    """Triplets from the tiny model's emoji world (:func:`t2iguard.erase.world.world_triplets`)."""
    from t2iguard.erase.world import world_triplets

    return world_triplets(concepts, n=n, block=block, seed=seed)
