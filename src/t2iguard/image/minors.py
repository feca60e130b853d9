"""A minors-risk flag for uploaded (or generated) images: a face, a youth cue and a sexual cue.

No age estimator ships offline, so this is a conjunction of configurable signals rather than an
age prediction: the image shows a face (dlib, :mod:`t2iguard.image.faces`), the request's
prompt names a child or youth ("schoolgirl", "teen", "kid", ...), and there is a sexual cue —
sexual terms in the prompt, or open_nsfw on the image. When all required signals are present the
stage scores the zero-tolerance ``minors`` category 1.0 (the policy then always blocks). Every
signal is in the evidence. Turn signals off or replace the term lists in ``params``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from t2iguard.core.decision import Finding, StageResult
from t2iguard.core.inputs import ImageItem
from t2iguard.core.stage import ImageContext, ImageStage, ModelCache
from t2iguard.core.types import Category
from t2iguard.image.faces import FaceAnalyzer
from t2iguard.image.nsfw import OpenNSFWStage

YOUTH_TERMS = [
    "child", "children", "kid", "kids", "toddler", "infant", "baby", "teen", "teens", "teenager",
    "teenage", "preteen", "tween", "underage", "minor", "schoolgirl", "schoolboy", "school uniform",
    "little girl", "little boy", "young girl", "young boy", "loli", "lolita", "shota", "jailbait",
    "daughter", "son", "niece", "nephew", "grade schooler", "middle schooler", "high schooler",
]  # fmt: skip
SEXUAL_TERMS = [
    "nude", "naked", "nudity", "undress", "undressed", "undressing", "topless", "bottomless",
    "lingerie", "underwear", "bikini", "sexy", "seductive", "erotic", "sensual", "provocative",
    "remove clothes", "remove her clothes", "remove his clothes", "remove clothing", "without clothes",
    "no clothes", "strip", "stripping", "porn", "sex", "sexual", "nsfw", "bed",
]  # fmt: skip


def _pattern(terms: Sequence[str]) -> re.Pattern[str]:
    alts = sorted((re.escape(t).replace(r"\ ", r"\s+") for t in terms), key=len, reverse=True)
    return re.compile(r"(?<![a-z])(" + "|".join(alts) + r")(?![a-z])", re.IGNORECASE)


class MinorsRiskStage(ImageStage):
    """Face + youth cue + sexual cue -> ``minors`` 1.0 (always blocked)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        require_face: bool = True
        require_youth_term: bool = True
        youth_terms: list[str] = Field(default_factory=lambda: list(YOUTH_TERMS))
        sexual_terms: list[str] = Field(default_factory=lambda: list(SEXUAL_TERMS))
        image_nsfw_threshold: float | None = Field(
            default=0.5, ge=0.0, le=1.0, description="open_nsfw score that counts as a sexual cue; null: off"
        )

    covers: ClassVar[frozenset[Category]] = frozenset({Category.MINORS})

    def __init__(self, policy: Any, params: BaseModel, models: ModelCache) -> None:
        super().__init__(policy, params, models)
        p: MinorsRiskStage.Params = params  # type: ignore[assignment]
        self.faces = FaceAnalyzer(models)
        self._nsfw = OpenNSFWStage(policy, OpenNSFWStage.Params(), models)
        self._youth = _pattern(p.youth_terms)
        self._sexual = _pattern(p.sexual_terms)

    def warmup(self) -> None:
        self.faces.warmup()
        p: MinorsRiskStage.Params = self.params  # type: ignore[assignment]
        if p.image_nsfw_threshold is not None:
            self._nsfw.warmup()

    def scan_batch(self, items: Sequence[ImageItem], ctx: ImageContext) -> list[StageResult]:
        p: MinorsRiskStage.Params = self.params  # type: ignore[assignment]
        prompt = ctx.prompt or ""
        youth = sorted({m.group(1).lower() for m in self._youth.finditer(prompt)})
        sexual_words = sorted({m.group(1).lower() for m in self._sexual.finditer(prompt)})
        nsfw = self._nsfw.scores(items) if p.image_nsfw_threshold is not None else [0.0] * len(items)
        out = []
        for item, s_nsfw in zip(items, nsfw, strict=True):
            faces = self.faces.detect(item.image, embed=False) if p.require_face else []
            image_sexual = p.image_nsfw_threshold is not None and float(s_nsfw) >= p.image_nsfw_threshold
            signals = {
                "face": bool(faces) if p.require_face else None,
                "youth_terms": youth,
                "sexual_terms": sexual_words,
                "image_nsfw": round(float(s_nsfw), 4) if p.image_nsfw_threshold is not None else None,
            }
            fired = (
                (bool(faces) or not p.require_face)
                and (bool(youth) or not p.require_youth_term)
                and (bool(sexual_words) or image_sexual)
            )
            why = []
            if faces:
                why.append(f"{len(faces)} face(s)")
            if youth:
                why.append("youth terms " + ", ".join(youth))
            if sexual_words:
                why.append("sexual terms " + ", ".join(sexual_words))
            if image_sexual:
                why.append(f"open_nsfw {float(s_nsfw):.2f}")
            finding = Finding(
                category=Category.MINORS,
                score=1.0 if fired else 0.0,
                message=("minors risk: " if fired else "no minors risk: ") + ("; ".join(why) or "no signal"),
                evidence={"signals": signals, "faces": [f.to_dict() for f in faces]},
            )
            out.append(self.result([finding], phase=ctx.phase))
        return out
