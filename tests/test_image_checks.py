"""Output/input image checks: censoring as a `transform` through the pipeline, per-class NudeNet
thresholds, open_nsfw + NudeNet combined, the minors-risk flag, and coverage warnings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("nudenet")
skimage_data = pytest.importorskip("skimage.data")

from t2iguard.core.pipeline import SafetyStack  # noqa: E402
from t2iguard.core.policy import policy_from_dict  # noqa: E402
from t2iguard.core.registry import StageRegistry  # noqa: E402
from t2iguard.core.stage import ModelCache  # noqa: E402
from t2iguard.core.types import Action, Phase  # noqa: E402
from t2iguard.generate.base import GenerationRequest, GenerationResult  # noqa: E402

MODELS = ModelCache()  # the packaged models load once for this module


def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


def _stack(stages: list[dict[str, Any]], **kw: Any) -> SafetyStack:
    return SafetyStack(policy_from_dict({"name": "t", "stages": stages}), models=MODELS, **kw)


# A benign stand-in for an exposed class: NudeNet's FACE_FEMALE box on the astronaut photo
# exercises the same censor path without explicit test images.
FACE_AS_FLAGGED = {"stage": "nudity", "params": {"classes": ["FACE_FEMALE"], "censor": "pixelate"}}


def test_transform_returns_a_censored_image() -> None:
    stack = _stack([{**FACE_AS_FLAGGED, "categories": {"sexual": {"action": "transform"}}}])
    d = stack.check_image(astronaut())
    assert d.action == Action.TRANSFORM and d.allowed
    censored = SafetyStack.transformed_image(d)
    assert censored is not None
    before, after = np.asarray(astronaut(), dtype=np.int16), np.asarray(censored, dtype=np.int16)
    (box,) = d.trace[0].evidence["boxes"]
    x, y, w, h = box["box"]
    assert np.abs(before[y : y + h, x : x + w] - after[y : y + h, x : x + w]).mean() > 5  # face pixelated
    assert np.array_equal(before[400:, :], after[400:, :])  # the rest untouched
    change = next(e for e in d.trace if e.category is None and e.action == Action.TRANSFORM)
    assert change.evidence["image_before"] == d.input.sha256
    assert change.evidence["image_after"] == d.images[0].sha256 != d.input.sha256
    assert "pixelate" in d.reason


def test_blur_and_fill_modes() -> None:
    for mode in ("blur", "fill"):
        stack = _stack(
            [
                {
                    **FACE_AS_FLAGGED,
                    "params": {**FACE_AS_FLAGGED["params"], "censor": mode},
                    "categories": {"sexual": {"action": "transform"}},
                }
            ]
        )
        img = SafetyStack.transformed_image(stack.check_image(astronaut()))
        assert img is not None
        if mode == "fill":
            assert np.asarray(img)[130, 220].tolist() == [0, 0, 0]


def test_transform_without_a_censored_image_fails_closed() -> None:
    stack = _stack(
        [{**FACE_AS_FLAGGED, "params": {"classes": ["FACE_FEMALE"]}, "categories": {"sexual": {"action": "transform"}}}]
    )
    d = stack.check_image(astronaut())
    assert d.action == Action.BLOCK
    assert "returned no transformed image" in d.reason


class _PhotoGenerator:
    name = "photo"

    def generate(self, request: GenerationRequest) -> GenerationResult:
        return GenerationResult(images=[astronaut()], seed=1)


def test_generate_returns_the_censored_image_and_later_stages_see_it() -> None:
    stages = [
        {**FACE_AS_FLAGGED, "categories": {"sexual": {"action": "transform"}}},
        # a second instance checks what the first returned: the face is gone
        {
            "stage": "nudity",
            "name": "after_censor",
            "params": {"classes": ["FACE_FEMALE"]},
            "categories": {"sexual": {"action": "review"}},
        },
    ]
    stack = _stack(stages, generator=_PhotoGenerator())
    out = stack.generate(GenerationRequest(prompt="an astronaut portrait"))
    assert out.decision.action == Action.TRANSFORM, out.decision.reason
    assert len(out.images) == 1 and not np.array_equal(np.asarray(out.images[0]), np.asarray(astronaut()))
    second = next(r for r in out.decision.stages if r.stage == "after_censor")
    assert second.scores["sexual"] < 0.6


def test_per_class_thresholds() -> None:
    strict = _stack(
        [{"stage": "nudity", "params": {"classes": ["FACE_FEMALE"], "class_thresholds": {"FACE_FEMALE": 0.99}}}]
    )
    d = strict.check_image(astronaut())
    assert d.categories["sexual"] == 0.0 and d.action == Action.ALLOW
    loose = _stack(
        [{"stage": "nudity", "params": {"classes": ["FACE_FEMALE"], "class_thresholds": {"FACE_FEMALE": 0.3}}}]
    )
    assert loose.check_image(astronaut()).action == Action.BLOCK
    with pytest.raises(Exception, match="unknown NudeNet classes"):
        _stack([{"stage": "nudity", "params": {"class_thresholds": {"ELBOW": 0.5}}}])


@pytest.mark.parametrize(("combine", "fn"), [("max", max), ("min", min), ("mean", lambda a, b: (a + b) / 2)])
def test_nsfw_and_nudity_combined(combine: str, fn: Any) -> None:
    img = Image.fromarray(skimage_data.coffee())
    separate = _stack([{"stage": "nsfw"}, {"stage": "nudity", "params": {"classes": ["BUTTOCKS_EXPOSED"]}}])
    scores = {r.stage: r.scores["sexual"] for r in separate.check_image(img).stages}
    combined = _stack(
        [{"stage": "nsfw_nudity", "params": {"combine": combine, "nudity": {"classes": ["BUTTOCKS_EXPOSED"]}}}]
    )
    d = combined.check_image(img)
    assert d.categories["sexual"] == pytest.approx(fn(scores["nsfw"], scores["nudity"]), abs=1e-4)
    ev = d.trace[0].evidence
    assert ev["combine"] == combine and ev["open_nsfw"] == pytest.approx(scores["nsfw"], abs=1e-4)


def test_minors_risk_needs_face_youth_and_sexual_cue() -> None:
    stack = _stack([{"stage": "minors_risk", "phases": ["input_image"]}])
    img = astronaut()
    flagged = stack.check_image(img, phase=Phase.INPUT_IMAGE, prompt="make the schoolgirl wear lingerie")
    assert flagged.action == Action.BLOCK and flagged.categories["minors"] == 1.0
    sig = flagged.trace[0].evidence["signals"]
    assert sig["face"] and sig["youth_terms"] == ["schoolgirl"] and sig["sexual_terms"] == ["lingerie"]
    assert stack.check_image(img, phase=Phase.INPUT_IMAGE, prompt="put the schoolgirl in a library").action == "allow"
    assert stack.check_image(img, phase=Phase.INPUT_IMAGE, prompt="make her wear lingerie").action == "allow"
    no_face = Image.fromarray(skimage_data.rocket())
    d = stack.check_image(no_face, phase=Phase.INPUT_IMAGE, prompt="make the schoolgirl wear lingerie")
    assert d.action == "allow"


def test_validator_names_categories_no_image_stage_covers() -> None:
    policy = policy_from_dict(
        {
            "name": "v",
            "categories": {"violence": {"action": "block"}, "sexual": {"action": "block"}},
            "stages": [{"stage": "nsfw"}],
        }
    )
    warnings = StageRegistry().validate(policy)
    assert any("violence" in w and "vision_judge" in w and "clip_concepts" in w for w in warnings), warnings


def test_validator_rejects_an_image_stage_asked_for_a_category_it_cannot_score() -> None:
    from t2iguard.core.errors import PolicyError

    policy = policy_from_dict(
        {"name": "v", "stages": [{"stage": "nsfw", "categories": {"violence": {"threshold": 0.5}}}]}
    )
    with pytest.raises(PolicyError, match=r"cannot score violence.*vision_judge"):
        StageRegistry().validate(policy)
    ok = policy_from_dict(
        {
            "name": "v",
            "categories": {"violence": {"action": "block"}},
            "stages": [
                {"stage": "nsfw"},
                {
                    "stage": "vision_judge",
                    "params": {
                        "endpoint": {"base_url": "http://127.0.0.1:1/v1", "model": "m"},
                        "categories": ["violence"],
                    },
                },
            ],
        }
    )
    assert not any("violence" in w for w in StageRegistry().validate(ok))


class _Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[Image.Image] = []

    def generate(self, request: GenerationRequest) -> GenerationResult:
        assert request.image is not None
        self.seen.append(request.image.image)
        return GenerationResult(images=[request.image.image], seed=0)


def test_a_censored_upload_is_what_the_generator_edits() -> None:
    from t2iguard.core.inputs import load_image

    gen = _Recorder()
    stage = {**FACE_AS_FLAGGED, "phases": ["input_image"], "categories": {"sexual": {"action": "transform"}}}
    out = _stack([stage], generator=gen).generate(GenerationRequest(prompt="add a hat", image=load_image(astronaut())))
    assert out.decision.action == Action.TRANSFORM
    assert not np.array_equal(np.asarray(gen.seen[0]), np.asarray(astronaut()))
