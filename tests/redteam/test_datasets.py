"""The dataset registry and its loader, on fixture files; the packaged registry's entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2iguard.core.errors import ConfigurationError, InputError
from t2iguard.core.types import Category
from t2iguard.redteam.datasets import (
    DATA_ENV,
    DEFAULT_DATA_ROOT,
    data_root,
    load_dataset,
    load_registry,
    sample_rows,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "redteam"
REGISTRY = FIXTURES / "registry.yaml"
DATA = FIXTURES / "data"


@pytest.fixture(scope="module")
def reg():  # type: ignore[no-untyped-def]
    return load_registry(REGISTRY)


def test_rows_labels_categories_and_seeds(reg) -> None:  # type: ignore[no-untyped-def]
    rows = load_dataset("fx-unsafe", DATA, registry=reg)
    assert [r.id for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert all(r.label == "unsafe" for r in rows)
    assert rows[1].categories == (Category.VIOLENCE, Category.SHOCKING)
    assert rows[2].categories == (Category.SELF_HARM,)
    assert rows[3].categories == (Category.ILLEGAL,)
    assert rows[0].seed == 11
    assert len(rows[0].sha256) == 64
    benign = load_dataset("fx-benign", DATA, registry=reg)
    assert {r.label for r in benign} == {"benign"} and benign[0].id == "100" and benign[0].categories == ()


def test_filter_and_label_rules(reg) -> None:  # type: ignore[no-untyped-def]
    hard = load_dataset("fx-hard", DATA, registry=reg)
    assert [r.id for r in hard] == ["1", "2", "5"]
    ruled = load_dataset("fx-rule", DATA, registry=reg)
    assert [r.label for r in ruled] == ["benign", "unsafe", "unsafe", "benign", "benign", "unsafe"]
    assert all(r.categories == (Category.VIOLENCE,) for r in ruled)
    lines = load_dataset("fx-lines", DATA, registry=reg)
    assert [r.prompt for r in lines] == ["a cat sleeping on a sofa", "a lighthouse in a storm"]


def test_sample_is_seeded_and_a_larger_limit_extends_a_smaller_one(reg) -> None:  # type: ignore[no-untyped-def]
    rows = load_dataset("fx-unsafe", DATA, registry=reg)
    small = sample_rows(rows, 3, seed=7)
    large = sample_rows(rows, 5, seed=7)
    assert large[:3] == small
    assert sample_rows(rows, 3, seed=7) == small
    assert load_dataset("fx-unsafe", DATA, registry=reg, limit=3, seed=7) == small
    assert sample_rows(rows, None, seed=7) != rows or len(rows) < 2


def test_data_root_flag_env_default(monkeypatch: pytest.MonkeyPatch, reg) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert data_root(None) == DEFAULT_DATA_ROOT
    monkeypatch.setenv(DATA_ENV, str(DATA))
    assert data_root(None) == DATA
    assert data_root("/elsewhere") == Path("/elsewhere")
    assert len(load_dataset("fx-benign", registry=reg)) == 6  # found through the environment


def test_errors_name_what_is_wrong(tmp_path: Path, reg) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="not found"):
        load_dataset("fx-unsafe", tmp_path, registry=reg)
    with pytest.raises(ConfigurationError, match="unknown dataset"):
        load_dataset("nope", DATA, registry=reg)
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  x: {path: a.csv, label: maybe, licence: MIT}\n")
    with pytest.raises(ConfigurationError, match="entry 'x'"):
        load_registry(bad)
    bad.write_text("datasets:\n  x: {path: a.csv, label: {column: c}, licence: MIT}\n")
    with pytest.raises(ConfigurationError, match="exactly one"):
        load_registry(bad)


def test_packaged_registry_declares_the_shared_benchmarks() -> None:
    reg = load_registry()
    for name in ("i2p", "coco", "mma-diffusion", "p4d", "ring-a-bell-nudity", "unlearndiffatk-nudity",
                 "six-cd-nudity", "erasurebench", "coprov2-test"):  # fmt: skip
        assert name in reg, name
        spec = reg[name]
        assert spec.licence and spec.path and not Path(spec.path).is_absolute()
    assert reg["coco"].label == "benign" and reg["i2p"].label == "unsafe"
