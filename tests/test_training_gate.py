"""training/prompt_classifier/gate.py: arms of heads, the band, the spread over runs, and the loud
refusal to score heads on rows that are not their base run's."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parents[1] / "training" / "prompt_classifier"


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(HERE))
    return importlib.import_module("gate")


def head(tmp_path: Path, name: str, **meta: Any) -> Path:
    d = tmp_path / name
    d.mkdir()
    base = {
        "seed": 0,
        "extra_authored": ["authored_prompts_people.yaml"],
        "splits": {"test": 120},
        "metrics": {"topic_shift_probe": {"rows": "10000..14999"}},
    }
    (d / "head.json").write_text(json.dumps(base | meta))
    return d


def test_arms_name_existing_head_directories(gate: Any, tmp_path: Path) -> None:
    a, b = head(tmp_path, "a"), head(tmp_path, "b")
    arm = gate.parse_arm(f"base={a},{b}")
    assert arm.name == "base" and arm.heads == (a, b)
    for bad in ("base", f"={a}", "base=", f"base={tmp_path / 'missing'}"):
        with pytest.raises(argparse.ArgumentTypeError):
            gate.parse_arm(bad)


def test_band_needs_a_flagging_category(gate: Any) -> None:
    assert gate.parse_band("sexual=0.15") == ("sexual", 0.15)
    for bad in ("sexual", "public_figure=0.1", "nudity=0.2"):
        with pytest.raises(argparse.ArgumentTypeError):
            gate.parse_band(bad)


def test_summary_is_mean_and_spread_of_runs(gate: Any) -> None:
    s = gate.summarise([89.022, 87.136, 86.964])
    assert s["mean"] == pytest.approx(87.707) and s["min"] == 86.964 and s["max"] == 89.022
    assert s["sd"] == pytest.approx(1.142, abs=1e-3)
    assert gate.summarise([15])["sd"] == 0.0
    per_arm = {
        "base": {"runs": 3} | {m: s for m in gate.METRICS},
        "g": {"runs": 1} | {m: gate.summarise([1]) for m in gate.METRICS},
    }
    text = gate.table(per_arm, {"test": 120, "probe": 50, "coco": 30, "sexual": 10})
    assert "| base (3) | g (1) |" in text and "87.707 (86.964–89.022) | 1 |" in text


def test_rows_of_another_run_are_refused(gate: Any, tmp_path: Path) -> None:
    extras = [Path("authored_prompts_people.yaml")]
    ok = head(tmp_path, "ok")
    gate.check_base(ok, 0, extras, (10000, 15000), 120)  # the rows this run was trained beside
    for kwargs, word in (
        ({"seed": 1}, "seed"),
        ({"extras": []}, "authored files"),
        ({"n_test": 119}, "test rows"),
        ({"probe": (5000, 10000)}, "probe rows"),
        ({"probe": None}, "probe rows"),
    ):
        args = {"seed": 0, "extras": extras, "probe": (10000, 15000), "n_test": 120} | kwargs
        with pytest.raises(SystemExit, match=word):
            gate.check_base(ok, args["seed"], args["extras"], args["probe"], args["n_test"])


def test_base_run_is_read_from_its_head(gate: Any, tmp_path: Path) -> None:
    run = gate.base_run(head(tmp_path, "base"))
    assert run == {"seed": 0, "extra_authored": [HERE / "authored_prompts_people.yaml"], "probe": (10000, 15000)}
    assert gate.base_run(head(tmp_path, "noprobe", metrics={}))["probe"] is None


def test_a_second_tier_acts_at_its_tier_thresholds(gate: Any, tmp_path: Path) -> None:
    tier = head(tmp_path, "tier", tier_thresholds={"thresholds": {"sexual": 0.8, "illegal": 0.52}})
    acting = gate.tier_acting(tier)
    assert acting["sexual"] == 0.8 and acting["illegal"] == 0.52
    assert acting["violence"] == float("inf")  # a category the tier has no threshold for never flags
    with pytest.raises(SystemExit, match="tier_thresholds"):
        gate.tier_acting(head(tmp_path, "plain"))


def test_the_first_tier_is_the_shipped_head_at_the_policy_thresholds(gate: Any, tmp_path: Path) -> None:
    from t2iguard.core.stage import ModelCache

    flagged = gate.first_tier(ModelCache(), gate.TT.HEAD_DIR, tmp_path / "cache")
    out = flagged(["a naked woman posing on a bed, explicit porn", "a bowl of fruit on a kitchen table"])
    assert out.tolist() == [True, False]
    assert flagged([]).shape == (0,)
