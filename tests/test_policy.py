"""Policy files: the shipped default, validation errors, per-stage resolution, zero tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from t2iguard import Action, Category, PolicyError, StageRegistry, default_policy, load_policy
from t2iguard.core.decision import Finding
from t2iguard.core.policy import StageConfig, policy_from_dict
from t2iguard.core.types import Phase


def test_default_policy_is_valid_and_complete() -> None:
    pol = default_policy()
    assert pol.name == "t2iguard-default"
    assert set(pol.categories) == set(Category)
    assert pol.category(Category.MINORS).zero_tolerance
    assert StageRegistry().validate(pol) is not None
    assert [s.stage for s in pol.stages][:2] == ["normalize", "blocklist"]


def test_resolution_order_stage_rule_then_stage_threshold_then_category() -> None:
    pol = policy_from_dict(
        {
            "name": "t",
            "categories": {"violence": {"action": "review", "threshold": 0.4}},
            "stages": [
                {
                    "stage": "blocklist",
                    "threshold": 0.9,
                    "categories": {"sexual": {"threshold": 0.7, "action": "regenerate"}},
                },
                {"stage": "normalize"},
            ],
        }
    )
    sp = pol.stage_policy(pol.stages[0], Phase.PROMPT_CHECK)
    assert sp.rule(Category.SEXUAL)[:2] == (0.7, Action.REGENERATE)
    assert sp.rule(Category.VIOLENCE)[:2] == (0.9, Action.REVIEW)
    sp2 = pol.stage_policy(pol.stages[1], Phase.PROMPT_CHECK)
    assert sp2.rule(Category.VIOLENCE)[:2] == (0.4, Action.REVIEW)
    # a category the file omits is enforced with the defaults (fails closed)
    assert sp2.rule(Category.HATE)[:2] == (0.5, Action.BLOCK)
    entry = sp.judge(Finding(category=Category.SEXUAL, score=0.75, evidence={"term": "x"}))
    assert (entry.action, entry.threshold, entry.score) == (Action.REGENERATE, 0.7, 0.75)
    assert sp.judge(Finding(category=Category.SEXUAL, score=0.69)).action == Action.ALLOW


def test_disabled_category_at_a_stage() -> None:
    pol = policy_from_dict(
        {"name": "t", "stages": [{"stage": "blocklist", "categories": {"violence": {"enabled": False}}}]}
    )
    sp = pol.stage_policy(pol.stages[0], Phase.PROMPT_CHECK)
    e = sp.judge(Finding(category=Category.VIOLENCE, score=1.0))
    assert e.action == Action.ALLOW and "disabled" in (e.message or "")


def test_band_gives_a_milder_action_just_under_the_threshold() -> None:
    """``band``: scores in [band, threshold) get the band's action (regenerate by default), the
    trace records the band's threshold and says so; a disguise scale moves both edges."""
    pol = policy_from_dict(
        {
            "name": "t",
            "stages": [
                {
                    "stage": "classifier",
                    "categories": {
                        "sexual": {"threshold": 0.4, "band": {"threshold": 0.2}},
                        "violence": {"threshold": 0.4, "enabled": False, "band": {"threshold": 0.2}},
                    },
                }
            ],
        }
    )
    sp = pol.stage_policy(pol.stages[0], Phase.PROMPT_CHECK)
    judged = {s: sp.judge(Finding(category=Category.SEXUAL, score=s)) for s in (0.5, 0.3, 0.1)}
    assert [(e.action, e.threshold) for e in judged.values()] == [
        (Action.BLOCK, 0.4),
        (Action.REGENERATE, 0.2),
        (Action.ALLOW, 0.4),
    ]
    assert judged[0.3].explain() == (
        "classifier: sexual 0.30 >= 0.20 (in the band under the block threshold 0.4) -> regenerate"
    )
    scaled = sp.judge(Finding(category=Category.SEXUAL, score=0.15), threshold_scale=0.7)
    assert (scaled.action, scaled.threshold) == (Action.REGENERATE, 0.14)
    assert sp.judge(Finding(category=Category.VIOLENCE, score=0.3)).action == Action.ALLOW  # disabled
    assert sp.judge(Finding(category=Category.HATE, score=0.3)).action == Action.ALLOW  # no band


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"name": "t", "categories": {"minors": {"action": "transform"}}}, "zero tolerance"),
        (
            {"name": "t", "stages": [{"stage": "blocklist", "categories": {"minors": {"action": "allow"}}}]},
            "zero tolerance",
        ),
        (
            {"name": "t", "stages": [{"stage": "blocklist", "categories": {"minors": {"enabled": False}}}]},
            "cannot be disabled",
        ),
        ({"name": "t", "categories": {"shocking": {"action": "review", "zero_tolerance": True}}}, "zero_tolerance"),
        ({"name": "t", "categories": {"nudity": {"action": "block"}}}, "categories.nudity"),
        ({"name": "t", "categories": {"sexual": {"threshold": 1.5}}}, "less than or equal to 1"),
        ({"name": "t", "categories": {"sexual": {"action": "maybe"}}}, "action"),
        ({"name": "t", "on_error": "allow"}, "fail closed"),
        ({"name": "t", "stages": [{"stage": "blocklist"}, {"stage": "blocklist"}]}, "used twice"),
        ({"name": "t", "stages": [{"stage": "blocklist", "on_error": "allow"}]}, "fail closed"),
        ({"name": "t", "unknown_key": 1}, "unknown_key"),
        ({"stages": []}, "name"),
        ({"name": "t", "regeneration": {"fallback": "allow"}}, "fallback"),
        (
            {
                "name": "t",
                "stages": [{"stage": "x", "categories": {"sexual": {"threshold": 0.3, "band": {"threshold": 0.3}}}}],
            },
            "must be under the stage's threshold 0.3",
        ),
        (
            {"name": "t", "stages": [{"stage": "x", "categories": {"sexual": {"band": {"threshold": 0.6}}}}]},
            "must be under the stage's threshold 0.5",
        ),
        (
            {"name": "t", "stages": [{"stage": "x", "categories": {"minors": {"band": {"threshold": 0.2}}}}]},
            "its band cannot be set to 'regenerate'",
        ),
        (
            {
                "name": "t",
                "stages": [{"stage": "x", "categories": {"sexual": {"band": {"threshold": 0.2, "action": "allow"}}}}],
            },
            "must do something",
        ),
    ],
)
def test_invalid_policies_are_rejected_with_the_field(doc: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy_from_dict(doc)


def test_registry_validation_names_unknown_stages_and_bad_params() -> None:
    reg = StageRegistry()
    pol = policy_from_dict({"name": "t", "stages": [{"stage": "no_such_stage"}]})
    with pytest.raises(PolicyError, match="unknown stage 'no_such_stage'"):
        reg.validate(pol)
    pol = policy_from_dict({"name": "t", "stages": [{"stage": "blocklist", "params": {"fuzzyy": True}}]})
    with pytest.raises(PolicyError, match=r"params\.fuzzyy"):
        reg.validate(pol)
    pol = policy_from_dict({"name": "t", "stages": [{"stage": "nudity", "params": {"classes": ["ELBOW_EXPOSED"]}}]})
    with pytest.raises(PolicyError, match="unknown NudeNet classes"):
        reg.validate(pol)
    pol = policy_from_dict({"name": "t", "stages": [{"stage": "blocklist", "phases": ["output_image"]}]})
    with pytest.raises(PolicyError, match="cannot run in phase"):
        reg.validate(pol)


def test_coverage_warnings_name_uncovered_categories() -> None:
    pol = policy_from_dict({"name": "t", "stages": [{"stage": "nsfw"}]})
    prompt_cov, image_cov = StageRegistry().validate(pol)
    for warning in (prompt_cov, image_cov):
        named = warning.split(":")[1].split(";")[0].strip().split(", ")
        assert "violence" in named and "sexual" not in named
    assert "vision_judge" in image_cov


def test_load_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad)
    bad.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(bad)
    bad.write_text("- a list\n")
    with pytest.raises(PolicyError, match="must be a mapping"):
        load_policy(bad)


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    pol = default_policy()
    f = tmp_path / "p.yaml"
    f.write_text(pol.to_yaml())
    again = load_policy(f)
    assert again.model_dump() == pol.model_dump()
    assert again.sha256 == pol.sha256
    changed = yaml.safe_load(pol.to_yaml())
    changed["categories"]["violence"]["threshold"] = 0.42
    f.write_text(yaml.safe_dump(changed))
    assert load_policy(f).sha256 != pol.sha256


def test_stage_config_instance_name() -> None:
    assert StageConfig(stage="blocklist").instance_name == "blocklist"
    assert StageConfig(stage="blocklist", name="strict-list").instance_name == "strict-list"
