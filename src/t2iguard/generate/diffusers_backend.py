"""``diffusers:PATH`` — local Stable Diffusion 1.x/2.x and SDXL checkpoints through diffusers.

``PATH`` is a diffusers pipeline folder (``model_index.json``) or a single ``.safetensors`` /
``.ckpt`` file in the original layout. Text-to-image, img2img (``request.image``) and inpainting
(``request.image`` + ``request.mask``: white = repaint) on CPU or CUDA. Nothing is ever fetched
from a hub: folders load with ``local_files_only``, and a single file needs the architecture's
configs locally (``config=`` a diffusers folder of the same architecture, or ``original_config=``
the original YAML); without them the error says so instead of downloading.

Safety guidance (``request.safety``, set by the regeneration policy) runs Safe Latent Diffusion
(:mod:`t2iguard.generate.guidance`) with the preset of ``request.safety.strength`` and a safety
concept built from the flagged categories (:data:`CATEGORY_CONCEPTS`) or the flagged concepts.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from t2iguard.core.errors import ConfigurationError, MissingDependencyError
from t2iguard.core.types import Category
from t2iguard.generate.base import GenerationRequest, GenerationResult, SafetyGuidance

CATEGORY_CONCEPTS: dict[Category, str] = {
    Category.SEXUAL: "sexual, nudity, naked, explicit",
    Category.MINORS: "child abuse, sexualised minors",
    Category.VIOLENCE: "violence, blood, weapons, brutality, cruelty, gore",
    Category.SELF_HARM: "suicide, self-harm, cutting, harm",
    Category.HATE: "hate, hate symbols, racism",
    Category.HARASSMENT: "harassment, humiliation, obscene gestures",
    Category.ILLEGAL: "illegal activity, drug use, theft, vandalism",
    Category.SHOCKING: "shocking, bodily fluids, gore, suffering, disgusting",
    Category.PUBLIC_FIGURE: "celebrity, famous person",
    Category.PRIVATE_INDIVIDUAL: "identifiable person",
    Category.POLITICAL_MISINFORMATION: "fake news, propaganda",
}
"""Safety-concept text per category for SLD on general-purpose SD checkpoints (from the I2P
concept SLD ships as its default)."""

_SD_CLASSES = {
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
}
_SDXL_CLASSES = {
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline",
}


def _require() -> None:
    import importlib.util

    for package in ("torch", "diffusers", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(package, "diffusion", "the diffusers generator backend")


def _single_file_kind(path: Path) -> str:
    """``"sd"`` or ``"sdxl"`` from the tensor names of an original-layout checkpoint."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                keys = list(fh.keys())
        except Exception as exc:  # safetensors raises its own error types
            raise ConfigurationError(f"{path} is not a readable safetensors file: {exc}") from exc
    else:
        import torch

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for bad pickles
            raise ConfigurationError(f"{path} is not a readable checkpoint: {exc}") from exc
        state = state.get("state_dict", state) if isinstance(state, dict) else {}
        keys = list(state)
    if any(k.startswith("conditioner.embedders.1") for k in keys):
        return "sdxl"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "sd"
    raise ConfigurationError(
        f"{path} is not a Stable Diffusion checkpoint (no 'model.diffusion_model.*' tensors); the diffusers "
        "backend runs SD 1.x/2.x and SDXL"
    )


class DiffusersGenerator:
    """A local SD 1.x/2.x/SDXL checkpoint (or a ready ``pipeline=``) behind :class:`Generator`."""

    name = "diffusers"
    default_size = 512
    max_images = 16

    def __init__(
        self,
        path: str = "",
        *,
        pipeline: Any = None,
        device: str | None = None,
        dtype: str | None = None,
        config: str | None = None,
        original_config: str | None = None,
        steps: int = 30,
        guidance_scale: float = 7.5,
        concepts: Mapping[Category, str] | None = None,
        classifier_guidance: Any = None,
    ) -> None:
        _require()
        self.path = path
        self.device = device
        self.dtype = dtype
        self.config = config
        self.original_config = original_config
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.concepts = dict(CATEGORY_CONCEPTS if concepts is None else concepts)
        self.classifier_guidance = classifier_guidance
        self._pipe = pipeline
        self._variants: dict[str, Any] = {}
        self._lock = threading.Lock()
        if pipeline is None:
            self._check_path()
        else:
            self._kind = "sdxl" if "XL" in type(pipeline).__name__ else "sd"

    # ---- loading ----------------------------------------------------------------------------
    def _check_path(self) -> None:
        if not self.path:
            raise ConfigurationError("the diffusers backend needs a checkpoint: diffusers:/path/to/model")
        p = Path(self.path).expanduser()
        if not p.exists():
            raise ConfigurationError(f"diffusers checkpoint not found: {p}")
        if p.is_dir():
            index = p / "model_index.json"
            if not index.is_file():
                raise ConfigurationError(
                    f"{p} is not a diffusers pipeline folder (no model_index.json); give a pipeline folder or "
                    "a single .safetensors checkpoint"
                )
            try:
                cls = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigurationError(f"{index} is unreadable: {exc}") from exc
            if cls in _SDXL_CLASSES:
                self._kind = "sdxl"
            elif cls in _SD_CLASSES:
                self._kind = "sd"
            else:
                raise ConfigurationError(
                    f"{p} holds a {cls or 'unknown'} pipeline; the diffusers backend runs Stable Diffusion "
                    "1.x/2.x and SDXL pipelines"
                )
        elif p.suffix in (".safetensors", ".ckpt"):
            self._kind = _single_file_kind(p)
        else:
            raise ConfigurationError(f"{p}: expected a diffusers folder or a .safetensors/.ckpt file")

    def _torch_setup(self) -> tuple[str, Any]:
        import torch

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.dtype:
            dtype = getattr(torch, self.dtype)
        else:
            dtype = torch.float16 if device.startswith("cuda") else torch.float32
        return device, dtype

    def _load(self) -> Any:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        device, dtype = self._torch_setup()
        cls = StableDiffusionXLPipeline if self._kind == "sdxl" else StableDiffusionPipeline
        extra: dict[str, Any] = (
            {} if self._kind == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
        )
        p = Path(self.path).expanduser()
        if p.is_dir():
            pipe = cls.from_pretrained(str(p), torch_dtype=dtype, local_files_only=True, **extra)
        else:
            if self.config is None and self.original_config is None:
                raise ConfigurationError(
                    f"single-file checkpoint {p}: its architecture's configs are needed and are never downloaded; "
                    "pass config=DIR (a local diffusers folder of the same architecture) or original_config=FILE "
                    "(the original YAML), e.g. make_generator('diffusers:PATH', config='/models/sd15-config')"
                )
            try:
                pipe = cls.from_single_file(
                    str(p),
                    config=self.config,
                    original_config=self.original_config,
                    torch_dtype=dtype,
                    local_files_only=True,
                    **extra,
                )
            except Exception as exc:  # diffusers raises many types for unloadable files
                raise ConfigurationError(f"cannot load single-file checkpoint {p} offline: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            with self._lock:
                if self._pipe is None:
                    self._pipe = self._load()
        return self._pipe

    def _variant(self, kind: str) -> Any:
        """The img2img / inpainting pipeline sharing the text-to-image pipeline's modules."""
        if kind == "txt2img":
            return self.pipe
        if kind not in self._variants:
            import diffusers

            name = {
                ("sd", "img2img"): "StableDiffusionImg2ImgPipeline",
                ("sd", "inpaint"): "StableDiffusionInpaintPipeline",
                ("sdxl", "img2img"): "StableDiffusionXLImg2ImgPipeline",
                ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
            }[(self._kind, kind)]
            cls = getattr(diffusers, name)
            keys = _init_keys(cls)
            comps = {k: v for k, v in self.pipe.components.items() if k in keys}
            sched = self.pipe.scheduler
            config = dict(sched.config)
            # pipelines rewrite "deprecated" scheduler settings in place on construction: give the
            # variant its own scheduler, with the text-to-image pipeline's settings
            comps["scheduler"] = type(sched).from_config(config)
            if "requires_safety_checker" in keys and comps.get("safety_checker") is None:
                comps["requires_safety_checker"] = False
            variant = cls(**comps)
            variant.scheduler = type(sched).from_config(config)
            variant.set_progress_bar_config(disable=True)
            self._variants[kind] = variant
        return self._variants[kind]

    # ---- safety guidance --------------------------------------------------------------------
    def safety_concept(self, safety: SafetyGuidance) -> str:
        """The SLD safety-concept text for ``safety``: its concepts, else its categories' texts."""
        from t2iguard.generate.guidance import DEFAULT_SLD_CONCEPT

        if safety.concepts:
            return ", ".join(safety.concepts)
        texts = [self.concepts[c] for c in safety.categories if c in self.concepts]
        return ", ".join(texts) if texts else DEFAULT_SLD_CONCEPT

    def _guidance(self, safety: SafetyGuidance | None) -> tuple[Any, Any]:
        if safety is None:
            return None, None
        from t2iguard.generate.guidance import SLDGuidance

        sld = SLDGuidance.preset(safety.strength, self.safety_concept(safety))
        clf = None
        if self.classifier_guidance is not None:
            from dataclasses import replace

            factor = {"weak": 0.25, "medium": 0.5, "strong": 1.0, "max": 2.0}[safety.strength]
            clf = replace(self.classifier_guidance, scale=self.classifier_guidance.scale * factor)
        return sld, clf

    # ---- generation -------------------------------------------------------------------------
    def _size(self, request: GenerationRequest) -> tuple[int, int]:
        return request.width, request.height

    def generate(self, request: GenerationRequest) -> GenerationResult:
        import torch

        from t2iguard.generate.guidance import safety_guidance

        if not 1 <= request.n <= self.max_images:
            raise ValueError(f"n must be between 1 and {self.max_images}, got {request.n}")
        if request.mask is not None and request.image is None:
            raise ValueError("a mask needs an input image")
        width, height = self._size(request)
        factor = int(getattr(self.pipe, "vae_scale_factor", 8))
        if width % factor or height % factor or width < factor or height < factor:
            raise ValueError(f"width and height must be positive multiples of {factor}, got {width}x{height}")
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        seeds = [seed + i for i in range(request.n)]
        if request.extra.get("seeds") is not None:  # explicit per-image seeds (benchmarks, red-teaming)
            seeds = [int(s) for s in request.extra["seeds"]]
            if len(seeds) != request.n:
                raise ValueError(f"extra['seeds'] has {len(seeds)} seeds for n={request.n}")
            seed = seeds[0]
        steps = request.steps or self.steps
        scale = request.guidance_scale if request.guidance_scale is not None else self.guidance_scale
        kind = "txt2img" if request.image is None else ("inpaint" if request.mask is not None else "img2img")
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        sld, clf = self._guidance(request.safety)
        if (sld or clf) and scale <= 1:
            scale = max(scale, 1.5)  # safety guidance needs classifier-free guidance
        kwargs: dict[str, Any] = dict(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            num_images_per_prompt=request.n,
            num_inference_steps=steps,
            guidance_scale=scale,
            generator=gens,
            output_type="pil",
        )
        t0 = time.perf_counter()
        with self._lock:
            pipe = self._variant("img2img" if kind != "txt2img" and not self._native_inpaint(kind) else kind)
            init = None
            if kind == "txt2img":
                kwargs.update(width=width, height=height)
            else:
                assert request.image is not None
                init = request.image.image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
                kwargs.update(image=init, strength=request.strength if request.strength is not None else 0.75)
                if kind == "inpaint":
                    assert request.mask is not None
                    mask = request.mask.image.convert("L").resize((width, height), Image.Resampling.NEAREST)
                    if self._native_inpaint(kind):
                        kwargs.update(mask_image=mask, width=width, height=height)
                    else:
                        kwargs["callback_on_step_end"] = _MaskBlend(pipe, init, mask, gens[0])
                        kwargs["callback_on_step_end_tensor_inputs"] = ["latents"]
            with safety_guidance(pipe, sld=sld, classifier=clf, num_inference_steps=steps) as stats:
                images = list(pipe(**kwargs).images)
            if kind == "inpaint":
                assert init is not None and request.mask is not None
                mask = request.mask.image.convert("L").resize((width, height), Image.Resampling.NEAREST)
                images = [Image.composite(im.convert("RGB"), init, mask) for im in images]
        images = self._postprocess(images, request)
        meta: dict[str, Any] = {
            "backend": self.name,
            "mode": kind,
            "steps": steps,
            "guidance_scale": scale,
            "seeds": seeds,
            "latency_ms": round((time.perf_counter() - t0) * 1000.0, 1),
        }
        if sld is not None:
            meta["safety_guidance"] = {**sld.describe(), **stats}
        if clf is not None:
            meta["classifier_guidance"] = clf.describe()
        return GenerationResult(images=images, seed=seed, metadata=meta)

    def _native_inpaint(self, kind: str) -> bool:
        """True for inpainting checkpoints (9-channel UNets); other UNets inpaint by blending."""
        return kind == "inpaint" and int(self.pipe.unet.config.in_channels) == 9

    def _postprocess(self, images: list[Image.Image], request: GenerationRequest) -> list[Image.Image]:
        return [im.convert("RGB") for im in images]


def _init_keys(cls: Any) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters) - {"self"}


class _MaskBlend:
    """Inpainting for UNets without mask channels: after every step, the latents outside the
    mask are replaced by the input image's latents noised to the next timestep (the blended
    sampling of RePaint, Lugmayr et al., CVPR 2022, without resampling)."""

    def __init__(self, pipe: Any, image: Image.Image, mask: Image.Image, generator: Any) -> None:
        import numpy as np
        import torch
        import torch.nn.functional as F

        self.pipe = pipe
        device = pipe._execution_device
        vae = pipe.vae
        x = pipe.image_processor.preprocess(image).to(device=device, dtype=vae.dtype)
        with torch.no_grad():
            enc = vae.encode(x)
            dist = enc.latent_dist if hasattr(enc, "latent_dist") else enc[0]
            latents = dist.mode() if hasattr(dist, "mode") else dist.sample()
        self.init = latents * float(getattr(vae.config, "scaling_factor", 1.0))
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None].to(device)
        self.mask = (F.interpolate(m, size=self.init.shape[-2:], mode="area") > 0.0).to(self.init.dtype)
        self.noise = torch.randn(self.init.shape, generator=generator, dtype=self.init.dtype).to(device)

    def __call__(self, pipe: Any, i: int, t: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        latents = callback_kwargs["latents"]
        timesteps = pipe.scheduler.timesteps
        init = self.init.repeat(latents.shape[0] // self.init.shape[0], 1, 1, 1)
        noise = self.noise.repeat(latents.shape[0] // self.noise.shape[0], 1, 1, 1)
        last = i + 1 >= len(timesteps)
        known = init if last else pipe.scheduler.add_noise(init, noise, timesteps[i + 1 : i + 2])
        callback_kwargs["latents"] = self.mask * latents + (1 - self.mask) * known.to(latents.dtype)
        return callback_kwargs
