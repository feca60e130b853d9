"""Faces with dlib: detection, 5-point landmarks, identity embeddings and skin colour.

* Detection: dlib's HOG + linear SVM frontal face detector (Dalal & Triggs, CVPR 2005), built
  into dlib. Optionally the MMOD CNN detector (King, *Max-Margin Object Detection*, 2015).
* Landmarks: the 5-point shape predictor (Kazemi & Sullivan, *One Millisecond Face Alignment
  with an Ensemble of Regression Trees*, CVPR 2014).
* Identity: dlib's ResNet face embedding (128-D; 99.38 % on LFW; the same person when the
  Euclidean distance is under 0.6).
* Skin colour: the median CIELAB colour of the cheek band below the eyes, compared with CIE76
  ΔE (a perceptual colour difference; ~2.3 is a just-noticeable difference).

Models come from ``face-recognition-models`` (MIT package; the model files are Davis King's
public-domain releases). The 68-point landmark model in the same package was trained on iBUG
300-W, whose licence excludes commercial use: t2iguard never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from t2iguard.core.errors import MissingDependencyError
from t2iguard.core.stage import ModelCache
from t2iguard.image.onnx import package_file

SAME_PERSON_DISTANCE = 0.6  # dlib's recommended threshold for the ResNet embedding


def _dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise MissingDependencyError("dlib-bin", "faces", "face detection") from exc
    return dlib


def _model(name: str) -> str:
    return str(package_file("face_recognition_models", f"models/{name}", extra="faces", purpose="face analysis"))


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (uint8 or [0, 1] floats, ...x3) to CIELAB (D65), per IEC 61966-2-1 and CIE 15."""
    c = np.asarray(rgb, dtype=np.float64)
    if c.max(initial=0.0) > 1.0:
        c = c / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    L = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


@dataclass
class Face:
    """One detected face: box (x, y, w, h), detector score, 5 landmarks, embedding, skin Lab."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: list[tuple[int, int]] = field(default_factory=list)
    embedding: np.ndarray | None = None
    skin_lab: tuple[float, float, float] | None = None

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": list(self.box),
            "score": round(self.score, 3),
            "skin_lab": [round(v, 2) for v in self.skin_lab] if self.skin_lab else None,
        }


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def skin_region(face: Face, width: int, height: int) -> tuple[int, int, int, int]:
    """The cheek band: from just below the eyes to the nose tip, inside the outer eye corners
    (5-point model: 0-1 one eye's corners, 2-3 the other's, 4 the base of the nose); the middle
    of the box when there are no landmarks."""
    x, y, w, h = face.box
    if len(face.landmarks) == 5:
        pts = np.asarray(face.landmarks, dtype=np.float64)
        eyes_y = pts[:4, 1].mean()
        nose_y = pts[4, 1]
        span = max(4.0, nose_y - eyes_y)
        x0, x1 = pts[:4, 0].min(), pts[:4, 0].max()
        y0, y1 = eyes_y + 0.35 * span, nose_y + 0.15 * span
    else:
        x0, x1, y0, y1 = x + 0.2 * w, x + 0.8 * w, y + 0.45 * h, y + 0.7 * h
    x0, x1 = int(max(0, x0)), int(min(width, x1))
    y0, y1 = int(max(0, y0)), int(min(height, y1))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def skin_lab(rgb: np.ndarray, region: tuple[int, int, int, int]) -> tuple[float, float, float]:
    """Median CIELAB of a region, ignoring near-black and near-white pixels (hair, glare)."""
    x, y, w, h = region
    patch = rgb[y : y + h, x : x + w].reshape(-1, 3)
    lab = srgb_to_lab(patch)
    keep = (lab[:, 0] > 8) & (lab[:, 0] < 97)
    sel = lab[keep] if keep.sum() >= 16 else lab
    med = np.median(sel, axis=0)
    return float(med[0]), float(med[1]), float(med[2])


def delta_e76(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


class FaceAnalyzer:
    """Detects faces and computes what the edit and minors checks need. Models load once per
    :class:`ModelCache`; dlib's objects are used under a lock (they are not thread-safe)."""

    def __init__(self, models: ModelCache, *, detector: str = "hog", min_score: float = 0.0) -> None:
        self.models = models
        self.detector_kind = detector
        self.min_score = min_score

    def _models(self) -> dict[str, Any]:
        def load() -> dict[str, Any]:
            import threading

            dlib = _dlib()
            out: dict[str, Any] = {
                "hog": dlib.get_frontal_face_detector(),
                "shape": dlib.shape_predictor(_model("shape_predictor_5_face_landmarks.dat")),
                "rec": dlib.face_recognition_model_v1(_model("dlib_face_recognition_resnet_model_v1.dat")),
                "lock": threading.Lock(),
            }
            return out

        models = self.models.get("dlib-faces", load)
        if self.detector_kind == "cnn" and "cnn" not in models:
            dlib = _dlib()
            models["cnn"] = self.models.get(
                "dlib-cnn", lambda: dlib.cnn_face_detection_model_v1(_model("mmod_human_face_detector.dat"))
            )
        return models

    def warmup(self) -> None:
        self._models()

    def detect(self, image: Image.Image, *, embed: bool = True, upsample: int | None = None) -> list[Face]:
        """Faces, largest first. Small images are upsampled once so ~40 px faces are found."""
        m = self._models()
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        up = upsample if upsample is not None else (1 if max(image.size) < 400 else 0)
        with m["lock"]:
            if self.detector_kind == "cnn":
                dets = m["cnn"](rgb, up)
                rects = [(d.rect, float(d.confidence)) for d in dets]
            else:
                found, scores, _ = m["hog"].run(rgb, up, self.min_score)
                rects = list(zip(found, (float(s) for s in scores), strict=True))
            faces: list[Face] = []
            for rect, score in rects:
                x0, y0 = max(0, rect.left()), max(0, rect.top())
                x1, y1 = min(rgb.shape[1], rect.right()), min(rgb.shape[0], rect.bottom())
                if x1 <= x0 or y1 <= y0:
                    continue
                shape = m["shape"](rgb, rect)
                face = Face(
                    box=(x0, y0, x1 - x0, y1 - y0),
                    score=score,
                    landmarks=[(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)],
                )
                if embed:
                    face.embedding = np.asarray(m["rec"].compute_face_descriptor(rgb, shape), dtype=np.float64)
                face.skin_lab = skin_lab(rgb, skin_region(face, rgb.shape[1], rgb.shape[0]))
                faces.append(face)
        faces.sort(key=lambda f: -f.area)
        return faces


def match_faces(before: list[Face], after: list[Face], min_iou: float = 0.3) -> list[tuple[Face, Face | None]]:
    """Pair each face of ``before`` with the face of ``after`` at the same place (highest IoU
    at least ``min_iou``); ``None`` when the face is gone."""
    pairs: list[tuple[Face, Face | None]] = []
    used: set[int] = set()
    for f in before:
        best, best_iou = None, min_iou
        for j, g in enumerate(after):
            if j in used:
                continue
            v = iou(f.box, g.box)
            if v >= best_iou:
                best, best_iou = j, v
        if best is not None:
            used.add(best)
            pairs.append((f, after[best]))
        else:
            pairs.append((f, None))
    return pairs
