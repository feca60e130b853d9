"""Nudity and global NSFW combined into one ``sexual`` score per image, as the policy says.

Runs open_nsfw (global, Yahoo 2016) and NudeNet (exposed-body-part boxes) once per image and
combines them: ``max`` flags what either flags (recall; the I2P evaluations of Schramowski et al.
CVPR 2023 count an image as inappropriate when either classifier fires), ``min`` needs both
(precision), ``mean`` and ``weighted`` average them. Boxes stay the evidence and, with
``censor``, are what a ``transform`` redacts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from t2iguard.core.decision import Finding, StageResult
from t2iguard.core.inputs import ImageItem
from t2iguard.core.stage import ImageContext, ImageStage
from t2iguard.core.types import Action, Category
from t2iguard.image.nsfw import OpenNSFWStage
from t2iguard.image.nudity import NudeNetStage


class SexualContentStage(ImageStage):
    """open_nsfw + NudeNet, combined (category ``sexual``)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        combine: Literal["max", "min", "mean", "weighted"] = "max"
        nsfw_weight: float = Field(default=0.5, ge=0.0, le=1.0, description="weight of open_nsfw in `weighted`")
        nsfw: dict[str, Any] = Field(default_factory=dict, description="params of the `nsfw` stage")
        nudity: dict[str, Any] = Field(default_factory=dict, description="params of the `nudity` stage")

    covers: ClassVar[frozenset[Category]] = frozenset({Category.SEXUAL})

    def __init__(self, policy: Any, params: BaseModel, models: Any) -> None:
        super().__init__(policy, params, models)
        p: SexualContentStage.Params = params  # type: ignore[assignment]
        self._nsfw = OpenNSFWStage(policy, OpenNSFWStage.Params.model_validate(p.nsfw), models)
        self._nudity = NudeNetStage(policy, NudeNetStage.Params.model_validate(p.nudity), models)

    def warmup(self) -> None:
        self._nsfw.warmup()
        self._nudity.warmup()

    def combine(self, nsfw: float, nudity: float) -> float:
        p: SexualContentStage.Params = self.params  # type: ignore[assignment]
        if p.combine == "max":
            return max(nsfw, nudity)
        if p.combine == "min":
            return min(nsfw, nudity)
        if p.combine == "mean":
            return (nsfw + nudity) / 2
        return p.nsfw_weight * nsfw + (1 - p.nsfw_weight) * nudity

    def scan_batch(self, items: Sequence[ImageItem], ctx: ImageContext) -> list[StageResult]:
        p: SexualContentStage.Params = self.params  # type: ignore[assignment]
        nsfw_scores = self._nsfw.scores(items)
        detections = self._nudity.detect(items)
        out = []
        for item, s_nsfw, dets in zip(items, nsfw_scores, detections, strict=True):
            s_nudity, boxes = self._nudity.counted(dets)
            score = float(min(1.0, max(0.0, self.combine(float(s_nsfw), s_nudity))))
            finding = Finding(
                category=Category.SEXUAL,
                score=score,
                message=f"{p.combine}(open_nsfw {float(s_nsfw):.2f}, nudenet {s_nudity:.2f})",
                evidence={
                    "combine": p.combine,
                    "open_nsfw": round(float(s_nsfw), 4),
                    "nudenet": round(s_nudity, 4),
                    "boxes": boxes,
                },
            )
            result = self.result([finding], phase=ctx.phase)
            np_: NudeNetStage.Params = self._nudity.params  # type: ignore[assignment]
            if result.action == Action.TRANSFORM and np_.censor != "none" and boxes:
                result = self._nudity.censored(item, boxes, [finding], ctx)
                result.stage = self.name
            out.append(result)
        return out
