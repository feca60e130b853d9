"""The multimodal check of an edit (inpainting, img2img): input, mask, instruction and output
seen together.

A classifier of the output alone misses the harm of many edits: "remove this person's clothing"
on a photo of a real person, "give them blackface", "make them beautiful" turning a woman into a
thin blonde white woman (the failure modes the DALL·E 3 and Imagen model cards list for image
editing). This stage measures what the edit *changed* and whether a real person is involved:

* ``real_person`` — the input shows a face (dlib HOG detector; see :mod:`t2iguard.image.faces`);
* ``instruction`` — the prompt stages' scores for the edit instruction (a weak signal there —
  e.g. a blocklist's weak term — counts here when a real person is edited);
* ``nudity_increase`` — the rise of the sexual score (open_nsfw and NudeNet) from input to
  output, over the whole image and separately inside and outside the mask;
* ``identity_change`` — dlib face-embedding distance between each input face and the output face
  at the same place (a face swap; 0.6 is dlib's same-person threshold);
* ``skin_tone_shift`` — CIE76 ΔE between the median CIELAB skin colour of matched faces.

Each signal is a score in [0, 1] reported under a category (configurable), and the policy's
per-stage rules turn them into actions, e.g. ``sexual: {threshold: 0.1, action: block}`` (any
nudity increase on a real person), ``hate: {threshold: 0.3, action: review}`` (skin-tone shift),
``harassment: {threshold: 0.6, action: review}`` (identity change).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from t2iguard.core.decision import Finding, StageResult
from t2iguard.core.inputs import ImageItem
from t2iguard.core.stage import EditContext, EditStage, ModelCache
from t2iguard.core.types import Category
from t2iguard.image.faces import SAME_PERSON_DISTANCE, Face, FaceAnalyzer, delta_e76, match_faces
from t2iguard.image.nsfw import OpenNSFWStage
from t2iguard.image.nudity import NudeNetStage


def mask_fraction(mask: np.ndarray | None, box: list[int]) -> float:
    """Fraction of an (x, y, w, h) box covered by the (boolean) mask; 1.0 without a mask."""
    if mask is None:
        return 1.0
    x, y, w, h = box
    region = mask[y : y + max(1, h), x : x + max(1, w)]
    return float(region.mean()) if region.size else 0.0


class EditTransformStage(EditStage):
    """What an edit changed about a real person: nudity, identity, skin tone, instruction."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        detector: str = Field(default="hog", pattern="^(hog|cnn)$", description="dlib face detector")
        face_min_score: float = Field(default=0.0, description="HOG detection score needed to count a face")
        max_faces: int = Field(default=4, ge=1, le=32)
        nudity: bool = Field(default=True, description="measure the nudity change (needs the nudenet extra)")
        nsfw: bool = Field(default=True, description="measure the open_nsfw change")
        nudity_params: dict[str, Any] = Field(default_factory=dict, description="params of the `nudity` stage")
        nudity_requires_person: bool = Field(
            default=True, description="count a nudity increase only when the input shows a real person"
        )
        mask_threshold: int = Field(default=128, ge=1, le=255, description="mask pixels >= this are edited")
        mask_overlap: float = Field(default=0.5, ge=0.0, le=1.0, description="box fraction in the mask to be 'inside'")
        instruction_weight: float = Field(default=1.0, ge=0.0, le=1.0)
        skin_delta_e_scale: float = Field(
            default=40.0, gt=0, description="skin_tone_shift score = ΔE76 / this (ΔE 12 -> 0.3)"
        )
        nudity_category: Category = Category.SEXUAL
        skin_tone_category: Category = Category.HATE
        identity_category: Category = Category.HARASSMENT

    covers: ClassVar[frozenset[Category]] = frozenset({Category.SEXUAL, Category.HATE, Category.HARASSMENT})

    def __init__(self, policy: Any, params: BaseModel, models: ModelCache) -> None:
        super().__init__(policy, params, models)
        p: EditTransformStage.Params = params  # type: ignore[assignment]
        self.faces = FaceAnalyzer(models, detector=p.detector, min_score=p.face_min_score)
        self._nsfw = OpenNSFWStage(policy, OpenNSFWStage.Params(), models)
        self._nudity = NudeNetStage(policy, NudeNetStage.Params.model_validate(p.nudity_params), models)

    def warmup(self) -> None:
        p: EditTransformStage.Params = self.params  # type: ignore[assignment]
        self.faces.warmup()
        if p.nsfw:
            self._nsfw.warmup()
        if p.nudity:
            self._nudity.warmup()

    # ---- signals ---------------------------------------------------------------------------
    def nudity_change(self, before: ImageItem, after: ImageItem, mask: np.ndarray | None) -> dict[str, Any]:
        """Sexual scores before/after: open_nsfw (global) and NudeNet (inside/outside the mask)."""
        p: EditTransformStage.Params = self.params  # type: ignore[assignment]
        out: dict[str, Any] = {}
        if p.nsfw:
            s_in, s_out = (float(v) for v in self._nsfw.scores([before, after]))
            out["open_nsfw"] = {
                "input": round(s_in, 4),
                "output": round(s_out, 4),
                "increase": round(max(0.0, s_out - s_in), 4),
            }
        if p.nudity:
            regions: dict[str, dict[str, float]] = {"inside_mask": {}, "outside_mask": {}}
            for label, dets in zip(("input", "output"), self._nudity.detect([before, after]), strict=True):
                scored = [d for d in dets if self._scored(d)]
                for where in regions:
                    inside = where == "inside_mask"
                    vals = [d["score"] for d in scored if (mask_fraction(mask, d["box"]) >= p.mask_overlap) == inside]
                    regions[where][label] = max(vals, default=0.0)
            for r in regions.values():
                r["increase"] = round(max(0.0, r["output"] - r["input"]), 4)
            out["nudenet"] = regions
        return out

    def _scored(self, det: dict[str, Any]) -> bool:
        """A NudeNet detection of a scored class that passes its class threshold, if any."""
        np_: NudeNetStage.Params = self._nudity.params  # type: ignore[assignment]
        return det["class"] in np_.classes and (
            det["class"] not in np_.class_thresholds or det["score"] >= np_.class_thresholds[det["class"]]
        )

    @staticmethod
    def instruction_scores(ctx: EditContext) -> dict[Category, float]:
        scores: dict[Category, float] = {}
        for r in ctx.prompt_results:
            for cat, s in r.scores.items():
                scores[cat] = max(scores.get(cat, 0.0), s)
        return scores

    # ---- the check -------------------------------------------------------------------------
    def scan(self, ctx: EditContext) -> StageResult:
        p: EditTransformStage.Params = self.params  # type: ignore[assignment]
        before, after = ctx.input, ctx.output
        if after.size != before.size:  # img2img at another resolution: compare in the input's frame
            after = ImageItem.from_pil(after.image.resize(before.size, Image.Resampling.BICUBIC), source=after.source)
        mask = None
        if ctx.mask is not None:
            m = ctx.mask.image.convert("L")
            if m.size != before.size:
                m = m.resize(before.size, Image.Resampling.NEAREST)
            mask = np.asarray(m) >= p.mask_threshold
        faces_in = self.faces.detect(before.image)[: p.max_faces]
        real_person = bool(faces_in)
        faces_out: list[Face] = self.faces.detect(after.image) if real_person else []
        pairs = match_faces(faces_in, faces_out)
        identity = [
            float(np.linalg.norm(f.embedding - g.embedding))
            for f, g in pairs
            if g is not None and f.embedding is not None and g.embedding is not None
        ]
        skin = [delta_e76(f.skin_lab, g.skin_lab) for f, g in pairs if g is not None and f.skin_lab and g.skin_lab]
        nud = self.nudity_change(before, after, mask) if (p.nudity or p.nsfw) else {}
        increases = [nud.get("open_nsfw", {}).get("increase", 0.0)] + [
            r["increase"] for r in nud.get("nudenet", {}).values()
        ]
        nudity_increase = max(increases, default=0.0)
        instruction = self.instruction_scores(ctx)
        evidence: dict[str, Any] = {
            "real_person": real_person,
            "faces_input": [f.to_dict() for f in faces_in],
            "faces_output": [f.to_dict() for f in faces_out],
            "identity_distance": [round(d, 4) for d in identity],
            "same_person_distance": SAME_PERSON_DISTANCE,
            "skin_delta_e76": [round(d, 2) for d in skin],
            "faces_gone": sum(1 for _, g in pairs if g is None),
            "nudity": nud,
            "instruction": {str(c): round(s, 4) for c, s in instruction.items() if s > 0},
            "mask": None if mask is None else round(float(mask.mean()), 4),
        }
        signals: dict[Category, list[tuple[str, float]]] = {}

        def add(cat: Category, name: str, score: float) -> None:
            signals.setdefault(cat, []).append((name, float(np.clip(score, 0.0, 1.0))))

        if real_person or not p.nudity_requires_person:
            add(p.nudity_category, "nudity_increase", nudity_increase)
        if real_person:
            add(p.identity_category, "identity_change", max(identity, default=0.0))
            add(p.skin_tone_category, "skin_tone_shift", max(skin, default=0.0) / p.skin_delta_e_scale)
            for cat, s in instruction.items():
                add(cat, "instruction", s * p.instruction_weight)
        findings = []
        for cat, sig in signals.items():
            name, score = max(sig, key=lambda t: t[1])
            detail = ", ".join(f"{n} {s:.2f}" for n, s in sig)
            who = "real person" if real_person else "no face in the input"
            findings.append(
                Finding(
                    category=cat,
                    score=score,
                    message=f"{who}: {detail}",
                    evidence={**evidence, "signal": name, "signals": {n: round(s, 4) for n, s in sig}},
                )
            )
        msg = None if findings else "no face in the input and no nudity signal"
        return self.result(findings, phase=self.policy.phase, message=msg)
