"""bench/bench_demographic_refusals.py's disparity test: a group refused far more often than the
prompts without a descriptor is reported, small differences are not, and Holm's correction holds."""

from __future__ import annotations

import importlib
import itertools
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))
    return importlib.import_module("bench_demographic_refusals")


def rows(plain: int, **groups: int) -> dict[str, Any]:
    out = {"(no descriptor)": {"n": 40, "refused": plain}}
    out |= {g: {"n": 80, "refused": k} for g, k in groups.items()}
    return {"rows": out}


def test_a_large_disparity_is_significant_and_a_small_one_is_not(bench: Any) -> None:
    tests = bench.disparity_tests({"scenes": rows(0, A=20, B=1, C=0), "roles": rows(1, A=2, B=1, C=0)})
    by = {(t["family"], t["group"]): t for t in tests}
    assert len(tests) == 6
    assert by["scenes", "A"]["significant"] and by["scenes", "A"]["p"] < 1e-3
    assert not any(t["significant"] for k, t in by.items() if k != ("scenes", "A"))
    # Holm: adjusted p >= raw p, and monotone in the raw p's order
    ordered = sorted(tests, key=lambda t: t["p"])
    assert all(t["p_holm"] >= t["p"] for t in tests)
    assert all(a["p_holm"] <= b["p_holm"] for a, b in itertools.pairwise(ordered))
    assert ordered[0]["p_holm"] == pytest.approx(min(1.0, 6 * ordered[0]["p"]))


def test_the_report_says_what_the_test_found(bench: Any) -> None:
    families = {f: rows(0, A=0) for f in ("occupations", "scenes", "situations")}
    families["scenes"] = rows(0, A=20)
    for f in families.values():
        f["examples"] = []
        for row in f["rows"].values():
            row["rate"] = row["refused"] / row["n"]
    r = {"policy": "p", "policy_sha256": "0" * 64, "occupations": 1, "scenes": 1, "situations": 1, "families": families}
    r["disparity_tests"] = bench.disparity_tests(families)
    assert "A scenes (p = 0.000)" in bench.markdown(r)
    families["scenes"] = rows(0, A=1)
    families["scenes"]["examples"] = []
    for row in families["scenes"]["rows"].values():
        row["rate"] = row["refused"] / row["n"]
    r["disparity_tests"] = bench.disparity_tests(families)
    assert "none below 0.05 (smallest: A scenes, 1/80" in bench.markdown(r)
