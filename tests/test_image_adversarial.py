"""Corrupt and adversarial images through the image checks, the edit check and the provenance
commands: each gets a clear error or is normalised, and the rest of a batch is still checked."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("nudenet")
skimage_data = pytest.importorskip("skimage.data")

from t2iguard.cli.main import app  # noqa: E402
from t2iguard.core.errors import InputError  # noqa: E402
from t2iguard.core.pipeline import SafetyStack  # noqa: E402
from t2iguard.core.policy import policy_from_dict  # noqa: E402
from t2iguard.core.stage import ModelCache  # noqa: E402
from t2iguard.core.types import Action  # noqa: E402
from t2iguard.generate.base import GenerationRequest, GenerationResult  # noqa: E402

MODELS = ModelCache()


def _png(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def photo() -> Image.Image:
    return Image.fromarray(skimage_data.chelsea())


def _variants() -> dict[str, bytes]:
    p = photo()
    out: dict[str, bytes] = {}
    out["palette"] = _png(p.convert("P", palette=Image.Palette.ADAPTIVE))
    rgba = p.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(p.size))
    out["alpha"] = _png(rgba)
    buf = io.BytesIO()
    p.convert("CMYK").save(buf, "JPEG", quality=90)
    out["cmyk"] = buf.getvalue()
    arr16 = (np.asarray(p.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    out["gray16"] = _png(Image.fromarray(arr16))
    frames = [p, p.rotate(90), p.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out["animated"] = buf.getvalue()
    return out


def _bad() -> dict[str, bytes]:
    full = _png(photo())
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")  # 400 Mpx of zeros: a few KB on disk
    return {
        "truncated": full[: len(full) // 2],
        "garbage": b"GIF89a" + bytes(200),
        "empty": b"",
        "text": b"hello, I am not an image",
        "bomb": bomb.getvalue(),
    }


def _stack(**kw: object) -> SafetyStack:
    return SafetyStack(
        policy_from_dict({"name": "img", "stages": [{"stage": "nsfw"}, {"stage": "nudity"}]}), models=MODELS, **kw
    )


def test_unusual_modes_are_normalised_and_checked() -> None:
    variants = _variants()
    decisions = _stack().check_images(list(variants.values()), sources=list(variants))
    for name, d in zip(variants, decisions, strict=True):
        assert not isinstance(d, InputError), (name, d)
        assert d.action == Action.ALLOW and {r.stage for r in d.stages} == {"nsfw", "nudity"}, name
        assert d.errors == []


def test_corrupt_inputs_get_clear_errors_and_the_batch_goes_on() -> None:
    bad = _bad()
    batch = [*bad.values(), _png(photo())]
    out = _stack().check_images(batch, sources=[*bad, "good"])
    *errors, good = out
    assert not isinstance(good, InputError) and good.action == Action.ALLOW
    msgs = {name: str(e) for name, e in zip(bad, errors, strict=True)}
    assert all(isinstance(e, InputError) for e in errors), msgs
    assert "truncated" in msgs["truncated"] or "corrupt" in msgs["truncated"]
    assert "decompression bomb" in msgs["bomb"]
    assert "empty" in msgs["empty"]
    assert "not an image" in msgs["text"]
    assert msgs["garbage"].startswith("garbage:")


def test_huge_dimensions_are_rejected_before_decoding() -> None:
    policy = policy_from_dict({"name": "small", "limits": {"max_image_side": 1000}, "stages": [{"stage": "nsfw"}]})
    stack = SafetyStack(policy, models=MODELS)
    with pytest.raises(InputError, match="largest side allowed is 1000px"):
        stack.check_image(Image.new("RGB", (1200, 10)))


class _Generator:
    name = "stub"

    def __init__(self, image: object) -> None:
        self.image = image

    def generate(self, request: GenerationRequest) -> GenerationResult:
        return GenerationResult(images=[self.image], seed=0)  # type: ignore[list-item]


def test_generator_returning_garbage_fails_closed() -> None:
    out = _stack(generator=_Generator(np.zeros((4, 4, 7)))).generate(GenerationRequest(prompt="a cat"))
    assert out.decision.action == Action.BLOCK and out.images == []
    assert "generator output unusable" in out.decision.errors[0]


def test_edit_check_with_alpha_upload_and_palette_mask() -> None:
    pytest.importorskip("dlib")
    variants = _variants()
    policy = policy_from_dict({"name": "e", "stages": [{"stage": "edit_transform"}]})
    stack = SafetyStack(policy, models=MODELS, generator=_Generator(photo()))
    from t2iguard.core.inputs import load_image

    mask = Image.new("P", photo().size, 0)
    mask.putpalette([0, 0, 0, 255, 255, 255])
    mask.paste(1, (0, 0, 100, 100))
    req = GenerationRequest(prompt="add a hat", image=load_image(variants["alpha"]), mask=load_image(mask))
    out = stack.generate(req)
    assert out.decision.errors == [] and out.decision.action == Action.ALLOW


def test_provenance_verify_on_corrupt_files(tmp_path: Path) -> None:
    pytest.importorskip("imwatermark")
    bad = _bad()
    paths = []
    for name in ("truncated", "text"):
        p = tmp_path / f"{name}.png"
        p.write_bytes(bad[name])
        paths.append(str(p))
    small = tmp_path / "small.png"
    small.write_bytes(_png(Image.new("RGB", (64, 64))))
    res = CliRunner().invoke(app, ["provenance", "verify", "--json", *paths, str(small)])
    assert res.exit_code == 1
    lines = res.stdout.splitlines()
    assert "truncated or corrupt" in lines[0] and "not an image" in lines[1]
    assert "at least 256x256" in lines[2]  # too small to carry a mark: said, not crashed
