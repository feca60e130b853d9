"""Bad input: clear errors naming the input, nothing lost, no silent repair."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2iguard import InputError
from t2iguard.core.inputs import PromptRecord, load_image, read_prompts, validate_prompt
from t2iguard.core.policy import Limits


def png_bytes(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (the IDAT is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


# ---- prompts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("   \n\t", "empty"),
        ("x" * 4001, "4,001 characters; the limit is 4,000"),
        ("a" * (1 << 20), "1,048,576 characters"),
        (b"caf\xe9", "not valid UTF-8 (byte 0xe9 at offset 3)"),
        ("bad \ud800 surrogate", "unpaired surrogate U+D800 at position 4"),
        (None, "must be a string, got NoneType"),
        (["a list"], "must be a string, got list"),
    ],
)
def test_bad_prompts(value: object, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)) as err:
        validate_prompt(value, Limits(), source="<prompt 7>")
    assert err.value.source == "<prompt 7>"


def test_prompt_limit_is_configurable() -> None:
    assert validate_prompt(b"caf\xc3\xa9", Limits(max_prompt_chars=4)) == "café"
    with pytest.raises(InputError):
        validate_prompt("abcde", Limits(max_prompt_chars=4))


def test_prompt_file_keeps_going_after_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "prompts.txt"
    f.write_bytes(b"\xef\xbb\xbfa calm lake\n\nbad \xff line\r\n" + b"y" * 5000 + b"\na red barn\n")
    out = list(read_prompts(f))
    assert [type(o).__name__ for o in out] == ["PromptRecord", "InputError", "InputError", "PromptRecord"]
    assert out[0] == PromptRecord("a calm lake", f"{f}:1")
    assert str(out[1]).startswith(f"{f}:3: prompt is not valid UTF-8")
    assert out[3].text == "a red barn"  # type: ignore[union-attr]


def test_prompt_csv_with_column(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_bytes(b'id,prompt\n1,"a lake, at dawn"\n2,\xff\xfe\n3,""\n4\n5,"multi\nline"\n')
    out = list(read_prompts(f, column="prompt"))
    assert isinstance(out[0], PromptRecord) and out[0].text == "a lake, at dawn"
    assert [type(o).__name__ for o in out] == ["PromptRecord", "InputError", "InputError", "InputError", "PromptRecord"]
    assert out[-1].text == "multi\nline"  # type: ignore[union-attr]
    with pytest.raises(InputError, match="no column 'text'; columns: id, prompt"):
        list(read_prompts(f, column="text"))


def test_unreadable_prompt_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        list(read_prompts(tmp_path / "nope.txt"))
    with pytest.raises(InputError, match="is a directory"):
        list(read_prompts(tmp_path))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="CSV file is empty"):
        list(read_prompts(tmp_path / "empty.csv", column="prompt"))


# ---- images -----------------------------------------------------------------------------


def test_decompression_bomb_is_rejected_from_the_header() -> None:
    data = bomb_png(60_000, 60_000)
    assert len(data) < 200
    # far over Pillow's own guard: rejected while opening, naming our limit too
    with pytest.raises(InputError, match=r"decompression bomb.*3600000000 pixels.*allows 40\.0 Mpx"):
        load_image(data, source="bomb.png")
    # over our limit but under Pillow's: rejected from the header by our check
    with pytest.raises(InputError, match=r"9000x9000 = 81\.0 Mpx, over the 40\.0 Mpx limit"):
        load_image(bomb_png(9_000, 9_000), source="bomb.png")
    with pytest.raises(InputError, match="largest side allowed is 16384px"):
        load_image(bomb_png(20_000, 10), source="wide.png")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "file is empty"),
        (b"this is not an image at all", "not an image"),
        (png_bytes(Image.new("RGB", (64, 64)))[:60], "truncated or corrupt"),
        (b"GIF89a" + b"\x00" * 20, "cannot decode|truncated|not an image"),
    ],
)
def test_corrupt_images(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_image(data, source="upload")


def test_byte_limit_and_paths(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(Image.new("RGB", (64, 64))))
    with pytest.raises(InputError, match="the limit is 10"):
        load_image(big, limits=Limits(max_image_bytes=10))
    with pytest.raises(InputError, match="file not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(InputError, match="unsupported image input type int"):
        load_image(42)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not an image"):
        load_image(np.zeros((4, 4, 7), dtype=np.uint8))


@pytest.mark.parametrize(
    ("make", "mode"),
    [
        (lambda: Image.new("P", (32, 32), 3), "P"),
        (lambda: Image.new("RGBA", (32, 32), (255, 0, 0, 0)), "RGBA"),
        (lambda: Image.new("LA", (32, 32), (10, 128)), "LA"),
        (lambda: Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "CMYK"),
        (lambda: Image.new("I;16", (32, 32), 40000), "I;16"),
        (lambda: Image.new("1", (32, 32), 1), "1"),
        (lambda: Image.new("F", (32, 32), 0.5), "F"),
    ],
)
def test_every_mode_becomes_rgb(make, mode: str) -> None:  # type: ignore[no-untyped-def]
    img = make()
    item = load_image(img)
    assert item.image.mode == "RGB" and item.original_mode == mode and item.size == (32, 32)
    if mode == "RGBA":  # fully transparent red is shown as the white background
        assert item.array()[0, 0].tolist() == [255, 255, 255]
    if mode == "I;16":  # 16-bit values are scaled, not clipped to white
        assert 150 < item.array()[0, 0, 0] < 160


def test_animated_gif_takes_first_frame_and_counts_frames() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    item = load_image(buf.getvalue(), source="anim.gif")
    assert item.frames == 3 and item.format == "GIF"
    assert item.array()[0, 0].tolist()[0] > 200


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    assert load_image(buf.getvalue()).size == (20, 40)


def test_hash_identifies_the_bytes() -> None:
    data = png_bytes(Image.new("RGB", (8, 8), (1, 2, 3)))
    a, b = load_image(data), load_image(data)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    assert load_image(png_bytes(Image.new("RGB", (8, 8), (1, 2, 4)))).sha256 != a.sha256
