"""Compare prompt-classifier heads on one base run's held-out rows: the adoption gate of NOTES.md.

A candidate head is trained on more (or other) data than the base, so its own test split is not the
base's. This script rebuilds the *base* run's rows exactly as ``train.py`` drew them (same sources,
``--seed``, authored files and probe block) and scores every head on them, each through its own
encoder (an adapter named in its head.json) and at its own thresholds:

- the held-out test split (unsafe, sexual, everyday benign, held-out COCO, CoProV2 safe rewrites),
- noised copies of it (``train.noised_test``: the same copies ``train.py`` validates on),
- the COCO probe block the base run left out (``--topic-shift-probe``), a topic-shift check.

Heads come in *arms* (``NAME=DIR[,DIR...]``): runs of one recipe that differ only in ``--init-seed``
are averaged, and their spread is printed, because single runs differ by about two points of noised
sexual recall (NOTES.md, 2026-12-04 evening). ``--band CATEGORY=THRESHOLD`` also counts scores in
[THRESHOLD, the head's threshold) of that category as flagged (a graded-response band).

``--after FIRST_HEAD`` scores every head as the second tier of a cascade (the indirect-request tier):
a prompt is flagged when the first head flags it (the shipped head at the default policy's thresholds,
another at its own) or the arm's head does at the ``tier_thresholds`` that ``tier_thresholds.py`` wrote
into its head.json. The table then also reports the held-out unsafe rows of the indirect and composed
request files, the tier's own ground::

    python training/prompt_classifier/gate.py --data ../shared/benchmarks \\
        base=runs/base,runs/base_i10,runs/base_i20 candidate=runs/g --json gate.json

The base run's seed, authored files and probe block are read from the first head's head.json
(``--seed``, ``--extra-authored``, ``--probe`` override them, and are then checked against it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import tier_thresholds as TT  # noqa: E402
import train as T  # noqa: E402  (the training script, imported as a module)

METRICS = (
    "probe_flags",
    "coco_flags",
    "coprov2_safe_pct",
    "everyday_benign_pct",
    "unsafe_pct",
    "sexual_pct",
    "noised_unsafe_pct",
    "noised_sexual_pct",
)
INDIRECT_METRIC = "indirect_unsafe_pct"  # with --after, when the base run has indirect request files


@dataclass(frozen=True)
class Arm:
    name: str
    heads: tuple[Path, ...]


def parse_arm(text: str) -> Arm:
    name, sep, dirs = text.partition("=")
    heads = tuple(Path(d) for d in dirs.split(",") if d)
    if not sep or not name or not heads:
        raise argparse.ArgumentTypeError(f"an arm is NAME=DIR[,DIR...], got {text!r}")
    for d in heads:
        if not (d / "head.json").is_file():
            raise argparse.ArgumentTypeError(f"{d}: no head.json (not a head directory)")
    return Arm(name, heads)


def parse_band(text: str) -> tuple[str, float]:
    cat, sep, thr = text.partition("=")
    if not sep or cat not in T.FLAGGING:
        raise argparse.ArgumentTypeError(f"a band is CATEGORY=THRESHOLD with a flagging category, got {text!r}")
    return cat, float(thr)


def summarise(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one run), min and max of one metric over an arm's runs."""
    return {
        "mean": round(statistics.fmean(values), 3),
        "sd": round(statistics.stdev(values), 3) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def base_run(head: Path) -> dict[str, Any]:
    """What a base head's head.json says about the rows it was trained beside: its split seed, its
    authored files (resolved in this folder) and its probe block, if any."""
    meta = json.loads((head / "head.json").read_text(encoding="utf-8"))
    extras = [HERE / n for n in meta["extra_authored"]]
    return {"seed": int(meta["seed"]), "extra_authored": extras, "probe": T.probe_rows_of(meta)}


def check_base(head: Path, seed: int, extras: list[Path], probe: tuple[int, int] | None, n_test: int) -> None:
    """The rows rebuilt here must be the base run's: refuse loudly when its head.json says otherwise."""
    meta = json.loads((head / "head.json").read_text(encoding="utf-8"))
    problems = []
    if meta.get("seed") != seed:
        problems.append(f"seed {meta.get('seed')} (here {seed})")
    if meta.get("extra_authored") != [p.name for p in extras]:
        problems.append(f"authored files {meta.get('extra_authored')} (here {[p.name for p in extras]})")
    if meta.get("splits", {}).get("test") != n_test:
        problems.append(f"{meta.get('splits', {}).get('test')} test rows (here {n_test})")
    probe_meta = meta.get("metrics", {}).get("topic_shift_probe", {})
    want = None if probe is None else f"{probe[0]}..{probe[1] - 1}"
    if probe_meta.get("rows") != want:
        problems.append(f"probe rows {probe_meta.get('rows')} (here {want})")
    if problems:
        sys.exit(f"{head} is not the base run these rows come from: " + "; ".join(problems))


def tier_acting(head: Path) -> dict[str, float]:
    """The thresholds a second-tier head acts at: those ``tier_thresholds.py`` chose (every other
    flagging category never flags)."""
    meta = json.loads((head / "head.json").read_text(encoding="utf-8"))
    chosen = meta.get("tier_thresholds", {}).get("thresholds")
    if not chosen:
        sys.exit(f"{head}: no tier_thresholds in head.json (run tier_thresholds.py on it first)")
    return {c: float(chosen.get(c, np.inf)) for c in T.FLAGGING}


def first_tier(models: Any, head: Path, cache: Path) -> Any:
    """A function from prompts to the first tier's flags: the shipped head at the default policy's
    thresholds, another head at its own (as ``tier_thresholds.py`` reads them)."""
    encoder, key = T.head_encoder(models, head)
    probs, own = T.reference_head(head)
    at, _ = TT.first_thresholds(head, own)
    acting = {c: float(at.get(c, np.inf)) for c in T.FLAGGING}

    def flagged(texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=bool)
        return T.flags(probs(T.embed(texts, cache, key, lambda b: encoder.encode(b, batch_size=64))), acting)

    return flagged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arms", nargs="+", type=parse_arm, help="NAME=DIR[,DIR...]; the first arm's first head is the base")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("T2IGUARD_DATA", "../shared/benchmarks")))
    ap.add_argument("--cache", type=Path, default=HERE / ".cache")
    ap.add_argument("--seed", type=int, default=None, help="the base run's --seed (default: from its head.json)")
    ap.add_argument(
        "--extra-authored",
        type=Path,
        action="append",
        default=None,
        help="the base run's authored files, in order (default: the names its head.json lists, in this folder)",
    )
    ap.add_argument(
        "--probe",
        type=T._row_range,
        default=None,
        help="the base run's --topic-shift-probe START:STOP (default: from its head.json)",
    )
    ap.add_argument("--band", type=parse_band, default=None, help="CATEGORY=THRESHOLD: count scores in the band too")
    ap.add_argument(
        "--after",
        type=Path,
        default=None,
        help="score the heads as a second tier after this first head, at their tier_thresholds",
    )
    ap.add_argument("--json", type=Path, default=None, help="write per-head and per-arm numbers here")
    args = ap.parse_args(argv)

    T.require_training_data(args.data)
    base = base_run(args.arms[0].heads[0])
    args.seed = base["seed"] if args.seed is None else args.seed
    args.extra_authored = base["extra_authored"] if args.extra_authored is None else args.extra_authored
    args.probe = base["probe"] if args.probe is None else args.probe
    missing = [str(p) for p in args.extra_authored if not p.is_file()]
    if missing:
        sys.exit(f"authored files not found: {', '.join(missing)} (name them with --extra-authored)")

    models = T.ModelCache()
    lex = T.Lexicon(models)
    rng = random.Random(args.seed)
    np.random.seed(args.seed)
    T.log("rebuilding the base run's rows")
    examples, probe, normalizer = T.load_examples(
        args.data, models, lex, rng, args.extra_authored, Counter(), probe_rows=args.probe
    )
    test = [e for e in examples if T.split_of(e.group, args.seed) == "test"]
    check_base(args.arms[0].heads[0], args.seed, args.extra_authored, args.probe, len(test))
    noised = [e.text for e in T.noised_test(test, T.Noiser(lex), normalizer, args.seed)]
    probe_texts = [normalizer.normalize(e.text).text.strip() for e in probe]

    m = T.test_masks(test)
    unsafe, sexual, every, coco, safe = (m[k] for k in ("unsafe", "sexual", "everyday", "coco", "safe_rewrite"))
    # every row a head scores, embedded (and the cache read) once per head: test, noised, probe
    rows = [e.text for e in test] + noised + probe_texts
    cuts = [len(test), len(test) + len(noised)]

    def by_set(f: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(("test", "noised", "probe"), np.split(f, cuts), strict=True))

    metrics = METRICS
    first = by_set(np.zeros(len(rows), dtype=bool))  # what the first tier flags: nothing, without --after
    indirect = np.zeros(len(test), dtype=bool)
    if args.after is not None:
        T.log(f"first tier: {args.after}")
        first = by_set(first_tier(models, args.after, args.cache)(rows))
        sources = TT.indirect_sources({"extra_authored": [p.name for p in args.extra_authored]})
        indirect = np.array([e.source in sources for e in test], dtype=bool) & unsafe
        if indirect.any():
            metrics = (*METRICS, INDIRECT_METRIC)

    per_head: dict[str, dict[str, Any]] = {}
    per_arm: dict[str, dict[str, Any]] = {}
    for arm in args.arms:
        runs = []
        for head in arm.heads:
            encoder, key = T.head_encoder(models, head)

            def embed(texts: list[str], encoder: Any = encoder, key: str = key) -> np.ndarray:
                return T.embed(texts, args.cache, key, lambda batch: encoder.encode(batch, batch_size=64))

            probs, thresholds = T.reference_head(head)
            acting = dict(thresholds) if args.after is None else tier_acting(head)
            if args.band is not None:  # a band under a threshold flags what that threshold lowered to it would
                cat, low = args.band
                acting[cat] = min(acting[cat], low)

            own = by_set(T.flags(probs(embed(rows)), acting))
            fc, fn, fp = (first[k] | own[k] for k in ("test", "noised", "probe"))
            row = {
                "probe_flags": int(fp.sum()),
                "coco_flags": int(fc[coco].sum()),
                "coprov2_safe_pct": round(100 * float(fc[safe].mean()), 3),
                "everyday_benign_pct": round(100 * float(fc[every].mean()), 3),
                "unsafe_pct": round(100 * float(fc[unsafe].mean()), 3),
                "sexual_pct": round(100 * float(fc[sexual].mean()), 3),
                "noised_unsafe_pct": round(100 * float(fn[unsafe].mean()), 3),
                "noised_sexual_pct": round(100 * float(fn[sexual].mean()), 3),
            }
            if INDIRECT_METRIC in metrics:
                row[INDIRECT_METRIC] = round(100 * float(fc[indirect].mean()), 3)
            per_head[str(head)] = row | {"arm": arm.name, "encoder": key, "thresholds": thresholds}
            runs.append(row)
        per_arm[arm.name] = {"runs": len(runs)} | {k: summarise([r[k] for r in runs]) for k in metrics}

    rows_n = {"test": len(test), "probe": len(probe), "coco": int(coco.sum()), "sexual": int(sexual.sum())}
    if INDIRECT_METRIC in metrics:
        rows_n["indirect_unsafe"] = int(indirect.sum())
    print(table(per_arm, rows_n, metrics))
    if args.json is not None:
        after = None if args.after is None else str(args.after)
        out = {"rows": rows_n, "band": args.band, "after": after, "arms": per_arm, "heads": per_head}
        args.json.write_text(
            json.dumps(out, indent=1) + "\n",
            encoding="utf-8",
        )
    return 0


def table(per_arm: dict[str, dict[str, Any]], rows_n: dict[str, int], metrics: tuple[str, ...] = METRICS) -> str:
    """A markdown table: one column per arm, mean (min–max over its runs) per metric."""
    names = list(per_arm)
    lines = [
        f"held-out rows of the base run: {rows_n['test']} test ({rows_n['coco']} COCO, {rows_n['sexual']} sexual), "
        f"{rows_n['probe']} probe",
        "",
        "| metric | " + " | ".join(f"{n} ({per_arm[n]['runs']})" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for m in metrics:
        cells = []
        for n in names:
            s = per_arm[n][m]
            cells.append(f"{s['mean']:g}" + (f" ({s['min']:g}–{s['max']:g})" if per_arm[n]["runs"] > 1 else ""))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
