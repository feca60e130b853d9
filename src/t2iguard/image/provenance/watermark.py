"""Invisible watermarks with ``invisible-watermark`` (the library Stable Diffusion uses).

Three methods, as the library names them:

* ``dwtDct`` — DWT + DCT frequency embedding (Cox et al., *Secure spread spectrum watermarking for
  multimedia*, IEEE TIP 1997; Al-Haj, *Combined DWT-DCT digital image watermarking*, 2007). Fast,
  and the method Stable Diffusion 1.x/2.x and SDXL use for their own marks, so the detector also
  recognises those (:data:`KNOWN_MARKS`).
* ``dwtDctSvd`` — adds SVD on the DCT blocks (Ganic & Eskicioglu, 2004): slower, more robust.
* ``rivaGan`` — a learned encoder/decoder (Zhang et al., *Robust Invisible Video Watermarking with
  Attention*, 2019); the ONNX models ship in the wheel. It carries exactly 32 bits.

The payload identifies the request in the audit log: the first bits of the decision id followed by
a CRC-16 over them, so that a detector can tell a real mark from noise (an unmarked image passes
the CRC with probability 2^-16). ``dwtDct``/``dwtDctSvd`` carry 48 id bits (12 hex digits of the
decision id), ``rivaGan`` 16 (4 hex digits; combine with the time and the C2PA manifest).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from t2iguard.core.errors import ConfigurationError, InputError, MissingDependencyError, StageError
from t2iguard.core.inputs import ImageItem
from t2iguard.core.stage import ImageContext, ProvenanceOutput, ProvenanceStage

Method = Literal["dwtDct", "dwtDctSvd", "rivaGan"]
METHODS: tuple[Method, ...] = ("dwtDct", "dwtDctSvd", "rivaGan")
CRC_BITS = 16
ID_BITS: dict[str, int] = {"dwtDct": 48, "dwtDctSvd": 48, "rivaGan": 16}
MIN_PIXELS = 256 * 256  # the library refuses smaller images
HEADROOM = (0.94, 0.88)  # range compressions tried when a mark does not read back

# Marks other generators embed with dwtDct, recognised by the detector.
_SDXL = 0b101100111110110010010000011110111011000110011110
KNOWN_MARKS: dict[str, list[int]] = {
    # diffusers' StableDiffusionXLWatermarker (48 bits)
    "stable-diffusion-xl": [int(b) for b in bin(_SDXL)[2:]],
    # CompVis/Stability scripts for SD 1.x/2.x: the bytes "StableDiffusionV1"
    "stable-diffusion-v1/v2": [int(b) for b in np.unpackbits(np.frombuffer(b"StableDiffusionV1", dtype=np.uint8))],
}
KNOWN_MARK_MIN_ACCURACY = 0.9

_riva_lock = threading.Lock()


def _lib() -> Any:
    try:
        from imwatermark import WatermarkDecoder, WatermarkEncoder
    except ImportError as exc:
        raise MissingDependencyError("invisible-watermark", "provenance", "invisible watermarking") from exc
    return WatermarkEncoder, WatermarkDecoder


def crc16(bits: list[int]) -> list[int]:
    """CRC-16/CCITT-FALSE of a bit sequence, as 16 bits (MSB first)."""
    reg = 0xFFFF
    for b in bits:
        top = (reg >> 15) & 1
        reg = (reg << 1) & 0xFFFF
        if top ^ (b & 1):
            reg ^= 0x1021
    return [(reg >> (15 - i)) & 1 for i in range(16)]


def payload_bits(payload_hex: str, method: Method) -> list[int]:
    """The bits embedded for ``payload_hex`` (a decision id): id prefix + CRC-16."""
    n = ID_BITS[method]
    digits = payload_hex.lower().replace("-", "")[: n // 4]
    if len(digits) < n // 4 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"watermark payload must start with {n // 4} hex digits, got {payload_hex!r}")
    value = int(digits, 16)
    bits = [(value >> (n - 1 - i)) & 1 for i in range(n)]
    return bits + crc16(bits)


@dataclass
class Detection:
    """What the detector read from an image."""

    method: str
    bits: list[int]
    payload: str | None  # hex id prefix when the CRC matches, else None
    crc_ok: bool
    known_marks: dict[str, float] = field(default_factory=dict)  # name -> bit accuracy (>= 0.9 only)

    @property
    def found(self) -> bool:
        return self.crc_ok

    def bit_accuracy(self, expected: list[int]) -> float:
        n = min(len(expected), len(self.bits))
        return float(np.mean(np.asarray(self.bits[:n]) == np.asarray(expected[:n]))) if n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "found": self.found, "payload": self.payload, "known_marks": self.known_marks}


def _bgr(image: Image.Image) -> np.ndarray:
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr[:, :, ::-1])


def _check_size(image: Image.Image) -> None:
    if image.width * image.height < MIN_PIXELS:
        raise InputError(f"image is {image.width}x{image.height}; invisible watermarks need at least 256x256 pixels")


class WatermarkCodec:
    """Embeds and reads t2iguard's payload with one ``invisible-watermark`` method."""

    def __init__(self, method: Method = "dwtDct") -> None:
        if method not in METHODS:
            raise ConfigurationError(f"unknown watermark method {method!r}; one of {', '.join(METHODS)}")
        self.method: Method = method
        self.length = ID_BITS[method] + CRC_BITS
        _lib()
        if method == "rivaGan":
            self._load_riva()

    @staticmethod
    def _load_riva() -> None:
        _, dec = _lib()
        with _riva_lock:
            dec.loadModel()

    def embed_bits(self, image: Image.Image, bits: list[int]) -> Image.Image:
        _check_size(image)
        enc_cls, _ = _lib()
        enc = enc_cls()
        enc.set_watermark("bits", bits)
        out = enc.encode(_bgr(image), self.method)
        return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)[:, :, ::-1].copy(), "RGB")

    def read_bits(self, image: Image.Image, length: int | None = None) -> list[int]:
        _check_size(image)
        _, dec_cls = _lib()
        dec = dec_cls("bits", length or self.length)
        bits = dec.decode(_bgr(image), self.method)
        return [int(b) for b in np.asarray(bits).reshape(-1)]

    def embed(self, image: Image.Image, payload_hex: str, *, verify: bool = True) -> Image.Image:
        """``image`` with the payload (a decision id) embedded.

        With ``verify`` the mark is read back; where it does not survive (the DCT methods lose
        bits where the embedding clips at black or white), the image's range is compressed by
        6 % and then 12 % before embedding again (:data:`HEADROOM`). Raises :class:`StageError`
        when no attempt reads back."""
        bits = payload_bits(payload_hex, self.method)
        n = ID_BITS[self.method] // 4
        want = payload_hex.lower().replace("-", "")[:n]
        marked = self.embed_bits(image, bits)
        if not verify:
            return marked
        for gain in (None, *HEADROOM):
            if gain is not None:
                arr = np.asarray(image.convert("RGB"), dtype=np.float32)
                src = Image.fromarray(np.clip(arr * gain + 127.5 * (1 - gain), 0, 255).round().astype(np.uint8))
                marked = self.embed_bits(src, bits)
            if self.detect(marked, known_marks=False).payload == want:
                return marked
        raise StageError(f"the {self.method} watermark does not read back from this image")

    def detect(self, image: Image.Image, *, known_marks: bool = True) -> Detection:
        """Read the payload; ``payload`` is set only when its CRC-16 matches."""
        bits = self.read_bits(image)
        n = ID_BITS[self.method]
        data, crc = bits[:n], bits[n:]
        ok = crc16(data) == crc
        payload = f"{int(''.join(map(str, data)), 2):0{n // 4}x}" if ok else None
        found: dict[str, float] = {}
        if known_marks and self.method == "dwtDct":
            for name, ref in KNOWN_MARKS.items():
                got = self.read_bits(image, len(ref))
                acc = float(np.mean(np.asarray(got) == np.asarray(ref)))
                if acc >= KNOWN_MARK_MIN_ACCURACY:
                    found[name] = round(acc, 4)
        return Detection(method=self.method, bits=bits, payload=payload, crc_ok=ok, known_marks=found)


def detect_all(image: Image.Image, methods: Sequence[Method] = ("dwtDct", "dwtDctSvd")) -> list[Detection]:
    """Run the detector of each method (``rivaGan`` is slow on CPU: ask for it explicitly)."""
    return [WatermarkCodec(m).detect(image) for m in methods]


class WatermarkStage(ProvenanceStage):
    """Embeds the decision id (+ CRC-16) as an invisible watermark in each released image."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        method: Method = Field(default="dwtDctSvd", description="dwtDct (SD-compatible), dwtDctSvd, rivaGan")
        small_images: Literal["skip", "error"] = Field(
            default="skip", description="images under 256x256 cannot carry a mark: skip them or fail"
        )
        verify: bool = Field(
            default=True,
            description="read the mark back (retrying with a little range headroom); fail closed if unreadable",
        )

    def _codec(self) -> WatermarkCodec:
        p: WatermarkStage.Params = self.params  # type: ignore[assignment]
        return self.models.get(("watermark", p.method), lambda: WatermarkCodec(p.method))

    def warmup(self) -> None:
        self._codec()

    def apply(self, items: Sequence[ImageItem], payload: str, ctx: ImageContext) -> list[ProvenanceOutput]:
        p: WatermarkStage.Params = self.params  # type: ignore[assignment]
        codec = self._codec()
        n = ID_BITS[p.method] // 4
        out = []
        for item in items:
            if item.width * item.height < MIN_PIXELS and p.small_images == "skip":
                out.append(
                    ProvenanceOutput(image=item.image, payload=None, details={"watermark": "skipped: under 256x256"})
                )
                continue
            marked = codec.embed(item.image, payload, verify=p.verify)
            tag = f"{p.method}:{payload[:n].lower()}"
            ctx.metadata["watermark"] = tag
            out.append(ProvenanceOutput(image=marked, payload=tag, details={"watermark": tag}))
        return out
