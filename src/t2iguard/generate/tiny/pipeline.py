"""Load the bundled tiny model as a diffusers ``StableDiffusionPipeline``.

The folder is a regular diffusers pipeline folder (``model_index.json``, ``unet/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``vae/``) whose VAE is the lossless
:class:`~t2iguard.generate.tiny.components.PatchVAE`; this module assembles it without network
access, so code written for Stable Diffusion (safety guidance, concept erasure, red-teaming) runs
on it unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from t2iguard.core.errors import ConfigurationError
from t2iguard.generate.tiny.model import model_dir as bundled_dir
from t2iguard.generate.tiny.model import require

DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 5.0
SIZE = 64
"""Side of the images the tiny backend returns (the model samples 32x32; see ``components``)."""


def assemble_pipeline(*, unet: Any, text_encoder: Any, tokenizer: Any, vae: Any, scheduler: Any = None) -> Any:
    """A ``StableDiffusionPipeline`` of the given components (DDIM sampler, no safety checker)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from t2iguard.generate.tiny.components import scheduler_config

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler or DDIMScheduler(**scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # the "latents" are pixels: clip DDIM's x0 estimates to the pixel range (as pixel-space DDPM
    # does); StableDiffusionPipeline resets clip_sample on construction, so it is set afterwards
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=True, clip_sample_range=1.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_tiny_pipeline(device: str = "cpu", model_dir: str | Path | None = None) -> Any:
    """The tiny text-to-image model as a diffusers ``StableDiffusionPipeline`` on ``device``.

    ``pipe("a knife on a blue background").images[0]`` is a 32x32 PIL image (the generator
    upsamples to 64x64); use
    ``num_inference_steps`` (default :data:`DEFAULT_STEPS`) and ``guidance_scale`` as with SD.
    """
    require()
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, PreTrainedTokenizerFast

    from t2iguard.generate.tiny.components import PatchVAE

    root = Path(model_dir) if model_dir else bundled_dir()
    if not (root / "model_index.json").is_file() or not (root / "unet").is_dir():
        raise ConfigurationError(f"no tiny model at {root} (expected a diffusers folder with model_index.json)")
    import torch

    unet = UNet2DConditionModel.from_pretrained(root / "unet", local_files_only=True, torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(root / "text_encoder", local_files_only=True, dtype=torch.float32)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(root / "tokenizer", local_files_only=True)
    vae = PatchVAE.from_config(json.loads((root / "vae" / "config.json").read_text()))
    scheduler = DDIMScheduler.from_pretrained(root / "scheduler", local_files_only=True)
    pipe = assemble_pipeline(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
