"""`t2iguard erase`, run as a real subprocess on a tiny random-weight diffusers folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2iguard.erase.random_models import random_components
from t2iguard.erase.record import RECORD_FILE, WEIGHTS_FILE
from t2iguard.erase.safegen import mosaic
from t2iguard.erase.sampling import to_pil

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "t2iguard.cli.main", *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("erase-cli") / "base"
    random_components(vae=True).save_pretrained(path)
    return path


def test_erase_uce_json(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "uce"
    r = run("erase", "--method", "uce", "-c", "a knife", "-c", "a gun", "-p", "a cat", "--model", str(base),
            "--out", str(out), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["method"] == "uce" and rec["concepts"] == ["a knife", "a gun"] and rec["preserve"] == ["a cat"]
    assert rec["base_model"] == str(base.resolve())
    assert all(".attn2.to_" in n for n in rec["changed_parameters"])
    assert json.loads((out / RECORD_FILE).read_text())["weights_sha256"] == rec["weights_sha256"]
    assert (out / WEIGHTS_FILE).stat().st_size < sum(f.stat().st_size for f in (base / "unet").iterdir())


def test_erase_safegen_with_a_triplet_csv_and_a_config_file(base: Path, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    unsafe = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    images = {"unsafe": unsafe, "censored": mosaic(unsafe, [[(2, 2, 14, 14)]] * 2, 4), "benign": -unsafe}
    rows = ["unsafe,censored,benign"]
    for i in range(2):
        for kind, batch in images.items():
            to_pil(batch[i : i + 1])[0].save(tmp_path / f"{kind}{i}.png")
        rows.append(f"unsafe{i}.png,censored{i}.png,benign{i}.png")
    (tmp_path / "triplets.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "cfg.yaml").write_text("method: esd-x\nconcepts: [ignored]\nlr: 0.001\nsteps: 50\n")
    out = tmp_path / "safegen"
    r = run("erase", "--method", "safegen", "-c", "a knife", "--model", str(base), "--out", str(out),
            "--triplets", str(tmp_path / "triplets.csv"), "--config", str(tmp_path / "cfg.yaml"), "--steps", "2",
            "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "erased a knife with safegen" in r.stdout
    rec = json.loads((out / RECORD_FILE).read_text())
    assert rec["config"]["lr"] == 0.001 and rec["config"]["steps"] == 2  # file, then flags
    assert rec["train"]["steps"] == 2 and all(".attn1." in n for n in rec["changed_parameters"])


def test_erase_usage_errors(base: Path, tmp_path: Path) -> None:
    r = run("erase", "--method", "nope", "-c", "x", "--model", str(base), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "unknown method" in r.stderr
    r = run("erase", "--method", "safegen", "-c", "x", "--model", str(base), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "--triplets" in r.stderr
    r = run("erase", "--method", "uce", "-c", "x", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "model not found" in r.stderr
