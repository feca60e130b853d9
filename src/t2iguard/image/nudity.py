"""Exposed-body-part detection with NudeNet 3.4's bundled YOLOv8n detector (``320n.onnx``).

The detector finds 18 classes (``FEMALE_BREAST_EXPOSED``, ``FACE_MALE``, ...). Following the
concept-erasure literature (ESD, Gandikota et al. ICCV 2023; MACE, Lu et al. CVPR 2024; RECE,
Gong et al. ECCV 2024) an image counts as nude when a detection of an *exposed* class scores at
or above the detection threshold (0.6 there; 0.45 in UnlearnDiffAtk, Zhang et al. ECCV 2024).
The ``sexual`` score is the highest exposed-class confidence; the boxes are the evidence.

Licence: the NudeNet wheel carries AGPL-3.0 licence files, so it is an optional extra
(``pip install 't2iguard[nudenet]'``). Only its weights file is used; the pre- and
post-processing here are t2iguard's own (letterbox to a square, resize to 320, NMS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, cast

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from t2iguard.core.decision import Change, Finding, StageResult
from t2iguard.core.inputs import ImageItem
from t2iguard.core.stage import ImageContext, ImageStage
from t2iguard.core.types import Action, Category
from t2iguard.image.censor import CensorMode, censor
from t2iguard.image.onnx import package_file, session

LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)  # fmt: skip
"""NudeNet 3.4 class order (output channels 4..21 of ``320n.onnx``)."""

NUDITY_CLASSES: tuple[str, ...] = (
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)
"""Exposed classes that count as nudity by default."""

_PREFILTER = 0.2
_NMS_IOU = 0.45


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression on (x, y, w, h) boxes, class-agnostic like NudeNet."""
    if len(boxes) == 0:
        return []
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    areas = np.maximum(0, boxes[:, 2]) * np.maximum(0, boxes[:, 3])
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0, xx2 - xx1) * np.maximum(0, yy2 - yy1)
        union = areas[i] + areas[order[1:]] - inter
        ratio = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
        order = order[1:][ratio <= iou]
    return keep


def letterbox(image: Image.Image, size: int) -> tuple[np.ndarray, int]:
    """Pad to a square (right/bottom, black) and resize to ``size``; NCHW float in [0, 1]."""
    side = max(image.width, image.height)
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(image, (0, 0))
    resized = canvas.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(resized, dtype=np.float32) / 255.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1)), side


def decode(output: np.ndarray, side: int, width: int, height: int, size: int) -> list[dict[str, Any]]:
    """YOLOv8 head (22 x N) -> detections in original pixel coordinates."""
    rows = output.T  # N x 22
    cls_scores = rows[:, 4:]
    best = cls_scores.argmax(axis=1)
    conf = cls_scores[np.arange(len(rows)), best]
    keep = conf >= _PREFILTER
    rows, best, conf = rows[keep], best[keep], conf[keep]
    scale = side / size
    cx, cy, w, h = (rows[:, k] * scale for k in range(4))
    x = np.clip(cx - w / 2, 0, width)
    y = np.clip(cy - h / 2, 0, height)
    w = np.minimum(w, width - x)
    h = np.minimum(h, height - y)
    boxes = np.stack([x, y, w, h], axis=1) if len(rows) else np.zeros((0, 4))
    out = []
    for i in _nms(boxes, conf, _NMS_IOU):
        out.append(
            {
                "class": LABELS[int(best[i])],
                "score": round(float(conf[i]), 4),
                "box": [int(boxes[i, 0]), int(boxes[i, 1]), int(boxes[i, 2]), int(boxes[i, 3])],
            }
        )
    return out


class NudeNetStage(ImageStage):
    """NudeNet exposed-class detections (category ``sexual``)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        model_path: str | None = Field(default=None, description="a NudeNet v3 ONNX detector; default: bundled 320n")
        resolution: int = Field(default=320, ge=160, le=1280)
        detection_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
        classes: list[str] = Field(default_factory=lambda: list(NUDITY_CLASSES))
        class_thresholds: dict[str, float] = Field(
            default_factory=dict,
            description="per-class detection thresholds; a class listed here counts only at or above its "
            "threshold (e.g. {MALE_GENITALIA_EXPOSED: 0.4, BUTTOCKS_EXPOSED: 0.7})",
        )
        censor: Literal["none", "blur", "pixelate", "fill"] = Field(
            default="none",
            description="when the policy's action here is `transform`, return the image with the flagged "
            "regions censored this way ('none': no censored image, so `transform` fails closed)",
        )
        censor_padding: float = Field(default=0.1, ge=0.0, le=1.0)
        censor_strength: int = Field(default=16, ge=2, le=256)
        batch_size: int = Field(default=8, ge=1, le=128)
        threads: int | None = Field(default=None, ge=1)

        @field_validator("classes")
        @classmethod
        def _known(cls, v: list[str]) -> list[str]:
            unknown = [c for c in v if c not in LABELS]
            if unknown:
                raise ValueError(f"unknown NudeNet classes {unknown}; known: {', '.join(LABELS)}")
            return v

        @field_validator("class_thresholds")
        @classmethod
        def _known_thresholds(cls, v: dict[str, float]) -> dict[str, float]:
            unknown = [c for c in v if c not in LABELS]
            if unknown:
                raise ValueError(f"unknown NudeNet classes {unknown}; known: {', '.join(LABELS)}")
            bad = [c for c, t in v.items() if not 0.0 <= t <= 1.0]
            if bad:
                raise ValueError(f"class thresholds must be in [0, 1]: {bad}")
            return v

    covers: ClassVar[frozenset[Category]] = frozenset({Category.SEXUAL})

    def _session(self):  # type: ignore[no-untyped-def]
        p: NudeNetStage.Params = self.params  # type: ignore[assignment]
        path = p.model_path or package_file(
            "nudenet", "320n.onnx", extra="nudenet", purpose="the nudity stage (NudeNet)"
        )
        return session(self.models, path, threads=p.threads)

    def warmup(self) -> None:
        self._session()

    def detect(self, items: Sequence[ImageItem]) -> list[list[dict[str, Any]]]:
        """All detections (any class, confidence >= 0.2 after NMS) for each image."""
        p: NudeNetStage.Params = self.params  # type: ignore[assignment]
        sess = self._session()
        name = sess.get_inputs()[0].name
        out: list[list[dict[str, Any]]] = []
        for i in range(0, len(items), p.batch_size):
            chunk = items[i : i + p.batch_size]
            prepared = [letterbox(it.image, p.resolution) for it in chunk]
            (raw,) = sess.run(None, {name: np.stack([a for a, _ in prepared])})
            for it, (_a, side), res in zip(chunk, prepared, raw, strict=True):
                out.append(decode(np.asarray(res), side, it.width, it.height, p.resolution))
        return out

    def counted(self, dets: list[dict[str, Any]]) -> tuple[float, list[dict[str, Any]]]:
        """(score, boxes) of the scored classes: the score is the highest confidence of a
        counted detection (classes with a ``class_thresholds`` entry count only at or above it);
        the boxes are the counted detections at or above their detection threshold."""
        p: NudeNetStage.Params = self.params  # type: ignore[assignment]
        exposed = [
            d
            for d in dets
            if d["class"] in p.classes
            and (d["class"] not in p.class_thresholds or d["score"] >= p.class_thresholds[d["class"]])
        ]
        score = max((d["score"] for d in exposed), default=0.0)
        boxes = [d for d in exposed if d["score"] >= p.class_thresholds.get(d["class"], p.detection_threshold)]
        return score, boxes

    def censored(
        self, item: ImageItem, boxes: list[dict[str, Any]], findings: list[Finding], ctx: ImageContext
    ) -> StageResult:
        """The result of a ``transform``: the image with ``boxes`` censored, and the change."""
        p: NudeNetStage.Params = self.params  # type: ignore[assignment]
        mode = cast(CensorMode, p.censor)
        image = censor(
            item.image, [d["box"] for d in boxes], mode, padding=p.censor_padding, strength=p.censor_strength
        )
        change = Change(
            stage=self.name,
            kind=f"image_{mode}",
            before=item.sha256,
            after=f"{len(boxes)} region(s) censored ({mode})",
            reason=f"censored ({mode}) {len(boxes)} region(s): " + ", ".join(d["class"] for d in boxes),
            category=findings[0].category if findings else None,
        )
        return self.result(findings, phase=ctx.phase, changes=[change], artifacts={"image": image})

    def scan_batch(self, items: Sequence[ImageItem], ctx: ImageContext) -> list[StageResult]:
        p: NudeNetStage.Params = self.params  # type: ignore[assignment]
        results = []
        for item, dets in zip(items, self.detect(items), strict=True):
            score, boxes = self.counted(dets)
            message = (
                f"{len(boxes)} exposed region(s) >= {p.detection_threshold}: "
                + ", ".join(f"{d['class']} {d['score']:.2f}" for d in boxes)
                if boxes
                else f"no exposed region >= {p.detection_threshold}"
            )
            ev = {
                "detector": "nudenet-3.4-320n",
                "detection_threshold": p.detection_threshold,
                "boxes": boxes,
                "classes": list(p.classes),
                "other": [d for d in dets if d["class"] not in p.classes][:10],
            }
            finding = Finding(category=Category.SEXUAL, score=score, evidence=ev, message=message)
            result = self.result([finding], phase=ctx.phase)
            if result.action == Action.TRANSFORM and p.censor != "none" and boxes:
                result = self.censored(item, boxes, [finding], ctx)
            results.append(result)
        return results
