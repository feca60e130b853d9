"""The ``http`` generator against a real images server process on loopback (OpenAI images
contract and AUTOMATIC1111's API), alone and inside the stack."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from support.servers import StubServer, images_stub
from t2iguard.core.errors import ConfigurationError
from t2iguard.core.inputs import load_image
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.types import Action, Category, Phase
from t2iguard.generate.base import GenerationRequest, SafetyGuidance
from t2iguard.generate.factory import make_generator
from t2iguard.generate.http_backend import HTTPGenerator


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubServer]:
    with images_stub(tmp_path_factory.mktemp("images")) as srv:
        yield srv


def _last(srv: StubServer, path: str) -> dict:
    return [r for r in srv.requests() if r["path"] == path][-1]


def test_openai_generations(server: StubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T2IGUARD_IMAGES_API_KEY", "sk-test")
    gen = make_generator(f"http:{server.base_url}", model="img-1")
    assert isinstance(gen, HTTPGenerator) and gen.api == "openai"
    out = gen.generate(GenerationRequest(prompt="a cat and a tree", n=2, width=64, height=48))
    assert len(out.images) == 2 and all(im.size == (64, 48) for im in out.images)
    assert out.metadata["api"] == "openai" and out.metadata["revised_prompt"] == "a cat and a tree"
    req = _last(server, "/v1/images/generations")
    assert req["auth"] == "Bearer sk-test"
    assert req["body"] == {
        "prompt": "a cat and a tree",
        "n": 2,
        "size": "64x48",
        "response_format": "b64_json",
        "model": "img-1",
    }


def test_openai_edit_with_mask_keeps_unmasked_pixels(server: StubServer) -> None:
    gen = HTTPGenerator(server.base_url)
    base = Image.new("RGB", (64, 64), (10, 200, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # edit the left half only
    req = GenerationRequest(
        prompt="a knife",
        width=64,
        height=64,
        image=load_image(base, source="base"),
        mask=load_image(mask, source="mask"),
    )
    out = gen.generate(req)
    arr = np.asarray(out.images[0])
    assert (arr[:, 40:] == (10, 200, 30)).all()  # right half untouched
    assert not (arr[:, :32] == (10, 200, 30)).all()  # left half repainted
    sent = _last(server, "/v1/images/edits")
    assert sent["files"] == ["image", "mask"] and sent["body"]["prompt"] == "a knife"
    assert out.metadata["mode"] == "edit"


def test_a1111_txt2img_negative_prompt_as_guidance(server: StubServer) -> None:
    gen = make_generator(f"http:{server.base_url.removesuffix('/v1')}/sdapi/v1")
    assert isinstance(gen, HTTPGenerator) and gen.api == "a1111"
    out = gen.generate(GenerationRequest(prompt="a knife", seed=7, steps=12, guidance_scale=6.0, width=64, height=64))
    assert out.seed == 7 and out.metadata["seeds"] == [7]
    body = _last(server, "/sdapi/v1/txt2img")["body"]
    assert body["seed"] == 7 and body["steps"] == 12 and body["cfg_scale"] == 6.0 and body["negative_prompt"] == ""
    safety = SafetyGuidance((Category.VIOLENCE,), strength="strong", concepts=("knife",))
    out2 = gen.generate(GenerationRequest(prompt="a knife", seed=8, width=64, height=64, safety=safety))
    assert out2.metadata["safety_guidance"] == {"method": "negative_prompt", "concept": "knife", "strength": "strong"}
    assert _last(server, "/sdapi/v1/txt2img")["body"]["negative_prompt"] == "knife"


def test_a1111_inpainting(server: StubServer) -> None:
    gen = HTTPGenerator(server.base_url.removesuffix("/v1") + "/sdapi/v1/txt2img")
    base = Image.new("RGB", (64, 64), (200, 10, 10))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    out = gen.generate(
        GenerationRequest(
            prompt="a cat",
            width=64,
            height=64,
            image=load_image(base, source="b"),
            mask=load_image(mask, source="m"),
            strength=0.6,
        )
    )
    arr = np.asarray(out.images[0])
    assert (arr[:, :30] == (200, 10, 10)).all()
    sent = _last(server, "/sdapi/v1/img2img")
    assert sent["has_init"] and sent["has_mask"] and sent["body"]["denoising_strength"] == 0.6
    assert out.metadata["mode"] == "inpaint"


@pytest.mark.parametrize("prompt", ["http500 please", "garbage image", "empty answer"])
def test_server_errors_raise(server: StubServer, prompt: str) -> None:
    gen = HTTPGenerator(server.base_url)
    with pytest.raises(RuntimeError):
        gen.generate(GenerationRequest(prompt=prompt, width=64, height=64))


def test_bad_urls_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="needs a URL"):
        make_generator("http")
    with pytest.raises(ConfigurationError, match="not an http"):
        HTTPGenerator("ftp://example")
    with pytest.raises(ConfigurationError, match="api must be"):
        HTTPGenerator("http://127.0.0.1:9", api="comfy")


def test_stack_fails_closed_when_the_endpoint_errors(server: StubServer) -> None:
    stack = SafetyStack(generator=HTTPGenerator(server.base_url))
    out = stack.generate(GenerationRequest(prompt="http500 a tree", width=64, height=64))
    d = out.decision
    assert d.action == Action.BLOCK and out.images == []
    assert d.attempts and d.attempts[0].trace[0].phase == Phase.GENERATE
    assert "HTTP 500" in (d.attempts[0].trace[0].error or "")
    assert any("HTTP 500" in e for e in d.errors) or "HTTP 500" in d.reason


def test_stack_regenerates_through_a1111_negative_prompts(server: StubServer) -> None:
    from t2iguard.cli.generate import resolve_policy

    gen = HTTPGenerator(server.base_url.removesuffix("/v1") + "/sdapi/v1")
    stack = SafetyStack(resolve_policy("tiny-demo", "http"), generator=gen)
    out = stack.generate(
        GenerationRequest(prompt="a knife and a tree on a blue background", seed=3, width=64, height=64)
    )
    d = out.decision
    assert len(d.attempts) >= 2
    first, last = d.attempts[0], d.attempts[-1]
    assert first.action == Action.REGENERATE and first.guidance == {}
    assert last.guidance["concepts"] == ["knife"] and last.guidance["strength"] == "medium"
    assert last.generation["safety_guidance"]["method"] == "negative_prompt"
    assert d.action == Action.ALLOW and len(out.images) == 1
