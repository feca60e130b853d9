"""Erasure on the bundled tiny model's world: prompt sets, SafeGen triplets, the classifier metric,
and a real erasure of the trained tiny model measured by the real concept classifier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from t2iguard.core.errors import ConfigurationError
from t2iguard.erase import ErasureConfig, erase, load_components, world


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_concept_names_resolve_to_world_keys() -> None:
    assert world.resolve_keys(["a blade", "drop of blood", "knife", "a kitchen knife"]) == ["knife", "blood"]
    assert world.resolve_keys(["a handgun on a blue background"]) == ["pistol"]
    with pytest.raises(ConfigurationError, match="names no concept"):
        world.resolve_keys(["a unicorn"])


def test_prompt_sets_speak_the_world_vocabulary() -> None:
    vocab = set(world.tiny().world.vocabulary())
    for key in ("knife", "bomb", "blood"):
        sets = world.prompt_sets(key)
        assert sets["direct"] == [world.concept_prompt(key)]
        assert world.tiny().concepts.concept(key).name in sets["paraphrase"]  # the bare name
        assert len(sets["composition"]) == 4 and all("background" in p for p in sets["composition"])
        for prompts in sets.values():
            for p in prompts:
                assert set(p.replace(",", " , ").split()) <= vocab, p
    assert "a blade" in world.prompt_sets("knife")["paraphrase"]


def test_world_triplets_mosaic_the_concept_only() -> None:
    trip = world.world_triplets(["a skull"], n=4, block=8)
    assert trip.unsafe.shape == trip.censored.shape == trip.benign.shape == (4, 3, 32, 32)
    diff = (trip.unsafe - trip.censored).abs().sum(dim=1) > 0.05
    for i in range(4):
        assert 0 < diff[i].float().mean() < 0.6  # something changed, not the whole image
    clf = world.load_classifier()
    skull = list(world.tiny().concepts.CONCEPT_KEYS).index("skull")
    p_unsafe = world.classify(clf, trip.unsafe)[:, skull]
    p_censored = world.classify(clf, trip.censored)[:, skull]
    p_benign = world.classify(clf, trip.benign)[:, skull]
    # the mosaic hides a skull from the classifier; the scenes without it never show one
    assert p_unsafe.min() > 0.5 > p_censored.max() and p_benign.max() < 0.5
    # a mosaicked knife keeps its colours, and the classifier often still sees it: weaker, not gone
    knife = list(world.tiny().concepts.CONCEPT_KEYS).index("knife")
    trip = world.world_triplets(["a knife"], n=8, block=8)
    assert world.classify(clf, trip.censored)[:, knife].mean() < world.classify(clf, trip.unsafe)[:, knife].mean()


@pytest.mark.slow
def test_uce_erases_a_concept_of_the_trained_tiny_model() -> None:
    base = load_components("tiny")
    comps = load_components("tiny")
    others = [world.concept_prompt(c.key) for c in world.tiny().concepts.CONCEPTS if c.key != "knife"]
    erase(comps, ErasureConfig(method="uce", concepts=["a knife"], preserve=others))
    report = world.evaluate_erasure(comps, ["knife"], base=base, n=8, n_other=2, steps=10)
    assert report["base_summary"]["direct"] >= 0.5  # the trained model draws knives
    assert report["summary"]["direct"] < report["base_summary"]["direct"]
    assert set(report["rates"]) >= {"knife/direct", "knife/paraphrase", "knife/composition", "other/apple"}
    assert report["preservation_ratio"] > 0.5


@pytest.mark.slow
def test_eval_erasure_cli(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "t2iguard.cli.main", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)

    out = tmp_path / "uce"
    r = run("erase", "--method", "uce", "-c", "a skull", "--model", "tiny", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    r = run("eval-erasure", "--model", str(out), "--n", "4", "--n-other", "1", "--steps", "8", "--write", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["erased"] == ["skull"] and "preservation_ratio" in report
    assert json.loads((out / "erasure.json").read_text())["metrics"]["tiny_world"]["erased"] == ["skull"]
