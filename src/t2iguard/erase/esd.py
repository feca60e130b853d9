"""ESD: Erased Stable Diffusion (Gandikota, Materzyńska, Fiotto-Kaufman & Bau, *Erasing Concepts
from Diffusion Models*, ICCV 2023).

Fine-tune the UNet so that its prediction conditioned on the concept c equals the frozen
original's prediction with *negative* guidance away from c:

    ε_θ(x_t, c, t)  ←  ε*(x_t, ∅, t) − η · (ε*(x_t, c, t) − ε*(x_t, ∅, t))

where ε* is the frozen original model and x_t is drawn from the original model itself (DDIM with
classifier-free guidance on the concept prompt, stopped at a random step t). ESD-x trains the
cross-attention layers only (``attn2``: erasure tied to the prompt words, little interference);
ESD-u trains everything else (the non-cross-attention layers: prompt-independent, more global
erasure, used for nudity). Several concepts are erased by cycling through them, one per step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from t2iguard.erase.sampling import ddim_scheduler, sample_until, unet_out
from t2iguard.erase.trainer import GradientMethod

if TYPE_CHECKING:
    import torch

    from t2iguard.erase.components import DiffusionComponents
    from t2iguard.erase.config import ErasureConfig


class ESD(GradientMethod):
    """ESD-x (``parameters="xattn"``) or ESD-u (``parameters="noxattn"``)."""

    name = "esd"

    def __init__(self, components: DiffusionComponents, config: ErasureConfig) -> None:
        super().__init__(components, config)
        cfg = self.config
        self.original = self.frozen_copy(self.unet)
        self.ddim = ddim_scheduler(components.scheduler, cfg.sample_steps)
        self.cond = components.encode_prompts(cfg.concepts).to(self.device, self.frozen_dtype)
        self.uncond = components.encode_prompts([""]).to(self.device, self.frozen_dtype)

    def training_state(self, concept: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_t, t, c, ∅): x_t drawn from the original model with the concept prompt."""
        cfg = self.config
        b, comp = cfg.batch_size, self.components
        c = self.cond[concept : concept + 1].expand(b, -1, -1)
        u = self.uncond.expand(b, -1, -1)
        index = self.randint(0, len(self.ddim.timesteps))
        noise = self.randn((b, comp.latent_channels, comp.latent_size, comp.latent_size)).to(self.frozen_dtype)
        x = sample_until(self.original, self.ddim, noise, c, u, cfg.sample_guidance, index)
        return x, self.ddim.timesteps[index], c, u

    def loss(self, step: int) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        x, t, c, u = self.training_state(step % len(self.config.concepts))
        with torch.no_grad():
            e_c = unet_out(self.original, x, t, c).float()
            e_u = unet_out(self.original, x, t, u).float()
            target = e_u - self.config.negative_guidance * (e_c - e_u)
        pred = unet_out(self.unet, x, t, c)
        return F.mse_loss(pred.float(), target)
