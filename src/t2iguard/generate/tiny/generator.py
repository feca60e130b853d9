"""``tiny`` — the bundled tiny text-to-image model behind the :class:`Generator` interface.

The default backend: it runs on a fresh CPU machine in about a second per image. Safety guidance
(``request.safety``) runs SLD with the safety concept written as the world's concept names
(``"knife, pistol, bomb"``): the flagged concepts when the output check named them, else the
stand-in concepts of the flagged categories.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from PIL import Image

from t2iguard.generate.base import GenerationRequest, GenerationResult, SafetyGuidance
from t2iguard.generate.diffusers_backend import DiffusersGenerator
from t2iguard.generate.tiny.components import MODEL_SIZE
from t2iguard.generate.tiny.concepts import CONCEPTS, UNSAFE_CONCEPTS
from t2iguard.generate.tiny.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, SIZE, load_tiny_pipeline


class TinyGenerator(DiffusersGenerator):
    """The tiny model: samples 32x32 and returns them upsampled to the requested size (64x64 by
    default). Edits keep the input's pixels outside the mask exactly."""

    name = "tiny"
    default_size = SIZE
    max_images = 64  # per call; the stack's policy limits what a request may ask for

    def __init__(
        self,
        model_dir: str = "",
        *,
        device: str = "cpu",
        steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        pipeline: Any = None,
        classifier_guidance: Any = None,
    ) -> None:
        pipe = pipeline if pipeline is not None else load_tiny_pipeline(device=device, model_dir=model_dir or None)
        super().__init__(
            pipeline=pipe,
            device=device,
            steps=steps,
            guidance_scale=guidance_scale,
            classifier_guidance=classifier_guidance,
        )

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """As :meth:`DiffusersGenerator.generate`. Prompts longer than the text encoder reads (24
        tokens: the world's captions are short, real prompts are not) are cut at a word boundary
        here, and the metadata says how many words were dropped (``prompt_truncated``)."""
        prompt, dropped = self._fit(request.prompt)
        negative, dropped_negative = self._fit(request.negative_prompt)
        if not (dropped or dropped_negative):
            return super().generate(request)
        result = super().generate(replace(request, prompt=prompt or "", negative_prompt=negative))
        result.metadata["prompt_truncated"] = {
            "max_tokens": int(self.pipe.tokenizer.model_max_length),
            "words_dropped": dropped,
            "negative_words_dropped": dropped_negative,
        }
        return result

    def _fit(self, text: str | None) -> tuple[str | None, int]:
        """The longest whole-word prefix of ``text`` that the text encoder reads, and the number
        of words cut off."""
        if not text:
            return text, 0
        tokenizer = self.pipe.tokenizer
        limit = int(tokenizer.model_max_length)

        def fits(t: str) -> bool:
            return len(tokenizer(t).input_ids) <= limit

        if fits(text):
            return text, 0
        words = text.split()
        lo, hi = 0, len(words)
        while lo < hi:  # the largest k whose first k words fit
            mid = (lo + hi + 1) // 2
            if fits(" ".join(words[:mid])):
                lo = mid
            else:
                hi = mid - 1
        return " ".join(words[:lo]), len(words) - lo

    def safety_concept(self, safety: SafetyGuidance) -> str:
        by_key = {c.key: c for c in CONCEPTS}
        names = [by_key[k].name for k in safety.concepts if k in by_key]
        if not names:
            chosen = [c for c in UNSAFE_CONCEPTS if c.category in safety.categories] or list(UNSAFE_CONCEPTS)
            names = [c.name for c in chosen]
        # the bare names, not a caption: SLD's term vanishes where the safety concept's noise
        # estimate equals the prompt's, so "a knife" would not steer the prompt "a knife" at all
        return ", ".join(names)

    def _size(self, request: GenerationRequest) -> tuple[int, int]:
        return MODEL_SIZE, MODEL_SIZE

    def _postprocess(self, images: list[Image.Image], request: GenerationRequest) -> list[Image.Image]:
        size = (request.width, request.height)
        out = [im.convert("RGB").resize(size, Image.Resampling.BICUBIC) for im in images]
        if request.image is not None and request.mask is not None:
            base = request.image.image.convert("RGB").resize(size, Image.Resampling.LANCZOS)
            mask = request.mask.image.convert("L").resize(size, Image.Resampling.NEAREST)
            out = [Image.composite(im, base, mask) for im in out]
        return out
