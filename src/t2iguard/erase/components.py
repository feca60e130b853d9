"""The parts of a Stable-Diffusion-family model that concept erasure reads and edits.

Every method in :mod:`t2iguard.erase` works on a :class:`DiffusionComponents`: a diffusers
``UNet2DConditionModel`` (the only part that is changed), the text encoder and tokenizer that turn
prompts into its cross-attention context, the training noise scheduler, and an optional VAE
(absent for a pixel-space model, where "latents" are images in [-1, 1]).

Components come from a local diffusers folder (``model_index.json`` + ``unet/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/`` [+ ``vae/``]), from the bundled tiny model
(``"tiny"``), or from any object with those attributes (a ``StableDiffusionPipeline``). Nothing is
ever downloaded: paths are opened with ``local_files_only``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2iguard.core.errors import ConfigurationError, MissingDependencyError

if TYPE_CHECKING:
    import torch

TINY_SPEC = "tiny"
"""Model spec of the bundled tiny text-to-image model (``t2iguard.generate.tiny``)."""


def require_torch() -> None:
    """Raise :class:`MissingDependencyError` unless the ``erase`` extra is installed."""
    for package, module in (("torch", "torch"), ("diffusers", "diffusers"), ("safetensors", "safetensors")):
        try:
            __import__(module)
        except ImportError as exc:
            raise MissingDependencyError(package, "erase", "concept erasure") from exc


def cast(module: Any, device: Any = None, dtype: Any = None) -> Any:
    """``module.to(device, dtype)`` through ``torch.nn.Module.to`` (diffusers' own ``to`` logs a
    spurious warning on every dtype cast)."""
    import torch

    kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    return torch.nn.Module.to(module, **kwargs) if kwargs else module


@dataclass
class DiffusionComponents:
    """UNet + text encoder + tokenizer + noise scheduler (+ VAE) of one SD-family model."""

    unet: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    vae: Any | None = None
    source: str = "<memory>"
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(iter(self.unet.parameters())).device

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def latent_size(self) -> int:
        """Side of the UNet's input (latents for a latent model, pixels for a pixel model)."""
        return int(self.unet.config.sample_size)

    @property
    def vae_scale(self) -> int:
        if self.vae is None:
            return 1
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    @property
    def image_size(self) -> int:
        return self.latent_size * self.vae_scale

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> DiffusionComponents:
        """Move every module to ``device`` (the UNet, text encoder and VAE also to ``dtype``)."""
        for mod in (self.unet, self.text_encoder, self.vae):
            if mod is not None:
                cast(mod, device, dtype)
        return self

    def freeze(self) -> DiffusionComponents:
        for mod in (self.unet, self.text_encoder, self.vae):
            if mod is not None:
                mod.requires_grad_(False)
                mod.eval()
        return self

    def tokenize(self, prompts: Sequence[str]) -> Any:
        """The tokenizer's output (``input_ids`` and ``attention_mask``), padded to its max length."""
        return self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Cross-attention context ``(N, seq, dim)`` of ``prompts`` (the empty prompt is ∅)."""
        import torch

        tok = self.tokenize(prompts)
        with torch.no_grad():
            out = self.text_encoder(tok["input_ids"].to(self.text_encoder.device))
        hidden: torch.Tensor = out[0] if isinstance(out, tuple | list) else out.last_hidden_state
        return hidden.to(dtype=self.unet.dtype)

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1] ``(N, 3, H, W)`` -> the UNet's input space (scaled VAE latents)."""
        if self.vae is None:
            return images
        dist = self.vae.encode(images.to(device=self.vae.device, dtype=self.vae.dtype)).latent_dist
        latents: torch.Tensor = dist.sample(generator) if generator is not None else dist.mode()
        return latents * float(self.vae.config.scaling_factor)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The UNet's space -> images in [-1, 1]."""
        if self.vae is None:
            return latents.clamp(-1, 1)
        scaled = latents.to(device=self.vae.device, dtype=self.vae.dtype) / float(self.vae.config.scaling_factor)
        images: torch.Tensor = self.vae.decode(scaled).sample
        return images.clamp(-1, 1)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a diffusers folder (``model_index.json`` + one subfolder per component)."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        index: dict[str, Any] = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": _diffusers_version()}
        parts = {
            "unet": self.unet,
            "text_encoder": self.text_encoder,
            "tokenizer": self.tokenizer,
            "scheduler": self.scheduler,
        }
        if self.vae is not None:
            parts["vae"] = self.vae
        for name, part in parts.items():
            part.save_pretrained(out / name)
            index[name] = [_library_of(part), type(part).__name__]
        (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        return out


def _diffusers_version() -> str:
    import diffusers

    return str(diffusers.__version__)


def _library_of(obj: Any) -> str:
    root = type(obj).__module__.split(".")[0]
    return root if root in ("diffusers", "transformers") else type(obj).__module__


def from_pipeline(pipe: Any, source: str = "<pipeline>") -> DiffusionComponents:
    """Components of a diffusers pipeline (or any object with ``unet``, ``text_encoder``,
    ``tokenizer``, ``scheduler`` and optionally ``vae`` attributes)."""
    missing = [a for a in ("unet", "text_encoder", "tokenizer", "scheduler") if getattr(pipe, a, None) is None]
    if missing:
        raise ConfigurationError(f"{source}: the model has no {', '.join(missing)}; concept erasure needs all four")
    return DiffusionComponents(
        unet=pipe.unet,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        scheduler=pipe.scheduler,
        vae=getattr(pipe, "vae", None),
        source=source,
    )


def load_diffusers_folder(path: str | Path) -> DiffusionComponents:
    """Load a local diffusers folder component by component (nothing is downloaded)."""
    require_torch()
    import diffusers
    import transformers

    root = Path(path)
    index_file = root / "model_index.json"
    if not index_file.is_file():
        raise ConfigurationError(f"{root}: not a diffusers model folder (no model_index.json)")
    index = json.loads(index_file.read_text())
    parts: dict[str, Any] = {}
    for name in ("unet", "text_encoder", "tokenizer", "scheduler", "vae"):
        spec = index.get(name)
        if not spec or spec[0] is None or not (root / name).is_dir():
            continue
        library, cls_name = spec
        lib: Any = {"diffusers": diffusers, "transformers": transformers}.get(library)
        if lib is None and str(library).startswith("t2iguard."):
            # t2iguard's own components (the tiny model's PatchVAE); never arbitrary modules
            import importlib

            lib = importlib.import_module(library)
        cls = getattr(lib, cls_name, None) if lib is not None else None
        if cls is None:
            raise ConfigurationError(f"{root}: component {name} has an unsupported class {library}.{cls_name}")
        kwargs: dict[str, Any] = {"local_files_only": True} if name != "scheduler" else {}
        try:
            parts[name] = cls.from_pretrained(root / name, **kwargs)
        except (OSError, ValueError) as exc:
            if str(library).startswith("t2iguard.") and hasattr(cls, "from_config"):
                # a weightless component (config only)
                parts[name] = cls.from_config(cls.load_config(root / name))
                continue
            raise ConfigurationError(f"{root}: cannot load {name}: {exc}") from exc
    return from_pipeline(_Namespace(parts), source=str(root))


class _Namespace:
    def __init__(self, parts: dict[str, Any]) -> None:
        self.__dict__.update(parts)

    def __getattr__(self, name: str) -> Any:
        return None


def load_tiny_components() -> DiffusionComponents:
    """The bundled tiny text-to-image model (``t2iguard.generate.tiny``)."""
    import importlib

    require_torch()
    try:
        pipeline = importlib.import_module("t2iguard.generate.tiny.pipeline")
    except ImportError as exc:
        raise ConfigurationError(f"the bundled tiny model is not available in this build: {exc}") from exc
    return from_pipeline(pipeline.load_tiny_pipeline(), source=TINY_SPEC)


def load_components(spec: str | Path) -> DiffusionComponents:
    """``"tiny"``, a diffusers folder, or an erasure output folder (base model + changed weights)."""
    if str(spec) == TINY_SPEC:
        return load_tiny_components()
    path = Path(spec)
    if not path.exists():
        raise ConfigurationError(f"model not found: {path}")
    from t2iguard.erase.record import RECORD_FILE, load_erased

    if (path / RECORD_FILE).is_file() and not (path / "model_index.json").is_file():
        return load_erased(path)
    return load_diffusers_folder(path)
