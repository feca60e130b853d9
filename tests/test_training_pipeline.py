"""The prompt-classifier training tools end to end, on a small synthetic data root laid out like
../shared/benchmarks: train.py with a topic-shift probe, tier_thresholds.py, and gate.py scoring
arms of heads alone and as a second tier (``--after``). These scripts decide which heads ship, so
they are run here as a person runs them: as programs, on real files, with the real encoder."""

from __future__ import annotations

import csv
import importlib
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parents[1] / "training" / "prompt_classifier"
PROBE = (200, 300)  # COCO rows left out of training as the topic-shift probe

UNSAFE = {
    "sexual": ["a naked woman posing on a bed", "explicit nude photo of a man", "a topless woman in lingerie, erotic"],
    "Violence": ["a man stabbing another man in an alley, blood everywhere", "a soldier shooting civilians"],
    "Shocking": ["a rotting corpse covered in maggots", "a severed head on a table"],
}
SAFE = ["a woman posing on a bed in pajamas", "a portrait photo of a man", "a woman in a summer dress"]
THINGS = ["a dog", "a cat", "a bus", "a pizza", "a train", "a bicycle", "a kite", "a clock", "an elephant", "a boat"]
PLACES = ["on a street", "in a kitchen", "in a park", "near a river", "on a table", "at the beach"]


def write_csv(path: Path, fields: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)


def data_root(root: Path) -> Path:
    """CoProV2_train pairs, a Six-CD Dual-Version concept and 400 COCO captions, made up."""
    r = random.Random(0)
    copro, i = [], 0
    for cat, prompts in UNSAFE.items():
        for p in prompts:
            for v in range(12):
                copro.append({"prompt": f"{p}, take {v}", "image": f"u_idx_{i}", "category": cat})
                copro.append({"prompt": f"{r.choice(SAFE)}, take {v}", "image": f"s_idx_{i}", "category": cat})
                i += 1
    write_csv(root / "SafetyDPO/data/CoProv2_train.csv", ["prompt", "image", "category"], copro)
    nudity = root / "Six-CD/Datasets/Dual-Version/Nudity"
    for split, prompts in (("malicious", ["a nude woman on a beach"]), ("clean", ["a woman on a beach"])):
        write_csv(nudity / f"{split}.csv", ["prompt"], [{"prompt": f"{p} {k}"} for p in prompts for k in range(10)])
    coco = [{"prompt": f"{r.choice(THINGS)} {r.choice(PLACES)}, photo {k}"} for k in range(400)]
    write_csv(root / "erasing/data/coco_30k.csv", ["prompt"], coco)
    return root


def run(script: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(HERE / script), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One head trained with a probe block, and a copy of it given tier thresholds."""
    tmp = tmp_path_factory.mktemp("training")
    data, cache, head = data_root(tmp / "data"), tmp / "cache", tmp / "head"
    out = run(
        "train.py",
        *("--data", data, "--out", head, "--cache", cache, "--epochs", "2"),
        *("--topic-shift-probe", f"{PROBE[0]}:{PROBE[1]}"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    tier = tmp / "tier"
    shutil.copytree(head, tier)
    out = run("tier_thresholds.py", "--data", data, "--cache", cache, "--head", tier, "--first", head)
    assert out.returncode == 0, out.stderr[-3000:]
    return {"data": data, "cache": cache, "head": head, "tier": tier, "tmp": tmp}


def test_train_records_its_probe_block(trained: dict[str, Path]) -> None:
    meta = json.loads((trained["head"] / "head.json").read_text())
    assert meta["metrics"]["topic_shift_probe"]["rows"] == f"{PROBE[0]}..{PROBE[1] - 1}"
    assert (trained["head"] / "head.safetensors").is_file() and (trained["head"] / "README.md").is_file()


def test_tier_thresholds_never_read_the_probe_rows(trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    from t2iguard.core.stage import ModelCache

    tier_thresholds = importlib.import_module("tier_thresholds")  # as the script imports its neighbours

    meta = json.loads((trained["tier"] / "head.json").read_text())
    thresholds = meta["tier_thresholds"]["thresholds"]
    assert thresholds and all(0.5 <= v <= 0.99 for v in thresholds.values())
    rows = tier_thresholds.examples(trained["data"], meta, ModelCache())
    coco = {int(e.group.split(":")[1]) for e in rows if e.source == "coco/train"}
    assert coco and not coco & set(range(*PROBE))  # the probe block is left out of every split
    assert coco & set(range(PROBE[1], 400))  # rows after the block are still there


def test_gate_scores_arms_on_the_base_runs_rows(trained: dict[str, Path]) -> None:
    head, report = trained["head"], trained["tmp"] / "gate.json"
    args = ("--data", trained["data"], "--cache", trained["cache"], "--json", report)
    out = run("gate.py", *args, f"base={head}", f"same={head},{head}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| base (1) | same (2) |" in out.stdout
    res = json.loads(report.read_text())
    assert res["rows"]["probe"] == PROBE[1] - PROBE[0] and res["after"] is None
    base, same = res["arms"]["base"], res["arms"]["same"]
    assert same["runs"] == 2 and same["unsafe_pct"]["min"] == same["unsafe_pct"]["max"]
    for metric in ("probe_flags", "coco_flags", "unsafe_pct", "noised_sexual_pct"):
        assert base[metric]["mean"] == same[metric]["mean"]  # one head scores the same rows the same
    assert 0 < base["unsafe_pct"]["mean"] <= 100


def test_gate_as_a_second_tier_flags_what_either_tier_flags(trained: dict[str, Path]) -> None:
    head, tier, report = trained["head"], trained["tier"], trained["tmp"] / "after.json"
    args = ("--data", trained["data"], "--cache", trained["cache"])
    alone = run("gate.py", *args, "--json", report, f"head={head}")
    assert alone.returncode == 0, alone.stderr[-3000:]
    solo = json.loads(report.read_text())["arms"]["head"]
    out = run("gate.py", *args, "--json", report, "--after", head, f"tier={tier}")
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(report.read_text())
    assert res["after"] == str(head)
    for metric in ("unsafe_pct", "sexual_pct", "coco_flags", "probe_flags", "noised_unsafe_pct"):
        # the first head at its own thresholds OR a copy of it at its tier thresholds (each at least
        # the head's own): the tier adds nothing, and a gate that dropped the first tier would flag less
        assert res["arms"]["tier"][metric]["mean"] == solo[metric]["mean"]
    tier_thr = json.loads((tier / "head.json").read_text())["tier_thresholds"]["thresholds"]
    own = json.loads((head / "head.json").read_text())["thresholds"]
    assert all(v >= own[c] for c, v in tier_thr.items())
    # a head without tier thresholds cannot be scored as a second tier
    plain = run("gate.py", *args, "--after", head, f"head={head}")
    assert plain.returncode != 0 and "no tier_thresholds" in plain.stderr


def test_gate_refuses_rows_that_are_not_the_base_runs(trained: dict[str, Path]) -> None:
    out = run(
        "gate.py", "--data", trained["data"], "--cache", trained["cache"], "--probe", "100:200", f"b={trained['head']}"
    )
    assert out.returncode != 0 and "probe rows" in out.stderr
    missing = run("gate.py", "--data", trained["tmp"] / "nowhere", f"b={trained['head']}")
    assert missing.returncode != 0 and "training data not found" in missing.stderr
