"""Validated inputs: prompts and images, with limits enforced before any model sees them.

Bad input gets a clear :class:`InputError` naming the input; nothing here prints tracebacks or
silently repairs content that could hide something (e.g. a truncated image is an error, not a
partial picture).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from t2iguard.core.errors import InputError
from t2iguard.core.policy import Limits


def validate_prompt(text: Any, limits: Limits, *, source: str | None = None) -> str:
    """Return ``text`` as a clean ``str`` or raise :class:`InputError`.

    Accepts ``str`` and UTF-8 ``bytes``. Rejects other types, invalid UTF-8, unpaired
    surrogates, empty prompts and prompts longer than ``limits.max_prompt_chars``.
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"prompt is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
                source=source,
            ) from None
    if not isinstance(text, str):
        raise InputError(f"prompt must be a string, got {type(text).__name__}", source=source)
    if len(text) > limits.max_prompt_chars:
        raise InputError(
            f"prompt has {len(text):,} characters; the limit is {limits.max_prompt_chars:,}",
            source=source,
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"prompt contains an unpaired surrogate U+{ord(text[exc.start]):04X} at position {exc.start}",
            source=source,
        ) from None
    if not text.strip():
        raise InputError("prompt is empty", source=source)
    return text


@dataclass(frozen=True)
class PromptRecord:
    """One prompt read from a file, with where it came from."""

    text: str
    source: str


def read_prompts(
    path: str | Path, *, column: str | None = None, limits: Limits | None = None
) -> Iterator[PromptRecord | InputError]:
    """Yield prompts from a text file (one per line) or a CSV (``column``).

    Each bad line yields an :class:`InputError` and reading goes on, so one broken record never
    loses the rest of a batch. Raises :class:`InputError` only if the file itself is unusable.
    """
    p = Path(path)
    lim = limits or Limits()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", source=str(p)) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a file", source=str(p)) from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", source=str(p)) from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    if column is None:
        for i, line in enumerate(lines, start=1):
            src = f"{p}:{i}"
            line = line.rstrip(b"\r")
            if not line.strip():
                continue
            try:
                yield PromptRecord(validate_prompt(line, lim, source=src), src)
            except InputError as err:
                yield err
        return
    # CSV: decode line by line so that one invalid line does not lose the file.
    decoded: list[str] = []
    bad: dict[int, InputError] = {}
    for i, line in enumerate(lines, start=1):
        try:
            decoded.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            bad[i] = InputError(
                f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
                source=f"{p}:{i}",
            )
            decoded.append("")
    reader = csv.reader(io.StringIO("\n".join(decoded)))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("CSV file is empty", source=str(p)) from None
    if column not in header:
        raise InputError(f"CSV has no column {column!r}; columns: {', '.join(header)}", source=str(p))
    idx = header.index(column)
    for row in reader:
        lineno = reader.line_num
        if lineno in bad:
            yield bad.pop(lineno)
            continue
        if not row:
            continue
        src = f"{p}:{lineno}"
        if idx >= len(row):
            yield InputError(f"row has no column {column!r}", source=src)
            continue
        try:
            yield PromptRecord(validate_prompt(row[idx], lim, source=src), src)
        except InputError as err:
            yield err


@dataclass(frozen=True)
class ImageItem:
    """A decoded, validated image (always RGB) plus what it was."""

    image: Image.Image
    source: str
    sha256: str
    format: str | None
    original_mode: str
    frames: int = 1
    encoded: bytes | None = None

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def array(self) -> np.ndarray:
        """HxWx3 uint8 RGB."""
        return np.asarray(self.image, dtype=np.uint8)

    @classmethod
    def from_pil(cls, image: Image.Image, source: str = "<image>", limits: Limits | None = None) -> ImageItem:
        return load_image(image, limits=limits, source=source)


ImageSource = str | os.PathLike[str] | bytes | bytearray | Image.Image | np.ndarray | ImageItem


def _check_dimensions(width: int, height: int, limits: Limits, source: str) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"image has invalid size {width}x{height}", source=source)
    if width > limits.max_image_side or height > limits.max_image_side:
        raise InputError(
            f"image is {width}x{height}; the largest side allowed is {limits.max_image_side}px",
            source=source,
        )
    if width * height > limits.max_image_pixels:
        raise InputError(
            f"image is {width}x{height} = {width * height / 1e6:.1f} Mpx, over the "
            f"{limits.max_image_pixels / 1e6:.1f} Mpx limit (possible decompression bomb)",
            source=source,
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB. Transparent areas are composited on white, as a
    viewer would show them."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 65535.0 if hi > 255.0 else 255.0
        if mode == "F" and hi <= 1.0:
            scale = 1.0
        arr8 = np.clip(arr / scale * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(src: ImageSource, *, limits: Limits | None = None, source: str | None = None) -> ImageItem:
    """Decode and validate an image from a path, bytes, a PIL image or an array.

    Enforces the byte, side and pixel limits *before* decoding pixels (decompression bombs are
    rejected from the header), rejects truncated files, applies the EXIF orientation, takes the
    first frame of animations (recording the frame count) and converts to RGB.
    """
    lim = limits or Limits()
    if isinstance(src, ImageItem):
        return src
    encoded: bytes | None = None
    if isinstance(src, str | os.PathLike):
        path = Path(src)
        name = source or str(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise InputError("file not found", source=name) from None
        except OSError as exc:
            raise InputError(f"cannot access file: {exc.strerror or exc}", source=name) from None
        if path.is_dir():
            raise InputError("is a directory, not an image file", source=name)
        if st.st_size > lim.max_image_bytes:
            raise InputError(f"file is {st.st_size:,} bytes; the limit is {lim.max_image_bytes:,}", source=name)
        try:
            encoded = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read file: {exc.strerror or exc}", source=name) from None
        return _decode(encoded, lim, name)
    if isinstance(src, bytes | bytearray):
        name = source or "<bytes>"
        if len(src) > lim.max_image_bytes:
            raise InputError(f"image is {len(src):,} bytes; the limit is {lim.max_image_bytes:,}", source=name)
        return _decode(bytes(src), lim, name)
    if isinstance(src, np.ndarray):
        name = source or "<array>"
        arr = src
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise InputError(f"array of shape {src.shape} is not an image (HxW, HxWx3 or HxWx4)", source=name)
        _check_dimensions(arr.shape[1], arr.shape[0], lim, name)
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
        try:
            pil = Image.fromarray(arr)
        except (TypeError, ValueError) as exc:
            raise InputError(f"array cannot be read as an image: {exc}", source=name) from None
        return _from_pil(pil, lim, name, fmt=None, encoded=None)
    if isinstance(src, Image.Image):
        name = source or "<PIL image>"
        _check_dimensions(src.width, src.height, lim, name)
        return _from_pil(src, lim, name, fmt=src.format, encoded=None)
    raise InputError(
        f"unsupported image input type {type(src).__name__} (expected path, bytes, PIL image or array)",
        source=source,
    )


def _decode(data: bytes, lim: Limits, name: str) -> ImageItem:
    if not data:
        raise InputError("file is empty", source=name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise InputError("not an image, or an unsupported image format", source=name) from None
        except Image.DecompressionBombError as exc:
            raise InputError(
                f"decompression bomb rejected: {exc} (this policy allows {lim.max_image_pixels / 1e6:.1f} Mpx)",
                source=name,
            ) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise InputError(f"cannot decode image: {exc}", source=name) from None
        _check_dimensions(img.width, img.height, lim, name)
        return _from_pil(img, lim, name, fmt=img.format, encoded=data)


def _from_pil(img: Image.Image, lim: Limits, name: str, *, fmt: str | None, encoded: bytes | None) -> ImageItem:
    frames = int(getattr(img, "n_frames", 1) or 1)
    original_mode = img.mode
    try:
        if frames > 1:
            img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        rgb = _to_rgb(img)
        rgb.load()
    except Image.DecompressionBombError as exc:
        raise InputError(f"decompression bomb rejected: {exc}", source=name) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        msg = str(exc) or type(exc).__name__
        raise InputError(f"truncated or corrupt image: {msg}", source=name) from None
    _check_dimensions(rgb.width, rgb.height, lim, name)
    digest = hashlib.sha256(encoded if encoded is not None else rgb.tobytes()).hexdigest()
    if rgb is img:
        rgb = img.copy()
    return ImageItem(
        image=rgb,
        source=name,
        sha256=digest,
        format=fmt,
        original_mode=original_mode,
        frames=frames,
        encoded=encoded,
    )
