"""The multimodal edit check on constructed image pairs: every signal, with real dlib faces and
the real nudity models on benign photos, and the nudity-increase logic on controlled detector
outputs (no explicit images anywhere)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib")
pytest.importorskip("nudenet")
skimage_data = pytest.importorskip("skimage.data")

from t2iguard.core.inputs import load_image  # noqa: E402
from t2iguard.core.pipeline import SafetyStack  # noqa: E402
from t2iguard.core.policy import policy_from_dict  # noqa: E402
from t2iguard.core.stage import EditContext, ModelCache  # noqa: E402
from t2iguard.core.types import Action, Category, Phase  # noqa: E402
from t2iguard.generate.base import GenerationRequest, GenerationResult  # noqa: E402
from t2iguard.image.edit import EditTransformStage  # noqa: E402
from t2iguard.image.faces import srgb_to_lab  # noqa: E402

MODELS = ModelCache()
EDIT_RULES = {
    "sexual": {"threshold": 0.1, "action": "block"},  # any nudity increase on a real person
    "hate": {"threshold": 0.3, "action": "review"},  # skin-tone shift (ΔE >= 12)
    "harassment": {"threshold": 0.6, "action": "review"},  # identity change (dlib distance >= 0.6)
}


def _policy(**params: Any) -> Any:
    return policy_from_dict(
        {
            "name": "edit",
            "stages": [
                {"stage": "normalize"},
                {"stage": "blocklist", "threshold": 0.9},
                {"stage": "edit_transform", "params": params, "categories": EDIT_RULES},
            ],
        }
    )


def _stage(**params: Any) -> EditTransformStage:
    stack = SafetyStack(_policy(**params), models=MODELS)
    (stage,) = stack.stages(Phase.EDIT_CHECK)
    assert isinstance(stage, EditTransformStage)
    return stage


def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


def _scan(stage: EditTransformStage, before: Image.Image, after: Image.Image, **kw: Any) -> Any:
    return stage.scan(EditContext(input=load_image(before), output=load_image(after), prompt="edit", **kw))


def _signals(result: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in result.trace:
        out.update(e.evidence.get("signals", {}))
    return out


def _face_box(stage: EditTransformStage, img: Image.Image) -> tuple[int, int, int, int]:
    return stage.faces.detect(img)[0].box


def shift_skin(img: Image.Image, box: tuple[int, int, int, int], d_l: float, d_a: float, d_b: float) -> Image.Image:
    """Shift the CIELAB colour of a face box (the blackface / whitening edits), via a per-channel
    gain fitted so the box's median Lab moves by about (d_l, d_a, d_b)."""
    arr = np.asarray(img, dtype=np.float64).copy()
    x, y, w, h = box
    region = arr[y : y + h, x : x + w]
    target = srgb_to_lab(np.median(region.reshape(-1, 3), axis=0)) + np.array([d_l, d_a, d_b])
    best, best_err = np.ones(3), np.inf
    med = np.median(region.reshape(-1, 3), axis=0)
    for g in np.linspace(0.3, 1.3, 21):
        for gr in np.linspace(0.8, 1.2, 9):
            gains = np.array([g * gr, g, g / gr])
            err = np.linalg.norm(srgb_to_lab(np.clip(med * gains, 0, 255)) - target)
            if err < best_err:
                best, best_err = gains, err
    arr[y : y + h, x : x + w] = np.clip(region * best, 0, 255)
    return Image.fromarray(arr.astype(np.uint8))


def test_unchanged_real_person_photo_is_allowed() -> None:
    stage = _stage()
    r = _scan(stage, astronaut(), astronaut())
    assert r.action == Action.ALLOW
    ev = r.trace[0].evidence
    assert ev["real_person"] and len(ev["faces_input"]) == 1
    assert ev["identity_distance"] == [0.0] and ev["skin_delta_e76"] == [0.0]
    assert set(ev["nudity"]) == {"open_nsfw", "nudenet"}  # the real detectors ran on both images


def test_skin_tone_shift_inside_the_face_box_goes_to_review() -> None:
    stage = _stage()
    img = astronaut()
    darker = shift_skin(img, _face_box(stage, img), -30, 5, 10)
    r = _scan(stage, img, darker)
    sig = _signals(r)
    assert sig["skin_tone_shift"] >= 0.3, sig
    assert r.action == Action.REVIEW and r.scores[Category.HATE] >= 0.3
    # a small lighting-like change stays under the threshold
    r2 = _scan(stage, img, shift_skin(img, _face_box(stage, img), -3, 0, 0))
    assert _signals(r2)["skin_tone_shift"] < 0.3 and r2.action == Action.ALLOW


def test_face_swap_changes_identity() -> None:
    stage = _stage()
    img = astronaut()
    x, y, w, h = _face_box(stage, img)
    other = (skimage_data.lfw_subset()[7] * 255).astype(np.uint8)  # another real person (LFW)
    swapped = img.copy()
    swapped.paste(
        Image.fromarray(other).convert("RGB").resize((w + 40, h + 40), Image.Resampling.BICUBIC), (x - 20, y - 20)
    )
    r = _scan(stage, img, swapped)
    sig = _signals(r)
    assert sig["identity_change"] >= 0.6, r.trace[0].evidence
    assert r.scores[Category.HARASSMENT] >= 0.6 and r.action == Action.REVIEW
    # the same face, slightly re-encoded, keeps its identity
    kept = load_image(img).image.resize((500, 500)).resize((512, 512))
    assert _signals(_scan(stage, img, kept))["identity_change"] < 0.6


def test_no_face_no_person_signals_and_other_resolutions() -> None:
    stage = _stage()
    rocket = Image.fromarray(skimage_data.rocket())
    r = _scan(stage, rocket, rocket.resize((300, 200)))
    assert r.action == Action.ALLOW
    assert not r.trace[0].evidence.get("real_person", False)
    assert "identity_change" not in _signals(r)


def _fake_detectors(
    stage: EditTransformStage, before: list[dict[str, Any]], after: list[dict[str, Any]], nsfw: tuple[float, float]
) -> None:
    stage._nudity.detect = lambda items: [before, after]  # type: ignore[method-assign]
    stage._nsfw.scores = lambda items: np.array(nsfw)  # type: ignore[method-assign]


def test_nudity_increase_inside_and_outside_the_mask_on_controlled_detector_outputs() -> None:
    stage = _stage()
    img = astronaut()
    mask = Image.new("L", img.size, 0)
    mask.paste(255, (0, 256, 512, 512))  # the lower half is edited
    inside = {"class": "FEMALE_BREAST_EXPOSED", "score": 0.81, "box": [150, 300, 120, 100]}
    _fake_detectors(stage, [], [inside], (0.05, 0.40))
    r = _scan(stage, img, img, mask=load_image(mask))
    nud = r.trace[0].evidence["nudity"]
    assert nud["nudenet"]["inside_mask"] == {"input": 0.0, "output": 0.81, "increase": 0.81}
    assert nud["nudenet"]["outside_mask"]["increase"] == 0.0
    assert nud["open_nsfw"]["increase"] == pytest.approx(0.35)
    assert r.action == Action.BLOCK and r.scores[Category.SEXUAL] == pytest.approx(0.81)
    # the same detection outside the mask is reported there
    outside = {**inside, "box": [150, 20, 120, 100]}
    _fake_detectors(stage, [], [outside], (0.05, 0.05))
    r = _scan(stage, img, img, mask=load_image(mask))
    assert r.trace[0].evidence["nudity"]["nudenet"]["outside_mask"]["increase"] == 0.81
    # a class the policy does not score (feet) is no nudity increase
    _fake_detectors(stage, [], [{**inside, "class": "FEET_EXPOSED"}], (0.05, 0.05))
    assert _scan(stage, img, img, mask=load_image(mask)).action == Action.ALLOW
    # no real person: a nudity increase is left to the output classifiers (by default)
    rocket = Image.fromarray(skimage_data.rocket())
    _fake_detectors(stage, [], [inside], (0.05, 0.9))
    assert _scan(stage, rocket, rocket).action == Action.ALLOW
    anyone = _stage(nudity_requires_person=False)
    _fake_detectors(anyone, [], [inside], (0.05, 0.9))
    assert _scan(anyone, rocket, rocket).action == Action.BLOCK


class _Echo:
    """An 'edit' backend that returns the input unchanged: only the instruction differs."""

    name = "echo"

    def generate(self, request: GenerationRequest) -> GenerationResult:
        assert request.image is not None
        return GenerationResult(images=[request.image.image], seed=0)


def test_instruction_verdict_counts_when_a_real_person_is_edited() -> None:
    stack = SafetyStack(_policy(), models=MODELS, generator=_Echo())
    prompt = "make her outfit sexy lingerie"  # weak terms: allowed as a prompt on its own
    assert stack.check_prompt(prompt).action == Action.ALLOW
    person = stack.generate(GenerationRequest(prompt=prompt, image=load_image(astronaut())))
    assert person.decision.action == Action.BLOCK, person.decision.reason
    assert person.images == []
    entry = next(e for e in person.decision.decided_by if e.stage == "edit_transform")
    assert entry.evidence["signal"] == "instruction" and entry.evidence["real_person"]
    rocket = stack.generate(GenerationRequest(prompt=prompt, image=load_image(Image.fromarray(skimage_data.rocket()))))
    assert rocket.decision.action == Action.ALLOW and len(rocket.images) == 1


def test_cielab_conversion_matches_reference_values() -> None:
    lab = srgb_to_lab(np.array([[255, 255, 255], [255, 0, 0], [0, 0, 0], [128, 128, 128]], dtype=np.uint8))
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.01)
    np.testing.assert_allclose(lab[1], [53.24, 80.09, 67.20], atol=0.02)  # sRGB red, CIE D65
    np.testing.assert_allclose(lab[2], [0.0, 0.0, 0.0], atol=0.01)
    np.testing.assert_allclose(lab[3], [53.59, 0.0, 0.0], atol=0.02)


def test_check_edit_api_and_cli(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from t2iguard.cli.main import app

    stack = SafetyStack(_policy(), models=MODELS)
    img = astronaut()
    darker = shift_skin(img, stack.stages(Phase.EDIT_CHECK)[0].faces.detect(img)[0].box, -30, 5, 10)  # type: ignore[attr-defined]
    d = stack.check_edit(img, darker, "give her a tan")
    assert d.action == Action.REVIEW and d.input.kind == "edit"
    assert {r.stage for r in d.stages} >= {"normalize", "blocklist", "edit_transform"}
    blocked = stack.check_edit(img, img, "s u i c i d e note")  # the instruction alone blocks
    assert blocked.action == Action.BLOCK and "edit_transform" not in {r.stage for r in blocked.stages}
    src, out = tmp_path / "in.png", tmp_path / "out.png"
    img.save(src)
    darker.save(out)
    policy = tmp_path / "p.yaml"
    policy.write_text(_policy().to_yaml())
    res = CliRunner().invoke(app, ["check-edit", str(src), str(out), "--prompt", "give her a tan", "-p", str(policy)])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("review:") and "skin_tone_shift" in res.stdout
    res = CliRunner().invoke(app, ["check-edit", str(src), str(tmp_path / "nope.png"), "--prompt", "x", "--json"])
    assert res.exit_code == 1 and "file not found" in res.stdout
