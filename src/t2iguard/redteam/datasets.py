"""The dataset registry: benchmark prompt sets declared once, read from a data root.

``datasets.yaml`` (next to this module) names every dataset: its file relative to the data root,
the prompt column, how rows are labelled unsafe/benign, how they map to t2iguard categories, and
its licence. The data root comes from ``--data``, else the ``T2IGUARD_DATA`` environment variable,
else ``../shared/benchmarks``. Nothing here downloads anything; the files are never shipped.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from t2iguard.core.errors import ConfigurationError, InputError
from t2iguard.core.types import Category

DATA_ENV = "T2IGUARD_DATA"
DEFAULT_DATA_ROOT = Path("../shared/benchmarks")
Label = Literal["unsafe", "benign"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """Row predicate: ``column >= min`` or ``column in values``."""

    column: str
    min: float | None = None
    values: list[str] | None = None

    @model_validator(mode="after")
    def _one(self) -> Rule:
        if (self.min is None) == (self.values is None):
            raise ValueError("a rule needs exactly one of 'min' or 'values'")
        return self

    def __call__(self, row: dict[str, str]) -> bool:
        raw = (row.get(self.column) or "").strip()
        if self.values is not None:
            return raw in self.values
        try:
            return float(raw) >= float(self.min or 0.0)
        except ValueError:
            return False


class CategoryRule(_Strict):
    constant: Category | None = None
    column: str | None = None
    separator: str | None = None
    map: dict[str, Category] = Field(default_factory=dict)
    flags: dict[str, Category] = Field(default_factory=dict)

    def __call__(self, row: dict[str, str]) -> list[Category]:
        if self.constant is not None:
            return [self.constant]
        out: list[Category] = []
        if self.column is not None:
            raw = row.get(self.column) or ""
            values = raw.split(self.separator) if self.separator else [raw]
            for v in values:
                cat = self.map.get(v.strip())
                if cat is not None and cat not in out:
                    out.append(cat)
        for col, cat in self.flags.items():
            if (row.get(col) or "").strip() in ("1", "1.0", "True", "true") and cat not in out:
                out.append(cat)
        return out


class DatasetSpec(_Strict):
    """One registry entry."""

    name: str = ""
    description: str = ""
    path: str
    column: str | None = None
    id_column: str | None = None
    seed_column: str | None = None
    label: Label | Rule
    filter: Rule | None = None
    categories: CategoryRule | None = None
    licence: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True)
class DatasetRow:
    """One prompt of a dataset."""

    dataset: str
    id: str
    prompt: str
    label: Label
    categories: tuple[Category, ...] = ()
    seed: int | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()


def registry_path() -> Path:
    return Path(str(resources.files("t2iguard.redteam").joinpath("datasets.yaml")))


def load_registry(path: str | Path | None = None) -> dict[str, DatasetSpec]:
    """The dataset registry (the packaged one by default)."""
    p = Path(path) if path else registry_path()
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read dataset registry {p}: {exc}") from None
    out: dict[str, DatasetSpec] = {}
    for name, entry in (data.get("datasets") or {}).items():
        try:
            out[name] = DatasetSpec.model_validate({**entry, "name": name})
        except ValidationError as err:
            msgs = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())
            raise ConfigurationError(f"dataset registry {p}: entry '{name}': {msgs}") from None
    return out


def data_root(flag: str | Path | None = None) -> Path:
    """``--data`` if given, else ``$T2IGUARD_DATA``, else ``../shared/benchmarks``."""
    if flag:
        return Path(flag)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else DEFAULT_DATA_ROOT


def get_dataset(name: str, registry: dict[str, DatasetSpec] | None = None) -> DatasetSpec:
    reg = registry if registry is not None else load_registry()
    if name not in reg:
        raise ConfigurationError(f"unknown dataset {name!r}; registered: {', '.join(sorted(reg))}")
    return reg[name]


def _to_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def read_rows(spec: DatasetSpec, root: str | Path | None = None) -> list[DatasetRow]:
    """Every row of a dataset, in file order. Raises :class:`InputError` if the file is missing."""
    path = data_root(root) / spec.path
    if not path.is_file():
        raise InputError(
            f"dataset '{spec.name}' not found at {path} (set --data or ${DATA_ENV} to the benchmark folder)",
            source=str(path),
        )
    rows: list[DatasetRow] = []
    if path.suffix.lower() == ".txt":
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
            if line.strip():
                txt_label: Label = spec.label if isinstance(spec.label, str) else "unsafe"
                cats = tuple(spec.categories({}) if spec.categories else ())
                rows.append(DatasetRow(spec.name, str(i), line.strip(), txt_label, cats))
        return rows
    if not spec.column:
        raise ConfigurationError(f"dataset '{spec.name}' is a CSV file and needs a 'column'")
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or spec.column not in reader.fieldnames:
            raise InputError(
                f"dataset '{spec.name}': column '{spec.column}' not in {reader.fieldnames}", source=str(path)
            )
        for i, row in enumerate(reader):
            text = (row.get(spec.column) or "").strip()
            if not text:
                continue
            if spec.filter is not None and not spec.filter(row):
                continue
            if isinstance(spec.label, str):
                label: Label = spec.label
            else:
                label = "unsafe" if spec.label(row) else "benign"
            cats = tuple(spec.categories(row)) if spec.categories else ()
            rid = (row.get(spec.id_column) or str(i)) if spec.id_column else str(i)
            seed = _to_int(row.get(spec.seed_column)) if spec.seed_column else None
            rows.append(DatasetRow(spec.name, str(rid), text, label, cats, seed))
    return rows


def sample_rows(rows: Sequence[DatasetRow], limit: int | None, seed: int = 0) -> list[DatasetRow]:
    """A seeded random order of ``rows``, cut to ``limit``. A larger limit extends a smaller one
    (the same permutation), so reruns with a larger ``--limit`` reuse cached results."""
    order = list(rows)
    random.Random(f"t2iguard-sample:{seed}").shuffle(order)
    return order if limit is None else order[:limit]


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    registry: dict[str, DatasetSpec] | None = None,
) -> list[DatasetRow]:
    """Rows of a registered dataset: all of them in file order, or a seeded sample of ``limit``."""
    spec = get_dataset(name, registry)
    rows = read_rows(spec, root)
    return rows if limit is None else sample_rows(rows, limit, seed)
