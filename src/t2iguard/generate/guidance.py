"""Safety-guided sampling for any diffusers Stable Diffusion pipeline (SD 1.x/2.x, SDXL, the tiny
model; text-to-image, img2img and inpainting).

Two guidances, both installed on a pipeline's UNet for the duration of one call, so that they plug
into the stock pipelines (which do classifier-free guidance inline and offer no hook on the noise
prediction) without copying them:

* :class:`SLDGuidance` — Safe Latent Diffusion (Schramowski et al., *Safe Latent Diffusion:
  Mitigating Inappropriate Degeneration in Diffusion Models*, CVPR 2023, Eqs. 3-8): a third noise
  estimate conditioned on a safety concept; where the prompt's estimate is close to it, the
  guidance is pushed away from the concept, with momentum, after a warm-up. The published
  WEAK/MEDIUM/STRONG/MAX hyper-parameters are in :data:`SLD_PRESETS`.
* :class:`ClassifierGuidance` — classifier guidance (Dhariwal & Nichol, *Diffusion Models Beat
  GANs on Image Synthesis*, NeurIPS 2021) with a differentiable harm classifier applied to the
  decoded estimate of the clean image x0 (the "forward universal guidance" of Bansal et al.,
  *Universal Guidance for Diffusion Models*, 2023): the noise estimate is shifted along the
  gradient of log p(not harmful | x0), which costs no backward pass through the UNet.

Use::

    with safety_guidance(pipe, sld=SLDGuidance.preset("strong", "violence, blood")):
        image = pipe("a knife on a table").images[0]

The wrapper sees the pipeline's classifier-free-guidance batch ``[uncond; cond]`` and returns
``[uncond; cond']`` such that the pipeline's own ``uncond + s * (cond' - uncond)`` equals the
guided estimate, so schedulers, callbacks and pipelines stay untouched.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

SLD_REFERENCE_STEPS = 50
"""SLD's presets were published for 50 sampling steps; warm-ups are scaled to the steps used."""


@dataclass(frozen=True)
class SLDConfig:
    """SLD hyper-parameters: ``guidance_scale`` s_S, ``threshold`` lambda, ``momentum_scale`` s_m,
    ``momentum_beta`` beta_m and ``warmup_steps`` delta (out of :data:`SLD_REFERENCE_STEPS`)."""

    warmup_steps: int
    guidance_scale: float
    threshold: float
    momentum_scale: float
    momentum_beta: float


SLD_PRESETS: dict[str, SLDConfig] = {
    # Schramowski et al. 2023, Sec. 5 / the reference implementation's SafetyConfig
    "weak": SLDConfig(warmup_steps=15, guidance_scale=20, threshold=0.0, momentum_scale=0.0, momentum_beta=0.0),
    "medium": SLDConfig(warmup_steps=10, guidance_scale=1000, threshold=0.01, momentum_scale=0.3, momentum_beta=0.4),
    "strong": SLDConfig(warmup_steps=7, guidance_scale=2000, threshold=0.025, momentum_scale=0.5, momentum_beta=0.7),
    "max": SLDConfig(warmup_steps=0, guidance_scale=5000, threshold=1.0, momentum_scale=0.5, momentum_beta=0.7),
}

DEFAULT_SLD_CONCEPT = (
    "an image showing hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, nudity, "
    "bodily fluids, blood, obscene gestures, illegal activity, drug use, theft, vandalism, weapons, child abuse, "
    "brutality, cruelty"
)
"""SLD's default safety concept (the I2P categories)."""


@dataclass
class SLDGuidance:
    """Safe Latent Diffusion guidance away from the text ``concept``."""

    concept: str
    config: SLDConfig = field(default_factory=lambda: SLD_PRESETS["medium"])
    preset_name: str | None = None

    @classmethod
    def preset(cls, name: str, concept: str = DEFAULT_SLD_CONCEPT) -> SLDGuidance:
        try:
            return cls(concept, SLD_PRESETS[name], name)
        except KeyError:
            raise ValueError(f"unknown SLD preset {name!r}; one of {', '.join(SLD_PRESETS)}") from None

    def warmup_for(self, total_steps: int) -> int:
        """The warm-up in steps for a run of ``total_steps`` (scaled from 50)."""
        return round(self.config.warmup_steps * total_steps / SLD_REFERENCE_STEPS)

    def describe(self) -> dict[str, Any]:
        return {"method": "sld", "preset": self.preset_name, "concept": self.concept, **self.config.__dict__}


def sld_combine(
    uncond: torch.Tensor,
    text: torch.Tensor,
    safety: torch.Tensor,
    momentum: torch.Tensor | None,
    cfg: SLDConfig,
    active: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SLD step: returns (the classifier-free guidance direction with the safety term
    subtracted when ``active``, the new momentum). Eqs. 3-8 of Schramowski et al. 2023."""
    guidance = text - uncond
    if momentum is None:
        momentum = torch.zeros_like(guidance)
    diff = text - safety
    scale = torch.clamp(diff.abs() * cfg.guidance_scale, max=1.0)  # Eq. 6
    scale = torch.where(diff >= cfg.threshold, torch.zeros_like(scale), scale)
    safety_term = (safety - uncond) * scale  # Eq. 4
    safety_term = safety_term + cfg.momentum_scale * momentum  # Eq. 7
    momentum = cfg.momentum_beta * momentum + (1 - cfg.momentum_beta) * safety_term  # Eq. 8
    if active:
        guidance = guidance - safety_term  # Eq. 3
    return guidance, momentum


@dataclass
class ClassifierGuidance:
    """Steer away from what ``harm`` scores as harmful.

    ``harm(images)`` takes decoded images in [-1, 1] (N, 3, H, W) and returns one harm logit per
    image (higher = more harmful); it must be differentiable. ``scale`` multiplies the gradient of
    log sigmoid(-logit) (the log-probability of "not harmful") with respect to x0.
    """

    harm: Callable[[torch.Tensor], torch.Tensor]
    scale: float = 50.0
    name: str = "classifier"

    def describe(self) -> dict[str, Any]:
        return {"method": "classifier", "classifier": self.name, "scale": self.scale}


class _GuidedUNet:
    """Replaces ``unet.forward`` for one pipeline call; see the module docstring."""

    def __init__(
        self,
        pipe: Any,
        sld: SLDGuidance | None,
        classifier: ClassifierGuidance | None,
        total_steps: int | None,
        safety_embeds: dict[str, torch.Tensor] | None,
    ) -> None:
        self.pipe = pipe
        self.unet = pipe.unet
        self.forward = pipe.unet.forward
        self.sld = sld
        self.classifier = classifier
        self.total_steps = total_steps
        self.safety_embeds = safety_embeds or {}
        self.momentum: torch.Tensor | None = None
        self.step = 0
        self.last_t: float | None = None
        self.stats: dict[str, Any] = {"steps": 0, "sld_active_steps": 0, "classifier_steps": 0}

    def _safety_inputs(self, batch: int, kwargs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        emb = self.safety_embeds["prompt_embeds"]
        emb = emb.repeat(batch // emb.shape[0] + 1, 1, 1)[:batch] if emb.shape[0] != batch else emb
        extra: dict[str, Any] = {}
        added = kwargs.get("added_cond_kwargs")
        if added is not None:  # SDXL: pooled text embeds of the safety concept, time ids of the prompt
            pooled = self.safety_embeds["pooled_prompt_embeds"]
            pooled = pooled.repeat(batch // pooled.shape[0] + 1, 1)[:batch]
            extra["added_cond_kwargs"] = {
                **added,
                "text_embeds": pooled.to(added["text_embeds"]),
                "time_ids": added["time_ids"][batch:],
            }
        return emb, extra

    def __call__(
        self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> Any:
        t_val = float(timestep.flatten()[0]) if isinstance(timestep, torch.Tensor) else float(timestep)
        if self.last_t is not None and t_val > self.last_t:  # a new sampling run restarts the state
            self.step, self.momentum = 0, None
        self.last_t = t_val
        return_dict = kwargs.pop("return_dict", True)
        n = sample.shape[0]
        cfg = n % 2 == 0 and n > 0 and getattr(self.pipe, "do_classifier_free_guidance", n % 2 == 0)
        if not cfg:
            raise ValueError("safety guidance needs classifier-free guidance (guidance_scale > 1)")
        half = n // 2
        if self.sld is not None:
            emb, extra = self._safety_inputs(half, kwargs)
            added = kwargs.get("added_cond_kwargs")
            call_kwargs = dict(kwargs)
            if added is not None:
                call_kwargs["added_cond_kwargs"] = {
                    k: torch.cat([v, extra["added_cond_kwargs"][k]]) for k, v in added.items()
                }
            sample3 = torch.cat([sample, sample[half:]])
            t3 = timestep
            if isinstance(timestep, torch.Tensor) and timestep.ndim == 1 and timestep.shape[0] == n:
                t3 = torch.cat([timestep, timestep[half:]])
            hidden3 = torch.cat([encoder_hidden_states, emb.to(encoder_hidden_states)])
            out = self.forward(sample3, t3, hidden3, *args, return_dict=False, **call_kwargs)[0]
            uncond, text, safety = out[:half], out[half:n], out[n:]
            steps = self.total_steps or getattr(self.pipe, "num_timesteps", None) or SLD_REFERENCE_STEPS
            active = self.step >= self.sld.warmup_for(int(steps))
            guidance, self.momentum = sld_combine(uncond, text, safety, self.momentum, self.sld.config, active)
            self.stats["sld_active_steps"] += int(active)
            text = uncond + guidance
        else:
            out = self.forward(sample, timestep, encoder_hidden_states, *args, return_dict=False, **kwargs)[0]
            uncond, text = out[:half], out[half:]
        if self.classifier is not None:
            text = self._classifier_shift(sample[half:, : text.shape[1]], t_val, uncond, text)
            self.stats["classifier_steps"] += 1
        self.step += 1
        self.stats["steps"] += 1
        result = torch.cat([uncond, text])
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=result)
        return (result,)

    def _classifier_shift(self, x_t: torch.Tensor, t: float, uncond: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        assert self.classifier is not None
        g = float(getattr(self.pipe, "guidance_scale", 1.0)) or 1.0
        out = uncond + g * (text - uncond)  # the model output the pipeline will use
        alphas = self.pipe.scheduler.alphas_cumprod.to(x_t.device)
        a = alphas[round(t)].to(x_t.dtype)
        v_pred = getattr(self.pipe.scheduler.config, "prediction_type", "epsilon") == "v_prediction"
        eps = a.sqrt() * out + (1 - a).sqrt() * x_t if v_pred else out
        vae = self.pipe.vae
        sf = float(getattr(vae.config, "scaling_factor", 1.0))
        with torch.enable_grad():
            x0 = ((x_t - (1 - a).sqrt() * eps) / a.sqrt()).detach().requires_grad_(True)
            images = vae.decode(x0 / sf, return_dict=False)[0]
            logit = self.classifier.harm(images.clamp(-1, 1))
            log_safe = torch.nn.functional.logsigmoid(-logit).sum()
            (grad,) = torch.autograd.grad(log_safe, x0)
        # eps_hat = eps - sqrt(1 - a) * grad log p(safe | x_t); in v-space the same shift is / sqrt(a);
        # the pipeline multiplies (text - uncond) by g, hence the / g
        shift = -(1 - a).sqrt() * self.classifier.scale * grad
        if v_pred:
            shift = shift / a.sqrt()
        return text + shift / g


_LOCK = threading.Lock()


@contextlib.contextmanager
def safety_guidance(
    pipe: Any,
    *,
    sld: SLDGuidance | None = None,
    classifier: ClassifierGuidance | None = None,
    num_inference_steps: int | None = None,
    device: Any = None,
) -> Iterator[dict[str, Any]]:
    """Install SLD and/or classifier guidance on ``pipe.unet`` for the calls inside the block.

    Yields a dict of statistics (steps run, SLD-active steps) filled in as the pipeline runs.
    """
    if sld is None and classifier is None:
        yield {}
        return
    embeds: dict[str, torch.Tensor] | None = None
    if sld is not None:
        embeds = encode_concept(pipe, sld.concept, device=device)
    guided = _GuidedUNet(pipe, sld, classifier, num_inference_steps, embeds)
    unet = pipe.unet
    with _LOCK:
        unet.forward = guided
    try:
        yield guided.stats
    finally:
        with _LOCK:
            del unet.forward  # back to the class's forward


def encode_concept(pipe: Any, text: str, device: Any = None) -> dict[str, torch.Tensor]:
    """Text embeddings of a safety concept with the pipeline's own encoder(s)."""
    dev = device or getattr(pipe, "_execution_device", None) or pipe.device
    with torch.no_grad():
        out = pipe.encode_prompt(prompt=text, device=dev, num_images_per_prompt=1, do_classifier_free_guidance=False)
    embeds = {"prompt_embeds": out[0]}
    if len(out) >= 3 and out[2] is not None:  # SDXL: (embeds, neg, pooled, neg_pooled)
        embeds["pooled_prompt_embeds"] = out[2]
    return embeds


def with_preset(sld: SLDGuidance, name: str) -> SLDGuidance:
    """``sld`` with another preset's hyper-parameters."""
    return replace(sld, config=SLD_PRESETS[name], preset_name=name)
