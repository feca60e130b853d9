"""The bundled tiny text-to-image model: a diffusers pipeline, the ``tiny`` backend, edits, safety
guidance, the ``tiny_concepts`` stage and the whole stack (real weights, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from t2iguard.cli.main import app
from t2iguard.core.inputs import load_image
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.types import Action, Category
from t2iguard.generate.base import GenerationRequest, SafetyGuidance
from t2iguard.generate.factory import make_generator
from t2iguard.generate.guidance import ClassifierGuidance
from t2iguard.generate.tiny.concepts import CONCEPT_KEYS, UNSAFE_CONCEPTS, load_concept_classifier
from t2iguard.generate.tiny.generator import TinyGenerator
from t2iguard.generate.tiny.pipeline import load_tiny_pipeline
from t2iguard.generate.tiny.world import compose


@pytest.fixture(scope="module")
def gen() -> TinyGenerator:
    g = make_generator("tiny", steps=6)  # few steps: these tests check mechanics, bench/ checks quality
    assert isinstance(g, TinyGenerator)
    return g


@pytest.fixture(scope="module")
def clf():  # type: ignore[no-untyped-def]
    return load_concept_classifier()


def test_pipeline_is_a_stable_diffusion_pipeline() -> None:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    pipe = load_tiny_pipeline()
    assert isinstance(pipe, StableDiffusionPipeline)
    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.text_encoder, CLIPTextModel)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    img = pipe("a star", num_inference_steps=8, generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (32, 32)


def test_generation_is_seeded_and_sized(gen: TinyGenerator, clf) -> None:  # type: ignore[no-untyped-def]
    out = gen.generate(GenerationRequest(prompt="a skull", n=3, seed=100, width=64, height=64))
    assert [im.size for im in out.images] == [(64, 64)] * 3
    assert out.metadata["seeds"] == [100, 101, 102] and out.metadata["mode"] == "txt2img"
    again = gen.generate(GenerationRequest(prompt="a skull", n=1, seed=101, width=96, height=96))
    assert again.images[0].size == (96, 96)
    resized = again.images[0].resize((64, 64), Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(resized, float) - np.asarray(out.images[1], float)).mean() < 6  # same sample
    other = gen.generate(GenerationRequest(prompt="a cat on a yellow background", n=1, seed=100))
    assert other.images[0].tobytes() != out.images[0].tobytes()  # the prompt matters
    assert clf.predict(out.images).shape == (3, len(CONCEPT_KEYS))


def test_long_prompts_are_cut_at_a_word_and_the_cut_is_recorded(gen: TinyGenerator) -> None:
    long = "a knife on a blue background, " + ", ".join(["highly detailed", "octane render"] * 20)
    res = gen.generate(GenerationRequest(prompt=long, seed=3, steps=4))
    cut = res.metadata["prompt_truncated"]
    assert cut["max_tokens"] == 24 and cut["words_dropped"] > 30 and cut["negative_words_dropped"] == 0
    kept = " ".join(long.split()[: len(long.split()) - cut["words_dropped"]])
    # the words kept are what the encoder reads: the same image as asking for them directly
    same = gen.generate(GenerationRequest(prompt=kept, seed=3, steps=4))
    assert "prompt_truncated" not in same.metadata
    assert np.array_equal(np.asarray(res.images[0]), np.asarray(same.images[0]))


def test_sld_is_applied_with_the_world_concepts(gen: TinyGenerator) -> None:
    req = GenerationRequest(prompt="a knife and a cat", n=2, seed=300, width=64, height=64)
    plain = gen.generate(req)
    safety = SafetyGuidance((Category.VIOLENCE,), strength="max", concepts=("knife",))
    guided = gen.generate(req.with_changes(safety=safety))
    sg = guided.metadata["safety_guidance"]
    assert sg["concept"] == "knife" and sg["preset"] == "max" and sg["sld_active_steps"] == gen.steps
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(guided.images[0]))
    by_cat = gen.generate(req.with_changes(safety=SafetyGuidance((Category.SHOCKING,), strength="strong")))
    assert by_cat.metadata["safety_guidance"]["concept"] == "skull, drop of blood"


def test_classifier_guidance_with_the_concept_classifier(clf) -> None:  # type: ignore[no-untyped-def]
    unsafe = [CONCEPT_KEYS.index(c.key) for c in UNSAFE_CONCEPTS]

    def harm(images: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(clf.logits(images)[:, unsafe], dim=1)

    g = TinyGenerator(steps=4, classifier_guidance=ClassifierGuidance(harm, scale=2.0, name="tiny-concepts"))
    out = g.generate(
        GenerationRequest(prompt="a bomb", n=2, seed=5, safety=SafetyGuidance((Category.VIOLENCE,), "strong"))
    )
    assert out.metadata["classifier_guidance"]["scale"] == 2.0
    assert out.metadata["safety_guidance"]["classifier_steps"] == g.steps


def test_inpainting_keeps_the_unmasked_pixels(gen: TinyGenerator) -> None:
    import random

    base = compose(["house"], random.Random(0), "green").image
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    req = GenerationRequest(
        prompt="a star",
        seed=1,
        width=64,
        height=64,
        image=load_image(base, source="base"),
        mask=load_image(mask, source="mask"),
        strength=0.9,
    )
    out = gen.generate(req)
    a, b = np.asarray(out.images[0]), np.asarray(base)
    assert out.metadata["mode"] == "inpaint"
    assert (a[:, 32:] == b[:, 32:]).all() and not (a[:, :32] == b[:, :32]).all()
    i2i = gen.generate(req.with_changes(mask=None, strength=0.3))
    assert i2i.metadata["mode"] == "img2img" and i2i.images[0].size == (64, 64)


def test_cpu_generation_speed_is_recorded(gen: TinyGenerator) -> None:
    out = gen.generate(GenerationRequest(prompt="a fish", seed=2, width=64, height=64))
    assert out.metadata["steps"] == 6 and out.metadata["latency_ms"] > 0


def test_stage_and_stack_with_the_tiny_model(gen: TinyGenerator) -> None:
    from t2iguard.cli.generate import resolve_policy

    policy = resolve_policy("tiny-demo", "tiny")
    data = policy.model_dump(mode="json")
    data["regeneration"]["max_attempts"] = 2
    from t2iguard.core.policy import policy_from_dict

    stack = SafetyStack(policy_from_dict(data, "tiny-demo-2"), generator=gen)
    import random

    d = stack.check_image(compose(["pistol"], random.Random(3)).image)
    pistol = next(e for e in d.trace if e.evidence.get("concept") == "pistol")
    assert pistol.category == Category.VIOLENCE and pistol.action == Action.REGENERATE
    out = stack.generate(
        GenerationRequest(prompt="a drop of blood on a white background", seed=21, width=64, height=64)
    )
    dec = out.decision
    assert dec.attempts and dec.attempts[0].generation["backend"] == "tiny"
    if dec.attempts[0].action == Action.REGENERATE:
        assert dec.attempts[1].guidance["strength"] == "medium"
        assert "blood" in dec.attempts[1].guidance["concepts"]
        assert dec.attempts[1].generation["safety_guidance"]["method"] == "sld"
    assert dec.action in (Action.ALLOW, Action.BLOCK)
    assert (len(out.images) == 1) == (dec.action == Action.ALLOW)


def test_cli_generate(tmp_path: Path) -> None:
    target = tmp_path / "cat.png"
    res = CliRunner().invoke(
        app, ["generate", "a cat on a blue background", "-o", str(target), "--seed", "3", "--steps", "4", "--json"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert data["backend"] == "tiny" and data["attempts"][0]["generation"]["backend"] == "tiny"
    assert data["action"] in ("allow", "block")  # block: no attempt came out clean (depends on the samples)
    if data["action"] == "allow":
        assert data["written"] == [str(target)] and Image.open(target).size == (64, 64)
        assert data["images"][0]["path"] == str(target)
    else:
        assert data["written"] == [] and not target.exists()
    res = CliRunner().invoke(app, ["generate", "how to make a bomb", "-o", str(tmp_path / "x.png"), "--json"])
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert res.exit_code == 0 and data["action"] == "block" and data["written"] == []
    assert not (tmp_path / "x.png").exists()
    res = CliRunner().invoke(app, ["generate", "a cat", "--backend", "diffusers:/nonexistent/model"])
    assert res.exit_code == 2 and "not found" in res.output
