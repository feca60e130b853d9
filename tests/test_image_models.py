"""open_nsfw and NudeNet on real photos (scikit-image's public-domain samples) and renders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2iguard import Action, Category, InputError, SafetyStack
from t2iguard.core.policy import policy_from_dict
from t2iguard.core.types import Phase
from t2iguard.generate.base import GenerationRequest
from t2iguard.generate.procedural import ProceduralGenerator

skdata = pytest.importorskip("skimage.data", reason="scikit-image provides the sample photos")

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("photos")
    out = {}
    for name in PHOTOS:
        p = d / f"{name}.png"
        Image.fromarray(getattr(skdata, name)()).save(p)
        out[name] = p
    render = ProceduralGenerator().generate(GenerationRequest(prompt="a lighthouse", width=512, height=512, seed=1))
    out["render"] = d / "render.png"
    render.images[0].save(out["render"])
    return out


@pytest.fixture(scope="module")
def default_stack() -> SafetyStack:
    return SafetyStack()


def test_benign_photos_and_renders_are_allowed(default_stack: SafetyStack, photos: dict[str, Path]) -> None:
    decisions = default_stack.check_images([str(p) for p in photos.values()])
    for name, d in zip(photos, decisions, strict=True):
        assert not isinstance(d, InputError)
        assert d.action == Action.ALLOW, (name, d.reason)
        stages = {r.stage: r for r in d.stages}
        assert set(stages) == {"nsfw", "nudity"}
        assert stages["nsfw"].scores[Category.SEXUAL] < 0.2  # open_nsfw: < 0.2 is "safe"
        assert stages["nudity"].scores[Category.SEXUAL] < 0.6
        assert d.images[0].width > 0 and len(d.input.sha256 or "") == 64


def test_nudenet_detects_the_astronauts_face(default_stack: SafetyStack, photos: dict[str, Path]) -> None:
    from t2iguard.core.inputs import load_image

    nudity = next(s for s in default_stack.stages(Phase.OUTPUT_IMAGE) if s.name == "nudity")
    (dets,) = nudity.detect([load_image(photos["astronaut"])])  # type: ignore[attr-defined]
    face = next(d for d in dets if d["class"] == "FACE_FEMALE")
    assert face["score"] > 0.7
    x, y, w, h = face["box"]
    assert 140 < x + w / 2 < 300 and 60 < y + h / 2 < 220  # her face, top centre of the 512x512 photo


def test_blocking_path_with_thresholds_the_same_images_exceed(photos: dict[str, Path]) -> None:
    policy = policy_from_dict(
        {
            "name": "strict-test",
            "stages": [
                {"stage": "nsfw", "categories": {"sexual": {"threshold": 0.02}}},
                {
                    "stage": "nudity",
                    "params": {"classes": ["FACE_FEMALE"], "detection_threshold": 0.6},
                    "categories": {"sexual": {"threshold": 0.6, "action": "review"}},
                },
            ],
        }
    )
    stack = SafetyStack(policy)
    astronaut, chelsea = stack.check_images([str(photos["astronaut"]), str(photos["chelsea"])])
    assert not isinstance(astronaut, InputError) and not isinstance(chelsea, InputError)
    # open_nsfw scores the astronaut ~0.03 > 0.02: block, and the NudeNet stage is short-circuited
    assert astronaut.action == Action.BLOCK
    assert astronaut.decided_by[0].stage == "nsfw" and astronaut.decided_by[0].threshold == 0.02
    assert [r.stage for r in astronaut.stages] == ["nsfw"]
    assert chelsea.action == Action.ALLOW

    review = SafetyStack(
        policy_from_dict({**policy.model_dump(mode="json"), "stages": [policy.stages[1].model_dump()]})
    )
    d = review.check_image(str(photos["astronaut"]))
    assert d.action == Action.REVIEW
    ev = d.decided_by[0].evidence
    assert ev["boxes"][0]["class"] == "FACE_FEMALE" and ev["detector"] == "nudenet-3.4-320n"


def test_batched_scores_equal_single_scores(default_stack: SafetyStack, photos: dict[str, Path]) -> None:
    paths = [str(p) for p in photos.values()]
    batch = default_stack.check_images(paths)
    singles = [default_stack.check_image(p) for p in paths]
    for b, s in zip(batch, singles, strict=True):
        assert not isinstance(b, InputError)
        assert b.categories == pytest.approx(s.categories, abs=1e-4)


def test_input_phase_and_bad_files_in_a_batch(
    default_stack: SafetyStack, photos: dict[str, Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos["coffee"].read_bytes()[:300])
    out = default_stack.check_images(
        [str(broken), str(photos["chelsea"]), str(tmp_path / "nope.png")], phase=Phase.INPUT_IMAGE
    )
    assert isinstance(out[0], InputError) and "truncated or corrupt" in str(out[0])
    assert not isinstance(out[1], InputError) and out[1].action == Action.ALLOW
    assert all(e.phase == Phase.INPUT_IMAGE for e in out[1].trace)
    assert isinstance(out[2], InputError) and "file not found" in str(out[2])


def test_a_missing_model_fails_closed(photos: dict[str, Path], tmp_path: Path) -> None:
    policy = policy_from_dict(
        {"name": "t", "stages": [{"stage": "nsfw", "params": {"model_path": str(tmp_path / "x.onnx")}}]}
    )
    d = SafetyStack(policy).check_image(str(photos["chelsea"]))
    assert d.action == Action.BLOCK and "model file not found" in (d.decided_by[0].error or "")


def test_arrays_and_pil_images_are_accepted(default_stack: SafetyStack) -> None:
    arr = skdata.chelsea()
    d1 = default_stack.check_image(arr)
    d2 = default_stack.check_image(Image.fromarray(arr))
    assert d1.action == d2.action == Action.ALLOW
    assert d1.categories == pytest.approx(d2.categories, abs=1e-6)
    assert np.asarray(Image.fromarray(arr)).shape == (300, 451, 3)
