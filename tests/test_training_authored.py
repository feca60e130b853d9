"""The prompt classifier's training script reads authored prompt files: every shipped file parses and
draws benign or labelled prompts as it says, and a set's optional loss weight reaches its rows."""

from __future__ import annotations

import importlib
import random
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parents[1] / "training" / "prompt_classifier"


@pytest.fixture
def train(monkeypatch: pytest.MonkeyPatch) -> Any:
    """training/prompt_classifier/train.py, imported as the script runs."""
    monkeypatch.syspath_prepend(str(HERE))
    return importlib.import_module("train")


def write(tmp_path: Path, sets: str) -> Path:
    path = tmp_path / "authored.yaml"
    path.write_text(
        'version: "1"\nslots:\n  who: [a nurse, a baker]\n  where: [at night, in a bar]\nsets:\n' + sets,
        encoding="utf-8",
    )
    return path


def test_set_weight_reaches_every_row_and_category(train: Any, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  - name: light\n    labels: []\n    weight: 0.3\n    templates: ['{who} {where}']\n    n: 4\n"
        "  - name: plain\n    labels: [sexual]\n    prompts: [a written prompt]\n",
    )
    rows = train.load_authored(path, random.Random(0))
    light = [r for r in rows if r.source == "authored/light"]
    plain = [r for r in rows if r.source == "authored/plain"]
    assert sorted(r.text for r in light) == [
        "a baker at night",
        "a baker in a bar",
        "a nurse at night",
        "a nurse in a bar",
    ]
    assert all(r.weight == {c: 0.3 for c in train.CATEGORIES} for r in light)
    assert all(r.labels[c] == 0 for r in light for c in train.CATEGORIES)
    # no weight given: the example's default (1 for every category in the loss)
    assert plain[0].weight == {} and plain[0].labels[train.Category.SEXUAL] == 1
    assert train.label_row(light[0])[1] == [0.3] * len(train.CATEGORIES)


@pytest.mark.parametrize("weight", ["0", "-1", "1.5"])
def test_set_weight_out_of_range_is_refused(train: Any, tmp_path: Path, weight: str) -> None:
    path = write(tmp_path, f"  - name: bad\n    labels: []\n    weight: {weight}\n    prompts: [x]\n")
    with pytest.raises(ValueError, match="weight must be in"):
        train.load_authored(path, random.Random(0))


@pytest.mark.parametrize("path", sorted(HERE.glob("authored_prompts*.yaml")), ids=lambda p: p.name)
def test_every_authored_file_parses(train: Any, path: Path) -> None:
    rows = train.load_authored(path, random.Random(0))
    assert rows and all(r.text.strip() and "{" not in r.text for r in rows)
