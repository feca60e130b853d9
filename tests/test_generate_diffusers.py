"""The ``diffusers`` backend on SD 1.x and SDXL pipelines built from tiny configs with random
weights (the real diffusers code paths), loaded from disk the way users give checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from support.tiny_sd import build_sd, build_sdxl
from t2iguard.core.errors import ConfigurationError
from t2iguard.core.inputs import load_image
from t2iguard.core.types import Category
from t2iguard.generate.base import GenerationRequest, SafetyGuidance
from t2iguard.generate.diffusers_backend import DiffusersGenerator
from t2iguard.generate.factory import make_generator


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sd15")
    build_sd().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sdxl")
    build_sdxl().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def gens(sd_dir: Path, sdxl_dir: Path) -> dict[str, DiffusersGenerator]:
    out = {}
    for name, path in (("sd", sd_dir), ("sdxl", sdxl_dir)):
        gen = make_generator(f"diffusers:{path}", steps=2, device="cpu")
        assert isinstance(gen, DiffusersGenerator)
        out[name] = gen
    return out


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32)


def _edit_inputs(side: int = 32) -> tuple[GenerationRequest, Image.Image]:
    base = Image.new("RGB", (side, side), (200, 10, 10))
    mask = Image.new("L", (side, side), 0)
    mask.paste(255, (0, 0, side // 2, side))  # repaint the left half
    req = GenerationRequest(
        prompt="a cat",
        width=side,
        height=side,
        seed=1,
        image=load_image(base, source="base"),
        mask=load_image(mask, source="mask"),
        strength=0.9,
    )
    return req, base


@pytest.mark.parametrize("which", ["sd", "sdxl"])
def test_txt2img_seeded_and_sld(which: str, gens: dict[str, DiffusersGenerator]) -> None:
    gen = gens[which]
    req = GenerationRequest(prompt="a cat", width=32, height=32, seed=5, n=2)
    a, b = gen.generate(req), gen.generate(req)
    assert len(a.images) == 2 and a.images[0].size == (32, 32)
    assert np.array_equal(_arr(a.images[0]), _arr(b.images[0]))  # same seed, same pixels
    assert a.metadata["seeds"] == [5, 6] and a.metadata["mode"] == "txt2img"
    safe = gen.generate(req.with_changes(safety=SafetyGuidance((Category.VIOLENCE,), strength="max")))
    sg = safe.metadata["safety_guidance"]
    assert sg["method"] == "sld" and sg["preset"] == "max" and sg["sld_active_steps"] == 2
    assert "violence" in sg["concept"]
    assert not np.array_equal(_arr(a.images[0]), _arr(safe.images[0]))  # guidance changed the sample


@pytest.mark.parametrize("which", ["sd", "sdxl"])
def test_img2img_and_inpainting(which: str, gens: dict[str, DiffusersGenerator]) -> None:
    gen = gens[which]
    req, _ = _edit_inputs()
    out = gen.generate(req)
    arr = _arr(out.images[0])
    assert out.metadata["mode"] == "inpaint"
    assert (arr[:, 16:] == (200, 10, 10)).all()  # outside the mask: the input, exactly
    assert not (arr[:, :16] == (200, 10, 10)).all()
    i2i = gen.generate(req.with_changes(mask=None, strength=0.5))
    assert i2i.metadata["mode"] == "img2img" and i2i.images[0].size == (32, 32)
    guided = gen.generate(req.with_changes(safety=SafetyGuidance((Category.SEXUAL,), strength="strong")))
    assert guided.metadata["safety_guidance"]["sld_active_steps"] >= 1
    assert (_arr(guided.images[0])[:, 16:] == (200, 10, 10)).all()


def test_inpainting_checkpoint_uses_the_inpaint_pipeline(tmp_path: Path) -> None:
    build_sd(in_channels=9).save_pretrained(tmp_path)
    gen = DiffusersGenerator(str(tmp_path), steps=2)
    req, _ = _edit_inputs()
    out = gen.generate(req)
    assert gen._native_inpaint("inpaint") and type(gen._variant("inpaint")).__name__ == "StableDiffusionInpaintPipeline"
    assert (_arr(out.images[0])[:, 16:] == (200, 10, 10)).all()


def test_clear_errors_for_wrong_paths(tmp_path: Path, gens: dict[str, DiffusersGenerator]) -> None:
    with pytest.raises(ConfigurationError, match="needs a checkpoint"):
        make_generator("diffusers")
    with pytest.raises(ConfigurationError, match="not found"):
        make_generator(f"diffusers:{tmp_path / 'nope'}")
    with pytest.raises(ConfigurationError, match=r"no model_index\.json"):
        DiffusersGenerator(str(tmp_path))
    other = tmp_path / "flux"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ConfigurationError, match=r"FluxPipeline pipeline"):
        DiffusersGenerator(str(other))
    txt = tmp_path / "model.bin"
    txt.write_bytes(b"\0")
    with pytest.raises(ConfigurationError, match="expected a diffusers folder"):
        DiffusersGenerator(str(txt))
    gen = gens["sd"]
    with pytest.raises(ValueError, match="multiples of 2"):
        gen.generate(GenerationRequest(prompt="x", width=33, height=32))
    with pytest.raises(ValueError, match="n must be"):
        gen.generate(GenerationRequest(prompt="x", n=0, width=32, height=32))


def test_single_file_checkpoints_never_download(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    not_sd = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(2)}, str(not_sd))
    with pytest.raises(ConfigurationError, match="not a Stable Diffusion checkpoint"):
        DiffusersGenerator(str(not_sd))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigurationError, match="not a readable safetensors"):
        DiffusersGenerator(str(broken))
    sd = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(sd))
    xl = tmp_path / "sdxl.safetensors"
    save_file(
        {"model.diffusion_model.x": torch.zeros(1), "conditioner.embedders.1.model.ln_final.weight": torch.zeros(1)},
        str(xl),
    )
    assert DiffusersGenerator(str(xl))._kind == "sdxl"
    gen = DiffusersGenerator(str(sd))
    assert gen._kind == "sd"
    with pytest.raises(ConfigurationError, match="never downloaded; pass config=DIR"):
        gen.generate(GenerationRequest(prompt="x", width=32, height=32))
    # with a config the load is attempted offline only; a bogus checkpoint fails loudly, not online
    gen = DiffusersGenerator(str(sd), config=str(tmp_path / "no-such-config"))
    with pytest.raises(ConfigurationError, match=r"cannot load single-file checkpoint .* offline"):
        gen.generate(GenerationRequest(prompt="x", width=32, height=32))
