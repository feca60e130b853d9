"""DDIM sampling with classifier-free guidance, shared by training (ESD and SDD draw their
training states x_t from the model itself) and by evaluation (images at fixed seeds).

DDIM: Song et al., *Denoising Diffusion Implicit Models*, ICLR 2021. Classifier-free guidance:
Ho & Salimans, 2021 — ε̂ = ε(x_t, ∅) + s·(ε(x_t, c) − ε(x_t, ∅)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from t2iguard.erase.components import DiffusionComponents


def ddim_scheduler(scheduler: Any, steps: int) -> Any:
    """A DDIM scheduler with the noise schedule of ``scheduler``, set to ``steps`` steps."""
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    return ddim


def unet_out(unet: Any, x: torch.Tensor, t: torch.Tensor | int, context: torch.Tensor) -> torch.Tensor:
    """The UNet's raw output (ε, or v for a v-prediction model) for a batch."""
    import torch

    if not isinstance(t, torch.Tensor):
        t = torch.tensor(int(t), device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    out: torch.Tensor = unet(x.to(unet.dtype), t.to(x.device), encoder_hidden_states=context.to(unet.dtype)).sample
    return out


def guided_out(
    unet: Any, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor, uncond: torch.Tensor, scale: float
) -> torch.Tensor:
    """Classifier-free guided output; ``scale == 1`` is the conditional output alone."""
    import torch

    if scale == 1.0:
        return unet_out(unet, x, t, cond)
    both = unet_out(unet, torch.cat([x, x]), t, torch.cat([uncond, cond]))
    e_u, e_c = both.chunk(2)
    return e_u + scale * (e_c - e_u)


def sample_until(
    unet: Any,
    ddim: Any,
    latents: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    scale: float,
    index: int,
) -> torch.Tensor:
    """Run ``index`` DDIM steps from pure noise ``latents``; the result is x at
    ``ddim.timesteps[index]`` (``index == len(timesteps)`` runs the whole chain)."""
    import torch

    x = latents * float(ddim.init_noise_sigma)
    with torch.no_grad():
        for t in ddim.timesteps[:index]:
            out = guided_out(unet, ddim.scale_model_input(x, t), t, cond, uncond, scale)
            x = ddim.step(out.float(), t, x.float()).prev_sample.to(latents.dtype)
    return x


def initial_noise(
    components: DiffusionComponents, seeds: Sequence[int], device: Any = None, dtype: Any = None
) -> torch.Tensor:
    """One N(0, I) latent per seed, drawn on CPU so that a seed gives the same image everywhere."""
    import torch

    c, s = components.latent_channels, components.latent_size
    noise = torch.stack([torch.randn((c, s, s), generator=torch.Generator().manual_seed(int(sd))) for sd in seeds])
    return noise.to(device=device or components.device, dtype=dtype or components.unet.dtype)


def generate(
    components: DiffusionComponents,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int = 25,
    guidance_scale: float = 5.0,
    batch_size: int = 32,
    negative_prompt: str = "",
    progress: bool = False,
) -> torch.Tensor:
    """Images in [-1, 1] ``(N, 3, H, W)`` for ``prompts[i]`` at ``seeds[i]`` (DDIM, η = 0)."""
    import torch

    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    ddim = ddim_scheduler(components.scheduler, steps)
    uncond1 = components.encode_prompts([negative_prompt])
    from tqdm.auto import tqdm

    out = []
    starts = range(0, len(prompts), batch_size)
    with torch.no_grad():
        for i in tqdm(starts, desc="sampling", disable=not progress, leave=False, unit="batch"):
            chunk = list(prompts[i : i + batch_size])
            cond = components.encode_prompts(chunk)
            uncond = uncond1.expand(len(chunk), -1, -1)
            x = initial_noise(components, seeds[i : i + batch_size])
            x = sample_until(components.unet, ddim, x, cond, uncond, guidance_scale, len(ddim.timesteps))
            out.append(components.decode_latents(x).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 3, components.image_size, components.image_size))


def to_pil(images: torch.Tensor) -> list[Any]:
    """[-1, 1] tensors -> PIL images."""
    from PIL import Image

    arr = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]
