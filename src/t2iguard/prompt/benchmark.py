"""The prompt benchmark behind ``t2iguard bench prompts``.

Runs the policy's prompt stages (and, as baselines, the blocklist alone and the offline prompt
classifiers on PyPI when they are installed) over named datasets — a CSV path, a prompt column
and a label rule (``benchmark_datasets.yaml``) — and reports, per dataset and per category: the
block rate on unsafe sets, the false-positive rate on benign sets, precision/recall/F1 at the
operating point, ROC-AUC and recall at 1 % and 2 % FPR (one-class sets are joined with the benign
reference set for these), and latency p50/p95. It writes JSON, a markdown table and an HTML
report with ROC curves and per-category bars.

One run of the stack scores every prompt with every stage (short-circuit off, so every stage sees
every prompt); the decision is the same as with short-circuit on, because ``block`` is the most
severe action either way. The per-stage systems (``blocklist``, ``classifier``) are read from that
run's stage results. Latency is measured separately, prompt by prompt, with the policy as written.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import platform
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from t2iguard.core.decision import Decision, StageResult
from t2iguard.core.errors import ConfigurationError, InputError, MissingDependencyError
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import Policy
from t2iguard.core.stage import ModelCache, PromptContext, PromptStage
from t2iguard.core.types import Action, Category, Phase

BASELINES = ("nsfw-bilstm", "nsfw-char-embed", "profanity-check")
BASELINE_INSTALL = "pip install en-prompt-nsfw-pipeline-bilstm en-prompt-nsfw-pipeline-char-embed alt-profanity-check"


# ---- datasets ------------------------------------------------------------------------------
class Strata(BaseModel):
    """Report a dataset's metrics per bin of a numeric column too, e.g. I2P's ``nudity_percentage``
    (the share of the source's generated images in which a detector found nudity): how recall
    depends on how unsafe a prompt's images really were. Bins are ``[edges[i], edges[i+1])``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    edges: list[float] = Field(min_length=2)

    @field_validator("edges")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(b <= a for a, b in pairwise(v)):
            raise ValueError("strata edges must increase")
        return v

    @property
    def labels(self) -> list[str]:
        """The bins' names in order (``[lo, hi)``), then ``"missing"``."""
        return [f"[{lo:g}, {hi:g})" for lo, hi in pairwise(self.edges)] + ["missing"]

    def label(self, value: str | None) -> str:
        """The bin of a cell, or ``"missing"`` for an empty, non-numeric or out-of-range one."""
        try:
            x = float(value or "")
        except ValueError:
            return "missing"
        for (lo, hi), name in zip(pairwise(self.edges), self.labels, strict=False):
            if lo <= x < hi:
                return name
        return "missing"


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: str
    column: str
    description: str = ""
    rows: str | None = None
    label: Literal["unsafe", "benign", "column"]
    label_column: str | None = None
    positive_values: list[str] = Field(default_factory=lambda: ["1", "1.0", "true", "True", "yes"])
    category: Category | None = None
    categories_column: str | None = None
    category_map: dict[str, Category] = Field(default_factory=dict)
    category_columns: dict[str, Category] = Field(default_factory=dict)
    filter_column: str | None = None
    filter_contains: str | None = None
    strata: Strata | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: str | None = None
    datasets: list[DatasetSpec]

    @classmethod
    def load(cls, path: str | Path | None = None) -> Manifest:
        if path is None:
            text = resources.files("t2iguard.prompt").joinpath("benchmark_datasets.yaml").read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return cls.model_validate(yaml.safe_load(text))


@dataclass
class Dataset:
    spec: DatasetSpec
    texts: list[str]
    unsafe: np.ndarray  # bool per row
    categories: list[frozenset[Category]]
    strata: list[str] | None = None  # the bin of spec.strata per row

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def one_class(self) -> bool:
        return bool(self.unsafe.all() or (~self.unsafe).all())


def _slice(rows: str | None, n: int) -> slice:
    if not rows:
        return slice(0, n)
    start, _, stop = rows.partition(":")
    return slice(int(start) if start else None, int(stop) if stop else None)


def load_dataset(spec: DatasetSpec, root: Path, *, limit: int | None = None, seed: int = 0) -> Dataset:
    """Read ``spec`` from ``root``; ``limit`` keeps a seeded random sample of that many rows."""
    path = root / spec.path
    if not path.is_file():
        raise ConfigurationError(f"dataset {spec.name}: {path} not found (set --data or T2IGUARD_DATA)")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    rows = rows[_slice(spec.rows, len(rows))]
    if spec.filter_column:
        rows = [r for r in rows if (spec.filter_contains or "") in (r.get(spec.filter_column) or "")]
    if rows and spec.column not in rows[0]:
        raise ConfigurationError(f"dataset {spec.name}: no column {spec.column!r} in {path}")
    if rows and spec.strata is not None and spec.strata.column not in rows[0]:
        raise ConfigurationError(f"dataset {spec.name}: no strata column {spec.strata.column!r} in {path}")
    rows = [r for r in rows if (r.get(spec.column) or "").strip()]
    if limit is not None and len(rows) > limit:
        rows = random.Random(f"{seed}:{spec.name}").sample(rows, limit)
    texts, unsafe, cats = [], [], []
    for r in rows:
        texts.append(r[spec.column])
        if spec.label == "column":
            assert spec.label_column is not None
            is_unsafe = (r.get(spec.label_column) or "").strip() in spec.positive_values
        else:
            is_unsafe = spec.label == "unsafe"
        c: set[Category] = set()
        if is_unsafe and spec.category is not None:
            c.add(spec.category)
        if spec.categories_column:
            for part in (r.get(spec.categories_column) or "").split(","):
                mapped = spec.category_map.get(part.strip())
                if mapped is not None:
                    c.add(mapped)
        for column, cat in spec.category_columns.items():
            if (r.get(column) or "").strip() in spec.positive_values:
                c.add(cat)
        unsafe.append(is_unsafe)
        cats.append(frozenset(c))
    strata = [spec.strata.label(r.get(spec.strata.column)) for r in rows] if spec.strata else None
    return Dataset(spec, texts, np.array(unsafe, dtype=bool), cats, strata)


# ---- systems -------------------------------------------------------------------------------
@dataclass
class Scores:
    """What one system says about a list of prompts."""

    flagged: np.ndarray  # bool: action > allow (block, review, regenerate or transform)
    score: np.ndarray  # "unsafe" score: max over the enforced categories
    per_category: dict[Category, np.ndarray] = field(default_factory=dict)
    tier: list[str] | None = None  # the stage that decided, per prompt (cascade only)
    refused: np.ndarray | None = None  # bool: refused (review or block, or rejected input); cascade only


@dataclass
class System:
    """A system under test: ``batch`` scores prompts (None for the stack's views, which are read
    from one run of the stack), ``single`` and ``batched`` are timed for latency and throughput."""

    name: str
    description: str
    batch: Callable[[list[str]], Scores] | None
    single: Callable[[str], Any]
    batched: Callable[[list[str]], Any]


def enforced_categories(policy: Policy) -> list[Category]:
    return [c for c in Category if policy.category(c).action > Action.ALLOW]


def _policy_without_short_circuit(policy: Policy) -> Policy:
    data = policy.model_dump(mode="python")
    data["short_circuit"] = False
    data["source"] = policy.source
    return Policy.model_validate(data)


def stack_systems(
    policy: Policy, models: ModelCache, *, batch_size: int = 256, progress: Callable[[str], None] | None = None
) -> tuple[Callable[[list[str]], dict[str, Scores]], dict[str, System]]:
    """The cascade and its per-stage views, from one run of the prompt stages."""
    enforced = enforced_categories(policy)
    full = SafetyStack(_policy_without_short_circuit(policy), models=models)
    live = SafetyStack(policy, models=models)
    prompt_stages = [s.name for s in full.stages(Phase.PROMPT_CHECK)]
    learned = {s.name for s in full.stages(Phase.PROMPT_CHECK) if s.cost != "cheap"}

    def run(texts: list[str]) -> dict[str, Scores]:
        n = len(texts)
        flagged = {k: np.zeros(n, dtype=bool) for k in ("cascade", *prompt_stages)}
        score = {k: np.zeros(n, dtype=np.float32) for k in flagged}
        percat = {k: {c: np.zeros(n, dtype=np.float32) for c in Category} for k in flagged}
        tiers: list[str] = []
        refused = np.zeros(n, dtype=bool)
        t0 = time.perf_counter()
        for start in range(0, n, batch_size):
            chunk = texts[start : start + batch_size]
            out = full.check_prompts(chunk)
            for j, d in enumerate(out):
                i = start + j
                if isinstance(d, InputError):
                    flagged["cascade"][i] = True  # rejected input: counted as flagged
                    refused[i] = True
                    tiers.append("input")
                    continue
                # flagged: a policy category acted on (augmentation such as `diversify` is no flag)
                flagged["cascade"][i] = d.action > Action.ALLOW and (bool(d.flagged) or d.action >= Action.REVIEW)
                refused[i] = d.action >= Action.REVIEW
                tiers.append(_tier(d))
                # the cascade's score: 1 where a tier flagged the prompt, else the learned tiers'
                # probabilities (cheap tiers' unflagged evidence, e.g. weak terms, is not a score)
                for r in d.stages:
                    vec = r.artifacts.get("scores") or {str(k): v for k, v in r.scores.items()}
                    for c in Category:
                        v = 1.0 if any(e.category == c and e.action > Action.ALLOW for e in r.trace) else 0.0
                        if r.stage in learned:
                            v = max(v, float(vec.get(str(c), 0.0)))
                        percat["cascade"][c][i] = max(percat["cascade"][c][i], v)
                    if any(e.action > Action.ALLOW and e.category is not None for e in r.trace):
                        score["cascade"][i] = 1.0
                score["cascade"][i] = max(
                    score["cascade"][i], max((percat["cascade"][c][i] for c in enforced), default=0.0)
                )
                for r in d.stages:
                    if r.stage not in flagged:
                        continue
                    flagged[r.stage][i] = r.action > Action.ALLOW
                    vec = r.artifacts.get("scores") or {str(k): v for k, v in r.scores.items()}
                    for c in Category:
                        percat[r.stage][c][i] = float(vec.get(str(c), 0.0))
                    score[r.stage][i] = max((float(vec.get(str(c), 0.0)) for c in enforced), default=0.0)
            if progress:
                done = min(n, start + batch_size)
                progress(f"  {done}/{n} prompts ({done / (time.perf_counter() - t0):.0f}/s)")
        result = {}
        for k in flagged:
            cascade = k == "cascade"
            result[k] = Scores(
                flagged[k], score[k], percat[k], tiers if cascade else None, refused if cascade else None
            )
        return result

    systems: dict[str, System] = {
        "cascade": System(
            "cascade",
            "the policy's prompt stages: " + " → ".join(prompt_stages),
            None,
            live.check_prompt,
            live.check_prompts,
        )
    }
    for stage in full.stages(Phase.PROMPT_CHECK):
        if stage.name == "normalize":
            continue
        single, batched = _stage_alone(full, stage.name)
        systems[stage.name] = System(
            stage.name, f"the '{stage.name}' stage alone (normalize, then this stage)", None, single, batched
        )
    return run, systems


def _tier(d: Decision) -> str:
    if not d.decided_by:
        return "allow"
    return d.decided_by[0].stage


def _stage_alone(stack: SafetyStack, name: str) -> tuple[Callable[[str], Any], Callable[[list[str]], Any]]:
    """Normalize, then run one stage: one prompt, and a batch."""
    stages = {s.name: s for s in stack.stages(Phase.PROMPT_CHECK) if isinstance(s, PromptStage)}
    stage = stages[name]
    normalize = stages.get("normalize")

    def batched(texts: list[str]) -> list[StageResult]:
        ctxs = [PromptContext(original=t, text=t) for t in texts]
        if normalize is not None:
            for c, r in zip(ctxs, normalize.scan_batch(ctxs), strict=True):
                c.normalized = r.artifacts.get("normalized")
                c.results.append(r)
        return stage.scan_batch(ctxs)

    return (lambda text: batched([text])[0]), batched


def baseline_systems(names: Sequence[str], warn: Callable[[str], None]) -> dict[str, System]:
    """The offline PyPI prompt classifiers, when installed (they are never dependencies)."""
    out: dict[str, System] = {}
    for name in names:
        try:
            if name in ("nsfw-bilstm", "nsfw-char-embed"):
                out[name] = _spacy_nsfw(name)
            elif name == "profanity-check":
                out[name] = _profanity()
            else:
                warn(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
        except MissingDependencyError as exc:
            warn(f"baseline {name} skipped: {exc} (all three, never dependencies: {BASELINE_INSTALL})")
    return out


def _spacy_nsfw(name: str) -> System:
    package = {
        "nsfw-bilstm": "en_prompt_nsfw_pipeline_bilstm",
        "nsfw-char-embed": "en_prompt_nsfw_pipeline_char_embed",
    }[name]
    try:
        import spacy

        nlp = spacy.load(package)
    except (ImportError, OSError):
        raise MissingDependencyError(package.replace("_", "-"), None, f"the {name} baseline") from None

    def scores(cats: dict[str, float]) -> tuple[float, float]:
        return float(cats.get("adult", 0.0)) + float(cats.get("cp", 0.0)), float(cats.get("cp", 0.0))

    def batch(texts: list[str]) -> Scores:
        pairs = [scores(doc.cats) for doc in nlp.pipe(texts, batch_size=256)]
        nsfw = np.array([p[0] for p in pairs], dtype=np.float32)
        cp = np.array([p[1] for p in pairs], dtype=np.float32)
        return Scores(nsfw >= 0.5, nsfw, {Category.SEXUAL: nsfw, Category.MINORS: cp})

    return System(name, f"{package} (spaCy textcat: P(adult) + P(cp) >= 0.5; licence UNLICENSED)", batch, nlp, batch)


def _profanity() -> System:
    try:
        from profanity_check import predict_prob
    except ImportError:
        raise MissingDependencyError("alt-profanity-check", None, "the profanity-check baseline") from None

    def batch(texts: list[str]) -> Scores:
        p = np.asarray(predict_prob(texts), dtype=np.float32)
        return Scores(p >= 0.5, p)

    return System(
        "profanity-check",
        "alt-profanity-check (linear SVM on n-grams, P >= 0.5)",
        batch,
        lambda t: predict_prob([t]),
        batch,
    )


# ---- metrics -------------------------------------------------------------------------------
def roc_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and thresholds (descending), ties merged."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.where(np.diff(s))[0]
    idx = np.r_[distinct, len(s) - 1]
    tps = np.cumsum(y)[idx]
    fps = (1 + idx) - tps
    p, n = max(1, int(y.sum())), max(1, int((~y).sum()))
    return np.r_[0.0, fps / n], np.r_[0.0, tps / p], np.r_[np.inf, s[idx]]


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    if y.all() or (~y).all():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.trapezoid(tpr, fpr))


def recall_at_fpr(y: np.ndarray, s: np.ndarray, fpr_max: float) -> float:
    """Highest recall at a threshold whose false-positive rate is at most ``fpr_max``."""
    if y.all() or (~y).all():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, s)
    ok = fpr <= fpr_max + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def prf(y: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    tp = int((flagged & y).sum())
    fp = int((flagged & ~y).sum())
    fn = int((~flagged & y).sum())
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * p * r / (p + r) if tp else 0.0
    return {"precision": p, "recall": r, "f1": f1}


def _r(x: float, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def dataset_metrics(ds: Dataset, sc: Scores, ref: Dataset | None, ref_sc: Scores | None) -> dict[str, Any]:
    y, f, s = ds.unsafe, sc.flagged, sc.score
    m: dict[str, Any] = {"n": len(y), "unsafe": int(y.sum()), "benign": int((~y).sum())}
    if y.any():
        m["block_rate"] = _r(f[y].mean())
    if (~y).any():
        m["fpr"] = _r(f[~y].mean())
        if sc.refused is not None:
            # of the flagged benign prompts: refused (review/block) vs delivered rewritten (transform)
            m["refusal_rate"] = _r(sc.refused[~y].mean())
            m["transform_rate"] = _r((f & ~sc.refused)[~y].mean())
            if sc.tier is not None:
                m["benign_decided_by"] = _tier_counts(sc, ~ds.unsafe)
    joined = ""
    if ds.one_class and ds.unsafe.all() and ref is not None and ref_sc is not None and ref is not ds:
        y = np.r_[y, ref.unsafe]
        f = np.r_[f, ref_sc.flagged]
        s = np.r_[s, ref_sc.score]
        joined = ref.name
    if y.any() and (~y).any():
        m.update({k: _r(v) for k, v in prf(y, f).items()})
        m["roc_auc"] = _r(roc_auc(y, s))
        m["recall_at_1pct_fpr"] = _r(recall_at_fpr(y, s, 0.01))
        m["recall_at_2pct_fpr"] = _r(recall_at_fpr(y, s, 0.02))
        if joined:
            m["negatives_from"] = joined
    if sc.tier is not None and y.any():
        m["decided_by"] = _tier_counts(sc, ds.unsafe)
    return m


def _against_reference(positives: np.ndarray, negatives: np.ndarray) -> dict[str, float | None]:
    """ROC-AUC and recall at 1 % and 2 % FPR of unsafe prompts' scores against benign ones'."""
    y = np.r_[np.ones(len(positives), dtype=bool), np.zeros(len(negatives), dtype=bool)]
    s = np.r_[positives, negatives]
    return {
        "roc_auc": _r(roc_auc(y, s)),
        "recall_at_1pct_fpr": _r(recall_at_fpr(y, s, 0.01)),
        "recall_at_2pct_fpr": _r(recall_at_fpr(y, s, 0.02)),
    }


def stratum_metrics(ds: Dataset, sc: Scores, ref: Dataset | None, ref_sc: Scores | None) -> dict[str, Any]:
    """Block rate per bin of ``ds.strata``, and for an unsafe set, ROC-AUC and recall at 1 % and
    2 % FPR of each bin against the benign reference (the same negatives for every bin):
    ``{"column": ..., "bins": {label: metrics}}``, or ``{}`` for a dataset without strata."""
    spec = ds.spec.strata
    if ds.strata is None or spec is None:
        return {}
    labels = np.array(ds.strata)
    out: dict[str, Any] = {}
    for label in spec.labels:
        rows = labels == label
        if not rows.any():
            continue
        entry: dict[str, Any] = {"n": int(rows.sum()), "block_rate": _r(sc.flagged[rows].mean())}
        if ds.unsafe[rows].all() and ref is not None and ref_sc is not None and ref is not ds:
            entry.update(_against_reference(sc.score[rows], ref_sc.score))
        out[label] = entry
    return {"column": spec.column, "bins": out}


def _tier_counts(sc: Scores, among: np.ndarray) -> dict[str, int]:
    """How many flagged prompts each tier decided, among the prompts ``among`` selects."""
    return dict(Counter(t for t, flag, keep in zip(sc.tier or (), sc.flagged, among, strict=False) if flag and keep))


def category_metrics(ds: Dataset, sc: Scores, ref: Dataset | None, ref_sc: Scores | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in Category:
        pos = np.array([c in cs for cs in ds.categories], dtype=bool)
        if pos.sum() < 10:
            continue
        entry: dict[str, Any] = {"n": int(pos.sum()), "block_rate": _r(sc.flagged[pos].mean())}
        score = sc.per_category.get(c, sc.score)
        ref_score = None
        if ref is not None and ref_sc is not None:
            ref_score = ref_sc.per_category.get(c, ref_sc.score)
        if ref_score is not None and ref is not ds:
            entry.update(_against_reference(score[pos], ref_score))
            entry["scored_by"] = "category score" if c in sc.per_category else "unsafe score"
        out[str(c)] = entry
    return out


def latency(fn: Callable[[str], Any], texts: Sequence[str]) -> dict[str, float]:
    fn(texts[0])  # warm
    times = []
    for t in texts:
        t0 = time.perf_counter()
        fn(t)
        times.append((time.perf_counter() - t0) * 1000.0)
    a = np.array(times)
    return {"p50_ms": _r(float(np.percentile(a, 50)), 2), "p95_ms": _r(float(np.percentile(a, 95)), 2), "n": len(a)}  # type: ignore[dict-item]


# ---- the run -------------------------------------------------------------------------------
@dataclass
class BenchConfig:
    data: Path
    out: Path
    policy: Policy
    manifest: Manifest
    datasets: list[str] | None = None
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    limit: int | None = None
    latency_sample: int = 200
    throughput_sample: int = 2000
    seed: int = 0
    batch_size: int = 256
    plots: bool = True


def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark and write ``prompts.json``, ``prompts.md`` and ``prompts.html`` to ``cfg.out``."""
    specs = [d for d in cfg.manifest.datasets if cfg.datasets is None or d.name in cfg.datasets]
    if cfg.datasets:
        unknown = set(cfg.datasets) - {d.name for d in cfg.manifest.datasets}
        if unknown:
            raise ConfigurationError(f"unknown dataset(s): {', '.join(sorted(unknown))}")
    ref_name = cfg.manifest.reference
    if ref_name and ref_name not in {d.name for d in specs}:
        specs = [d for d in cfg.manifest.datasets if d.name == ref_name] + specs
    datasets = [load_dataset(s, cfg.data, limit=cfg.limit, seed=cfg.seed) for s in specs]
    for d in datasets:
        log(f"dataset {d.name}: {len(d.texts)} prompts ({int(d.unsafe.sum())} unsafe)")
    all_texts = sorted({t for d in datasets for t in d.texts})
    index = {t: i for i, t in enumerate(all_texts)}
    models = ModelCache()
    run, systems = stack_systems(cfg.policy, models, batch_size=cfg.batch_size, progress=log)
    systems.update(baseline_systems(cfg.baselines, log))

    log(f"scoring {len(all_texts)} distinct prompts with the prompt stages")
    t0 = time.perf_counter()
    stack_scores = run(all_texts)
    stack_s = time.perf_counter() - t0
    scored: dict[str, Scores] = {k: v for k, v in stack_scores.items() if k in systems}
    for name, sys_ in systems.items():
        if name in scored or sys_.batch is None:
            continue
        log(f"scoring with baseline {name}")
        scored[name] = sys_.batch(all_texts)

    def view(sc: Scores, texts: list[str]) -> Scores:
        idx = np.array([index[t] for t in texts], dtype=np.int64)
        return Scores(
            sc.flagged[idx],
            sc.score[idx],
            {c: v[idx] for c, v in sc.per_category.items()},
            [sc.tier[i] for i in idx] if sc.tier is not None else None,
            sc.refused[idx] if sc.refused is not None else None,
        )

    ref = next((d for d in datasets if d.name == ref_name), None)
    results: dict[str, Any] = {}
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for d in datasets:
        results[d.name] = {"description": d.spec.description, "systems": {}}
        for name in systems:
            sc = view(scored[name], d.texts)
            ref_sc = view(scored[name], ref.texts) if ref is not None else None
            metrics = dataset_metrics(d, sc, ref, ref_sc)
            cats = category_metrics(d, sc, ref, ref_sc)
            if cats:
                metrics["categories"] = cats
            strata = stratum_metrics(d, sc, ref, ref_sc)
            if strata:
                metrics["strata"] = strata
            results[d.name]["systems"][name] = metrics
            y, s = d.unsafe, sc.score
            if d.one_class and d.unsafe.all() and ref is not None and ref_sc is not None and ref is not d:
                y, s = np.r_[y, ref.unsafe], np.r_[s, ref_sc.score]
            if y.any() and (~y).any():
                fpr, tpr, _ = roc_curve(y, s)
                curves.setdefault(d.name, {})[name] = (fpr, tpr)

    # latency: prompt by prompt on a seeded sample; throughput: batched on another sample
    rng = random.Random(cfg.seed)
    sample = rng.sample(all_texts, min(cfg.latency_sample, len(all_texts)))
    through = rng.sample(all_texts, min(cfg.throughput_sample, len(all_texts)))
    speed_samples = {"all datasets": (sample, through)}
    if ref is not None:
        r_single = rng.sample(ref.texts, min(cfg.latency_sample, len(ref.texts)))
        r_batch = rng.sample(ref.texts, min(cfg.throughput_sample, len(ref.texts)))
        speed_samples = {f"{ref.name} (benign reference)": (r_single, r_batch), **speed_samples}
    lat: dict[str, Any] = {}
    for name, sys_ in systems.items():
        log(f"latency of {name} ({len(sample)} single prompts, {len(through)} batched)")
        entry: dict[str, Any] = latency(sys_.single, sample)
        t0 = time.perf_counter()
        for start in range(0, len(through), cfg.batch_size):
            sys_.batched(through[start : start + cfg.batch_size])
        entry["batched_prompts_per_s"] = _r(len(through) / (time.perf_counter() - t0), 1)
        lat[name] = entry

    report = {
        "benchmark": "t2iguard bench prompts",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": _cpus(),
            "note": "latency depends on load; shared machines give pessimistic numbers",
        },
        "policy": {"name": cfg.policy.name, "version": cfg.policy.version, "sha256": cfg.policy.sha256},
        "data_root": str(cfg.data),
        "reference": ref_name,
        "limit": cfg.limit,
        "systems": {k: v.description for k, v in systems.items()},
        "enforced_categories": [str(c) for c in enforced_categories(cfg.policy)],
        "stack_seconds": round(stack_s, 1),
        "datasets": results,
        "latency": lat,
        "classifier_stage": classifier_stage_speed(cfg.policy, models, speed_samples, log),
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "prompts.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    md = markdown_report(report)
    (cfg.out / "prompts.md").write_text(md, encoding="utf-8")
    images = plots(report, curves) if cfg.plots else {}
    for name, png in images.items():
        (cfg.out / f"{name}.png").write_bytes(png)
    (cfg.out / "prompts.html").write_text(html_report(report, md, images), encoding="utf-8")
    log(f"wrote {cfg.out / 'prompts.json'}, prompts.md, prompts.html")
    return report


def _cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def classifier_stage_speed(
    policy: Policy, models: ModelCache, samples: dict[str, tuple[list[str], list[str]]], log: Callable[[str], None]
) -> dict[str, Any] | None:
    """The classifier stage on its own, on the normalized text (as in the cascade): single-prompt
    latency and batched throughput per sample (name -> (single prompts, batch)), wall-clock and
    process CPU time (all threads; on a shared machine CPU time estimates the uncontended cost)."""
    stack = SafetyStack(policy, models=models)
    stages = {s.name: s for s in stack.stages(Phase.PROMPT_CHECK) if isinstance(s, PromptStage)}
    clf = next((s for s in stages.values() if type(s).__name__ == "PromptClassifierStage"), None)
    normalize = stages.get("normalize")
    if clf is None:
        return None

    def ctx(text: str) -> PromptContext:
        c = PromptContext(original=text, text=text)
        if normalize is not None:
            c.normalized = normalize.scan(c).artifacts.get("normalized")
        return c

    out: dict[str, Any] = {"stage": clf.name, "samples": {}}
    for name, (single, batch) in samples.items():
        single_ctx = [ctx(t) for t in single]
        batch_ctx = [ctx(t) for t in batch]
        clf.scan_batch(batch_ctx[:64])
        times, cpu = [], []
        for c in single_ctx:
            t0, c0 = time.perf_counter(), time.process_time()
            clf.scan(c)
            times.append((time.perf_counter() - t0) * 1000.0)
            cpu.append((time.process_time() - c0) * 1000.0)
        t0, c0 = time.perf_counter(), time.process_time()
        clf.scan_batch(batch_ctx)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        a, b = np.array(times), np.array(cpu)
        entry = {
            "single_p50_ms": _r(float(np.percentile(a, 50)), 2),
            "single_p95_ms": _r(float(np.percentile(a, 95)), 2),
            "single_cpu_p50_ms": _r(float(np.percentile(b, 50)), 2),
            "single_cpu_p95_ms": _r(float(np.percentile(b, 95)), 2),
            "batched_prompts_per_s": _r(len(batch_ctx) / dt, 1),
            "batched_prompts_per_cpu_s": _r(len(batch_ctx) / max(dc, 1e-9), 1),
            "single_prompts": len(single_ctx),
            "batch_prompts": len(batch_ctx),
        }
        out["samples"][name] = entry
        log(f"classifier stage on {name}: {entry}")
    return out


# ---- reports -------------------------------------------------------------------------------
def _tier_list(tiers: dict[str, int]) -> str:
    """ "classifier 94, public_figure 25": most decisions first."""
    return ", ".join(f"{k} {v}" for k, v in sorted(tiers.items(), key=lambda kv: -kv[1]))


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{100 * v:.1f}%" if pct else f"{v:.3f}"
    return str(v)


def markdown_report(report: dict[str, Any]) -> str:
    lines = [
        f"# t2iguard bench prompts — {report['date']}",
        "",
        f"Policy `{report['policy']['name']}` {report['policy']['version']}; data root `{report['data_root']}`; "
        f"benign reference for one-class sets: `{report['reference']}`; machine: {report['machine']['cpus']} CPUs "
        f"({report['machine']['processor']}). Flagged = any action other than `allow`. Scores for ROC: the "
        "highest score over the categories the policy enforces; for the cascade, 1 where a tier flagged "
        "the prompt and otherwise the learned tiers' probabilities. Latency was measured on a shared "
        "machine (other jobs running): see the CPU-time columns.",
        "",
        "## Per dataset",
        "",
        "| dataset | system | n | block rate | FPR | precision | recall | F1 | ROC-AUC | R@1%FPR | R@2%FPR |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dname, d in report["datasets"].items():
        for sname, m in d["systems"].items():
            lines.append(
                f"| {dname} | {sname} | {m['n']} | {_fmt(m.get('block_rate'), True)} | {_fmt(m.get('fpr'), True)} | "
                f"{_fmt(m.get('precision'))} | {_fmt(m.get('recall'))} | {_fmt(m.get('f1'))} | "
                f"{_fmt(m.get('roc_auc'))} | "
                f"{_fmt(m.get('recall_at_1pct_fpr'))} | {_fmt(m.get('recall_at_2pct_fpr'))} |"
            )
    lines += ["", "## Per category (cascade; positives of each category against the benign reference)", ""]
    lines += [
        "| dataset | category | n | block rate | ROC-AUC | R@1%FPR | R@2%FPR |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for dname, d in report["datasets"].items():
        cats = d["systems"].get("cascade", {}).get("categories", {})
        for cname, m in cats.items():
            lines.append(
                f"| {dname} | {cname} | {m['n']} | {_fmt(m.get('block_rate'), True)} | {_fmt(m.get('roc_auc'))} | "
                f"{_fmt(m.get('recall_at_1pct_fpr'))} | {_fmt(m.get('recall_at_2pct_fpr'))} |"
            )
    strata_rows = [
        (dname, sname, m["strata"])
        for dname, d in report["datasets"].items()
        for sname, m in d["systems"].items()
        if "strata" in m
    ]
    if strata_rows:
        lines += ["", "## Per stratum (bins of a dataset column, against the benign reference)", ""]
        lines += [
            "| dataset | column | bin | system | n | block rate | ROC-AUC | R@1%FPR | R@2%FPR |",
            "|---|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for dname, sname, st in strata_rows:
            for label, m in st["bins"].items():
                lines.append(
                    f"| {dname} | {st['column']} | {label} | {sname} | {m['n']} | {_fmt(m.get('block_rate'), True)} | "
                    f"{_fmt(m.get('roc_auc'))} | {_fmt(m.get('recall_at_1pct_fpr'))} | "
                    f"{_fmt(m.get('recall_at_2pct_fpr'))} |"
                )
    lines += ["", "## Which tier decided (cascade, unsafe prompts flagged)", ""]
    for dname, d in report["datasets"].items():
        tiers = d["systems"].get("cascade", {}).get("decided_by")
        if tiers:
            lines.append(f"- {dname}: {_tier_list(tiers)}")
    benign = [
        (dname, m)
        for dname, d in report["datasets"].items()
        if (m := d["systems"].get("cascade", {})).get("refusal_rate") is not None
    ]
    if benign:
        lines += [
            "",
            "## Benign prompts the cascade flagged: refused or delivered rewritten",
            "",
            "A transform (anonymizing a name the gazetteer does not know, rewriting) delivers an image of "
            "the rewritten prompt; a refusal (review or block) delivers none. Both count in the FPR above.",
            "",
            "| dataset | benign | FPR (flagged) | refused | transformed | which tier decided (benign, flagged) |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for dname, m in benign:
            lines.append(
                f"| {dname} | {m['benign']} | {_fmt(m.get('fpr'), True)} | {_fmt(m.get('refusal_rate'), True)} | "
                f"{_fmt(m.get('transform_rate'), True)} | {_tier_list(m.get('benign_decided_by', {}))} |"
            )
    lines += ["", "## Latency (single prompt) and throughput (batched)", ""]
    lines += ["| system | p50 ms | p95 ms | batched prompts/s |", "|---|---:|---:|---:|"]
    for name, m in report["latency"].items():
        lines.append(f"| {name} | {_fmt(m['p50_ms'])} | {_fmt(m['p95_ms'])} | {_fmt(m['batched_prompts_per_s'])} |")
    cs = report.get("classifier_stage")
    if cs:
        lines += [
            "",
            f"### Classifier stage alone (`{cs['stage']}`, on normalized text)",
            "",
            "| prompts | single p50 ms | single p95 ms | CPU p50 ms | CPU p95 ms | batched prompts/s | "
            "prompts per CPU-s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, m in cs["samples"].items():
            lines.append(
                f"| {name} | {m['single_p50_ms']} | {m['single_p95_ms']} | {m['single_cpu_p50_ms']} | "
                f"{m['single_cpu_p95_ms']} | {m['batched_prompts_per_s']} | {m['batched_prompts_per_cpu_s']} |"
            )
        lines += [
            "",
            "CPU time is the process's, all threads: on a shared machine it estimates the uncontended "
            "cost (N idle cores give about N x prompts per CPU-second).",
        ]
    lines += ["", "Systems:", ""] + [f"- `{k}`: {v}" for k, v in report["systems"].items()]
    return "\n".join(lines) + "\n"


def plots(report: dict[str, Any], curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]) -> dict[str, bytes]:
    """PNG figures: ROC curves per dataset, per-category block rates of the cascade."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("matplotlib", "bench", "the benchmark's plots") from None
    out: dict[str, bytes] = {}
    names = [n for n in curves if curves[n]]
    if names:
        cols = 3
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4.2 * rows), squeeze=False)
        for ax, dname in zip(axes.flat, names, strict=False):
            for sname, (fpr, tpr) in curves[dname].items():
                auc = report["datasets"][dname]["systems"][sname].get("roc_auc")
                ax.plot(fpr, tpr, label=f"{sname} ({auc:.3f})" if auc is not None else sname, lw=1.4)
            ax.set_xscale("symlog", linthresh=0.01)
            ax.set_xlim(0, 1)
            ax.axvline(0.01, color="grey", lw=0.6, ls=":")
            ax.set_title(dname, fontsize=10)
            ax.set_xlabel("false-positive rate (symlog)")
            ax.set_ylabel("true-positive rate")
            ax.legend(fontsize=7, loc="lower right")
        for ax in list(axes.flat)[len(names) :]:
            ax.axis("off")
        fig.tight_layout()
        out["roc"] = _png(fig)
        plt.close(fig)
    rows_ = [
        (d, c, m)
        for d, v in report["datasets"].items()
        for c, m in v["systems"].get("cascade", {}).get("categories", {}).items()
    ]
    if rows_:
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows_)), 4))
        labels = [f"{d}\n{c}" for d, c, _ in rows_]
        ax.bar(range(len(rows_)), [m["block_rate"] or 0 for _, _, m in rows_], color="#4a78b5")
        ax.set_xticks(range(len(rows_)))
        ax.set_xticklabels(labels, rotation=70, fontsize=7)
        ax.set_ylabel("block rate (cascade)")
        ax.set_ylim(0, 1)
        fig.tight_layout()
        out["categories"] = _png(fig)
        plt.close(fig)
    systems = list(report["latency"])
    dsets = [d for d, v in report["datasets"].items() if any(m.get("f1") is not None for m in v["systems"].values())]
    if dsets and systems:
        fig, ax = plt.subplots(figsize=(max(7, 0.9 * len(dsets)), 4))
        width = 0.8 / len(systems)
        for k, s in enumerate(systems):
            vals = [report["datasets"][d]["systems"].get(s, {}).get("f1") or 0 for d in dsets]
            ax.bar(np.arange(len(dsets)) + k * width, vals, width, label=s)
        ax.set_xticks(np.arange(len(dsets)) + 0.4 - width / 2)
        ax.set_xticklabels(dsets, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("F1 (operating point)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out["f1"] = _png(fig)
        plt.close(fig)
    return out


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def html_report(report: dict[str, Any], md: str, images: dict[str, bytes]) -> str:
    body = []
    for block in md.split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        if lines[0].startswith("|"):
            rows = [ln.strip("|").split("|") for ln in lines if not set(ln) <= set("|-: ")]
            head, *rest = rows
            body.append(
                "<table><tr>"
                + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in rest)
                + "</table>"
            )
        elif lines[0].startswith("#"):
            level = len(lines[0]) - len(lines[0].lstrip("#"))
            body.append(f"<h{level}>{html.escape(lines[0].lstrip('# '))}</h{level}>")
        elif lines[0].startswith("- "):
            body.append("<ul>" + "".join(f"<li>{html.escape(ln[2:])}</li>" for ln in lines) + "</ul>")
        else:
            body.append(f"<p>{html.escape(' '.join(lines))}</p>")
    figs = "".join(
        f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"/>'
        for name, png in images.items()
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}"
        "td:first-child,td:nth-child(2){text-align:left}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>t2iguard bench prompts</title>"
        f"<style>{style}</style></head><body>{''.join(body)}{figs}</body></html>\n"
    )
