"""SDD: Safe self-Distillation Diffusion (Kim, Jung, Kim, Choi, Shin & Lee, *Towards Safe
Self-Distillation of Internet-Scale Text-to-Image Diffusion Models*, ICML 2023 workshop /
arXiv:2307.05977).

Self-distil the model so that its prediction conditioned on a concept to remove, c_s, matches the
*unconditional* prediction of an exponential-moving-average teacher θ*:

    L = ‖ ε_θ(x_t, c_s, t) − sg(ε_θ*(x_t, ∅, t)) ‖²,      θ* ← m·θ* + (1 − m)·θ

x_t is drawn from the teacher with the prompt listing every concept to remove (the reference's
"composite" prompt), and the concepts are cycled one per step, so several are removed at once.
Only the cross-attention layers train (the paper's default); the saved model is the EMA teacher,
as in the reference code. AdamW (weight decay 1e-4), gradient clipping 1.0, EMA decay 0.999.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from t2iguard.erase.sampling import ddim_scheduler, sample_until, unet_out
from t2iguard.erase.trainer import GradientMethod

if TYPE_CHECKING:
    import torch

    from t2iguard.erase.components import DiffusionComponents
    from t2iguard.erase.config import ErasureConfig


class SDD(GradientMethod):
    name = "sdd"

    def __init__(self, components: DiffusionComponents, config: ErasureConfig) -> None:
        super().__init__(components, config)
        cfg = self.config
        self.teacher = self.frozen_copy(self.unet)
        self.teacher_params = dict(self.teacher.named_parameters())
        self.ddim = ddim_scheduler(components.scheduler, cfg.sample_steps)
        self.removal = components.encode_prompts(cfg.concepts).to(self.device, self.frozen_dtype)
        self.composite = components.encode_prompts([", ".join(cfg.concepts)]).to(self.device, self.frozen_dtype)
        self.uncond = components.encode_prompts([""]).to(self.device, self.frozen_dtype)
        # fp32 EMA of the trained parameters (the teacher's copies are refreshed from it)
        self.ema = {n: p.detach().clone().float() for n, p in self.params}

    def loss(self, step: int) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        cfg = self.config
        b, comp = cfg.batch_size, self.components
        k = step % len(cfg.concepts)
        c_s = self.removal[k : k + 1].expand(b, -1, -1)
        u = self.uncond.expand(b, -1, -1)
        index = self.randint(0, len(self.ddim.timesteps))
        noise = self.randn((b, comp.latent_channels, comp.latent_size, comp.latent_size)).to(self.frozen_dtype)
        x = sample_until(
            self.teacher, self.ddim, noise, self.composite.expand(b, -1, -1), u, cfg.sample_guidance, index
        )
        t = self.ddim.timesteps[index]
        with torch.no_grad():
            target = unet_out(self.teacher, x, t, u).float()
        pred = unet_out(self.unet, x, t, c_s)
        return F.mse_loss(pred.float(), target)

    def after_step(self, step: int) -> None:
        import torch

        m = self.config.ema_decay
        with torch.no_grad():
            for n, p in self.params:
                avg = self.ema[n]
                avg.mul_(m).add_(p.detach().float(), alpha=1.0 - m)
                self.teacher_params[n].copy_(avg.to(self.teacher_params[n].dtype))

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {f"ema.{n}": v for n, v in self.ema.items()}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        import torch

        with torch.no_grad():
            for n in self.ema:
                self.ema[n] = state[f"ema.{n}"].to(self.device, torch.float32)
                self.teacher_params[n].copy_(self.ema[n].to(self.teacher_params[n].dtype))

    def result(self) -> dict[str, torch.Tensor]:
        """The EMA teacher's weights, in the trained parameters' dtype."""
        return {n: self.ema[n].to(p.dtype).clone() for n, p in self.params}
