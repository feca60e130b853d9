"""The tiny model's components, built from small configs as diffusers and transformers classes.

* :class:`PatchVAE` — a lossless "autoencoder" that folds each 2x2 pixel patch into channels
  (32x32x3 <-> 16x16x12), the patching of *simple diffusion* (Hoogeboom et al., ICML 2023). It has
  the ``encode``/``decode``/``config.scaling_factor`` surface of diffusers' ``AutoencoderKL``, so
  ``StableDiffusionPipeline`` samples in 16x16 "latents" that are the pixels themselves: no VAE to
  train, nothing lost to one.
* a ``UNet2DConditionModel`` (cross-attention at 8x8 and 4x4), a ``CLIPTextModel`` (2 layers,
  width 128) and a word-level tokenizer over the caption grammar's vocabulary.

The model samples 32x32 images (the world's 64x64 scenes downsampled, a size chosen so that it
trains in about an hour on two shared CPU cores); the generator upsamples them to 64x64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

MODEL_SIZE = 32
"""Side of the images the model samples (upsampled to the world's 64x64 by the generator)."""

MAX_TOKENS = 24
"""Tokens per prompt (with the begin/end markers); longer prompts are truncated, as in SD."""

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")


class _Latents:
    """Stands in for ``DiagonalGaussianDistribution``: the encoding is deterministic."""

    def __init__(self, latents: torch.Tensor) -> None:
        self.latents = latents

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.latents

    def mode(self) -> torch.Tensor:
        return self.latents


@dataclass
class PatchEncoderOutput(BaseOutput):
    latent_dist: Any


@dataclass
class PatchDecoderOutput(BaseOutput):
    sample: torch.Tensor


class PatchVAE(ModelMixin, ConfigMixin):
    """Space-to-depth "VAE": ``encode`` folds ``patch_size`` x ``patch_size`` pixel patches into
    channels, ``decode`` unfolds them. ``block_out_channels`` only tells pipelines the downscale
    factor (``2 ** (len - 1) == patch_size``)."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        patch_size: int = 2,
        latent_channels: int = 12,
        scaling_factor: float = 1.0,
        block_out_channels: tuple[int, ...] = (1, 1),
        sample_size: int = 32,
    ) -> None:
        super().__init__()
        if latent_channels != in_channels * patch_size * patch_size:
            raise ValueError("latent_channels must be in_channels * patch_size**2")
        if 2 ** (len(block_out_channels) - 1) != patch_size:
            raise ValueError("len(block_out_channels) must encode the patch size (2 ** (len - 1))")
        # a parameter so that ``.dtype``/``.device`` work as on every diffusers model
        self.register_buffer("_anchor", torch.zeros(1), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> Any:
        cfg: Any = self.config
        z = F.pixel_unshuffle(x, cfg.patch_size) * cfg.scaling_factor
        return PatchEncoderOutput(latent_dist=_Latents(z)) if return_dict else (_Latents(z),)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator: Any = None) -> Any:
        cfg: Any = self.config
        x = F.pixel_shuffle(z, cfg.patch_size)
        return PatchDecoderOutput(sample=x) if return_dict else (x,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).latent_dist.mode()).sample


def unet_config() -> dict[str, Any]:
    """The tiny UNet: 16x16x12 in/out, channels 32/64/128, cross-attention at 8x8 and 4x4, plus
    the pooled prompt added to the time embedding."""
    return dict(
        sample_size=16,
        in_channels=12,
        out_channels=12,
        layers_per_block=1,
        block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=128,
        attention_head_dim=32,
        # the prompt also reaches every block through the time embedding (attention-pooled text
        # states, as in unCLIP/Kandinsky's "text" add-embedding): short prompts are mostly padding
        # for cross-attention, and this global path makes a small model learn them much faster
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
        norm_num_groups=16,
    )


def text_config(vocab_size: int) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=128,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )


def scheduler_config() -> dict[str, Any]:
    """DDPM training schedule with v-prediction (Salimans & Ho, ICLR 2022: errors do not blow up
    in x0 at high noise, which matters for a small pixel-space model sampled in few steps);
    sampling uses DDIM with the same betas (trailing spacing, x0 clipped to the pixel range since
    the latents are pixels)."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="v_prediction",
        clip_sample=True,
        clip_sample_range=1.0,
        set_alpha_to_one=False,
        steps_offset=0,
        timestep_spacing="trailing",
    )


def build_tokenizer(words: list[str]) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over ``words`` (lower-cased, punctuation split,
    ``<bos> ... <eos>`` around every prompt, unknown words -> ``<unk>``)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=MAX_TOKENS,
    )
