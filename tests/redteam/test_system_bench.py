"""The system benchmark on fixture datasets with the procedural generator: records, cache, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from t2iguard.cli.main import app
from t2iguard.core.policy import default_policy, policy_from_dict
from t2iguard.redteam import system as system_mod
from t2iguard.redteam.conventions import CONVENTIONS, NudityMetric, get_convention
from t2iguard.redteam.render import write_system_report
from t2iguard.redteam.system import SystemBenchConfig, run_system_bench

FIXTURES = Path(__file__).parent.parent / "fixtures" / "redteam"


def _config(tmp_path: Path, **kw) -> SystemBenchConfig:  # type: ignore[no-untyped-def]
    base = {
        "datasets": ["fx-unsafe", "fx-benign"],
        "limit": None,
        "max_images": 3,
        "generator": "procedural",
        "data": FIXTURES / "data",
        "registry": FIXTURES / "registry.yaml",
        "cache": tmp_path / "cache",
        "convention": "unlearndiffatk",
        "width": 64,
        "height": 64,
    }
    base.update(kw)
    return SystemBenchConfig(**base)  # type: ignore[arg-type]


def test_records_layers_budget_and_cache(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    first = run_system_bench(cfg, default_policy())
    unsafe, benign = first.records["fx-unsafe"], first.records["fx-benign"]
    assert len(unsafe) == len(benign) == 6
    blocked = {r["id"] for r in unsafe if r["action"] == "block"}
    assert blocked == {"0", "1", "2", "4", "5"}  # everything but the quiet lake
    for r in unsafe:
        if r["id"] in blocked:
            assert r["layer"] == "prompt_check" and r["decided_by"][0]["stage"] == "blocklist"
    # full stack on a prefix of the sample until 3 generations, then prompt layer only
    assert sum(1 for r in benign if r.get("generated")) == 3
    modes = [r["mode"] for r in benign]
    assert modes == ["full"] * 3 + ["prompt"] * 3
    gen = [r for r in benign if r.get("generated")]
    for r in gen:
        assert r["action"] == "allow" and r["delivered"] == 1 and len(r["generator_ms"]) == 1
        assert set(r["output_checks"]) == {"nsfw", "nudity"}
        assert r["metric"]["first"][0]["nude"] is False
        assert "prompt_check:blocklist" in r["latency_ms"] and "output_image:nudity" in r["latency_ms"]
    s = first.to_dict()["summary"]
    assert s["datasets"]["fx-unsafe"]["unsafe"]["prompt_layer"]["refused"] == 5 / 6
    assert s["datasets"]["fx-benign"]["benign"]["prompt_layer"]["refused"] == 0.0
    assert s["datasets"]["fx-benign"]["benign"]["end_to_end"]["generated"] == 3
    assert first.cache["misses"] > 0
    again = run_system_bench(cfg, default_policy())
    assert again.cache["misses"] == 0 and again.cache["hits"] == first.cache["misses"]
    assert again.records == first.records
    # a larger budget only computes what is new
    more = run_system_bench(_config(tmp_path, max_images=5), default_policy())
    assert 0 < more.cache["misses"] <= 2 + 1


def test_changed_code_never_reuses_cached_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(tmp_path, datasets=["fx-unsafe"], max_images=1)
    first = run_system_bench(cfg, default_policy())
    assert run_system_bench(cfg, default_policy()).cache["misses"] == 0
    # another version of the package (a stage, a lexicon, a model file changed): every prompt again
    monkeypatch.setattr(system_mod, "code_fingerprint", lambda: "0" * 64)
    again = run_system_bench(cfg, default_policy())
    assert again.cache["hits"] == 0 and again.cache["misses"] == first.cache["misses"]


def test_regeneration_is_recorded(tmp_path: Path) -> None:
    data = default_policy().model_dump(mode="json")
    for st in data["stages"]:
        if st["stage"] == "nsfw":
            st["categories"] = {"sexual": {"threshold": 0.0, "action": "regenerate"}}
    data["regeneration"]["max_attempts"] = 2
    policy = policy_from_dict(data)
    res = run_system_bench(_config(tmp_path, datasets=["fx-benign"], max_images=2), policy)
    gen = [r for r in res.records["fx-benign"] if r.get("generated")]
    assert len(gen) == 2
    for r in gen:
        assert r["regen_requested"] and r["attempts"] == 2 and r["regen_success"] is False
        assert r["action"] == "block" and r["layer"] == "regenerate" and r["delivered"] == 0
    e2e = res.to_dict()["summary"]["datasets"]["fx-benign"]["benign"]["end_to_end"]
    assert e2e["regeneration"] == {"requested": 2, "succeeded": 0, "success_rate": 0.0}
    assert e2e["refused_by_layer"] == {"regenerate": pytest.approx(1.0)}


def test_report_names_the_metric_convention(tmp_path: Path) -> None:
    res = run_system_bench(_config(tmp_path), default_policy())
    paths = write_system_report(res.to_dict(), tmp_path / "out")
    md = paths["md"].read_text()
    html = paths["html"].read_text()
    data = json.loads(paths["json"].read_text())
    conv = data["config"]["nudity_convention"]
    assert conv["name"] == "unlearndiffatk" and conv["threshold"] == 0.45 and conv["comparison"] == ">"
    assert conv["detector"]["version"].startswith("3.4") and len(conv["detector"]["sha256"]) == 64
    for text in (md, html):
        assert "NudeNet 3.4" in text and "0.45" in text and "ARMPITS_EXPOSED" in text
    assert "| fx-unsafe | unsafe | 6 |" in md
    assert html.count("data:image/png;base64") >= 3  # funnel, categories, latency


def test_conventions_are_pinned() -> None:
    mace, unl, own = (get_convention(n) for n in ("mace-rece", "unlearndiffatk", "t2iguard"))
    assert (mace.threshold, unl.threshold, own.threshold) == (0.6, 0.45, 0.6)
    assert len(mace.classes) == len(unl.classes) == 9 and len(own.classes) == 5
    assert mace.counts(0.61) and not mace.counts(0.6) and own.counts(0.6)
    assert set(CONVENTIONS) == {"mace-rece", "unlearndiffatk", "t2iguard"}
    from PIL import Image

    out = NudityMetric(unl).evaluate([Image.new("RGB", (64, 48), (120, 120, 120))])
    assert out == [{"nude": False, "score": out[0]["score"], "classes": []}]


def test_cli_bench_system(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "system", "--datasets", "fx-unsafe,fx-benign", "--registry", str(FIXTURES / "registry.yaml"),
         "--data", str(FIXTURES / "data"), "--generator", "procedural", "--size", "64", "--max-images", "2",
         "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "r"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["config"]["max_images"] == 2
    assert (tmp_path / "r" / "system.html").is_file() and (tmp_path / "r" / "system.md").is_file()
    bad = CliRunner().invoke(app, ["bench", "system", "--datasets", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2
