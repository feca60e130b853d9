"""SD-architecture models with random weights, built from configs (nothing downloaded).

For tests (a tiny UNet + CLIP text encoder that run in milliseconds on CPU) and for timing
benchmarks, which need the architecture and not the weights (:func:`sd15_unet_config` is Stable
Diffusion 1.5's UNet; :func:`sd15_text_config` its CLIP ViT-L/14 text encoder). The tokenizer is
a character-level CLIP BPE tokenizer (byte alphabet, no merges) written on the fly, so prompts of
any text tokenize without a vocabulary download.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from t2iguard.erase.components import DiffusionComponents, require_torch


def sd15_unet_config() -> dict[str, Any]:
    """``UNet2DConditionModel`` config of Stable Diffusion 1.5 (860 M parameters, 64×64 latents)."""
    return {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280, 1280),
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    }


def sd15_text_config() -> dict[str, Any]:
    """``CLIPTextModel`` config of SD 1.x's text encoder (CLIP ViT-L/14 text tower)."""
    return {
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
    }


def tiny_unet_config(sample_size: int = 8, cross_attention_dim: int = 32, in_channels: int = 4) -> dict[str, Any]:
    """A two-level UNet with one cross-attention level (a few hundred thousand parameters)."""
    return {
        "sample_size": sample_size,
        "in_channels": in_channels,
        "out_channels": in_channels,
        "layers_per_block": 1,
        "block_out_channels": (16, 32),
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": 4,
        "norm_num_groups": 8,
    }


def tiny_text_config(hidden_size: int = 32, max_length: int = 16) -> dict[str, Any]:
    return {
        "vocab_size": 600,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": max_length,
        # the character tokenizer's start/end ids (512, 513)
        "bos_token_id": 512,
        "eos_token_id": 513,
        "pad_token_id": 513,
    }


def char_tokenizer(max_length: int = 16) -> Any:
    """A CLIP tokenizer whose vocabulary is the byte alphabet (every character is a token)."""
    require_torch()
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=max_length)


def random_components(
    unet_config: dict[str, Any] | None = None,
    text_config: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    vae: bool = False,
    prediction_type: str = "epsilon",
) -> DiffusionComponents:
    """Random-weight components (tiny by default). ``vae=True`` adds a tiny ``AutoencoderKL``
    (the UNet then works on 4-channel latents of 2× smaller side than the images)."""
    require_torch()
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text_cfg = {**tiny_text_config(), **(text_config or {})}
    unet_cfg = {**tiny_unet_config(cross_attention_dim=int(text_cfg["hidden_size"])), **(unet_config or {})}
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**unet_cfg)
    text = CLIPTextModel(CLIPTextConfig(**text_cfg))
    autoencoder = None
    if vae:
        autoencoder = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16),
            latent_channels=int(unet_cfg["in_channels"]),
            norm_num_groups=4,
            layers_per_block=1,
            sample_size=int(unet_cfg["sample_size"]) * 2,
        )
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        prediction_type=prediction_type,
    )
    return DiffusionComponents(
        unet=unet,
        text_encoder=text,
        tokenizer=char_tokenizer(int(text_cfg["max_position_embeddings"])),
        scheduler=scheduler,
        vae=autoencoder,
        source="<random>",
    ).freeze()
