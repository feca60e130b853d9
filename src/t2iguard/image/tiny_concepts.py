"""The tiny world's concept classifier as an image check (stage ``tiny_concepts``).

Scores each image for the stand-in unsafe concepts of the bundled tiny model's world (knife,
pistol, bomb -> ``violence``; skull, drop of blood -> ``shocking``) with the bundled concept
classifier (:mod:`t2iguard.generate.tiny.concepts`). One finding per concept, so the trace says
which concept was seen and the regeneration policy can steer away from exactly that concept.
Used by the ``tiny-demo`` policy to show and measure output filtering and regeneration
hermetically; it means nothing on real photographs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from t2iguard.core.decision import Finding, StageResult
from t2iguard.core.inputs import ImageItem
from t2iguard.core.stage import ImageContext, ImageStage
from t2iguard.core.types import Category


class TinyConceptStage(ImageStage):
    """Probability that each stand-in unsafe concept is in the image."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        model_path: str | None = Field(default=None, description="classifier safetensors; default: bundled")
        concepts: list[str] | None = Field(default=None, description="concept keys to report; default: the unsafe ones")
        category_map: dict[str, Category] = Field(
            default_factory=dict, description="override a concept's category, e.g. {blood: violence}"
        )

    covers: ClassVar[frozenset[Category]] = frozenset({Category.VIOLENCE, Category.SHOCKING})

    def _classifier(self) -> Any:
        from t2iguard.generate.tiny.concepts import load_concept_classifier

        p: TinyConceptStage.Params = self.params  # type: ignore[assignment]
        return self.models.get(("tiny_concepts", p.model_path), lambda: load_concept_classifier(p.model_path))

    def warmup(self) -> None:
        self._classifier()

    def scan_batch(self, items: Sequence[ImageItem], ctx: ImageContext) -> list[StageResult]:
        from t2iguard.generate.tiny.concepts import CONCEPT_KEYS, UNSAFE_CONCEPTS, concept

        p: TinyConceptStage.Params = self.params  # type: ignore[assignment]
        chosen = [concept(k) for k in p.concepts] if p.concepts else list(UNSAFE_CONCEPTS)
        probs = self._classifier().predict([it.image for it in items])
        out = []
        for row in probs:
            findings = []
            for c in chosen:
                category = p.category_map.get(c.key) or c.category or Category.SHOCKING
                score = float(row[CONCEPT_KEYS.index(c.key)])
                findings.append(
                    Finding(
                        category=category,
                        score=min(1.0, max(0.0, score)),
                        message=f"{c.name} (tiny-world concept classifier)",
                        evidence={"concept": c.key, "model": "tiny-concepts"},
                    )
                )
            out.append(self.result(findings, phase=ctx.phase))
        return out
