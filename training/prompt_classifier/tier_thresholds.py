"""Thresholds for a second English head that runs after the first one (the `classifier_indirect` tier).

A second head trained on more kinds of unsafe requests (euphemism, visual synonyms, concept
arithmetic) ranks them better, but at its own operating point it also flags more everyday captions
(training/prompt_classifier/NOTES.md, 2026-12-03). Run after the first head, what matters is the false
positives it *adds*: per category, the lowest threshold >= max(its own threshold, --floor) at which no
natural benign prompt of the calibration split (COCO rows < 20,000, Six-CD clean, CoProV2 safe
rewrites: the pool the heads calibrate on) that the first head lets through is flagged. With
--everyday-budget, also at which at most that many *everyday* benign calibration prompts (the natural
ones and every authored benign prompt, including the hard look-alikes) that the first head lets
through are flagged in the category. The test split is only reported. Both splits are train.py's
(same seed, same data, same authored files as the head).

    python training/prompt_classifier/tier_thresholds.py --data ../shared/benchmarks \\
        --head src/t2iguard/prompt/models/prompt_classifier_indirect --everyday-budget "sexual=1,illegal=2,*=0"

writes `tier_thresholds` into the head's head.json and regenerates its model card.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import train as T
import yaml

from t2iguard.core.policy import default_policy
from t2iguard.core.stage import ModelCache
from t2iguard.prompt.classifier import HEAD_DIR

ROOT = T.HERE.parent.parent
# the authored files of indirect and composed requests: authored_prompts_{indirect,composed,indirect_*}.yaml
INDIRECT_FILES = re.compile(r"authored_prompts_(?:indirect|composed)(?:_\w+)?\.yaml")


def indirect_sources(meta: dict[str, Any]) -> frozenset[str]:
    """The example sources (``authored/<set name>``) of the head's indirect and composed request files."""
    out: set[str] = set()
    for name in meta["extra_authored"]:
        if INDIRECT_FILES.fullmatch(name):
            spec = yaml.safe_load((T.HERE / name).read_text(encoding="utf-8"))
            out.update(f"authored/{s['name']}" for s in spec["sets"])
    return frozenset(out)


def examples(data: Path, meta: dict[str, Any], models: ModelCache) -> list[T.Example]:
    """The head's training prompts as train.py built them (same seed, same authored files, and the
    COCO rows of its topic-shift probe left out, so that they never set a tier threshold)."""
    extra = [T.HERE / name for name in meta["extra_authored"]]
    rng = random.Random(meta["seed"])
    probe = T.probe_rows_of(meta)
    out, _, _ = T.load_examples(data, models, T.Lexicon(models), rng, extra, Counter(), probe_rows=probe)
    return out


def policy_thresholds(stage_name: str = "classifier") -> dict[str, float]:
    """The default policy's thresholds for the stage named ``stage_name``."""
    stage = next(s for s in default_policy().stages if (s.name or s.stage) == stage_name)
    return {str(c): r.threshold for c, r in stage.categories.items() if r.threshold is not None}


def first_thresholds(first: Path, own: dict[str, float]) -> tuple[dict[str, float], str]:
    """The thresholds the first head acts at, and which they are: the shipped head at the default
    policy's, another (a candidate) at its own ``own``."""
    if first.resolve() == HEAD_DIR.resolve():
        return policy_thresholds(), "the default policy's thresholds"
    return own, "its own thresholds"


def parse_budget(text: str) -> dict[str, int]:
    """``"sexual=1,illegal=2,*=0"`` -> ``{"sexual": 1, "illegal": 2, "*": 0}`` (``*``: every other category)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or (name != "*" and name not in {str(c) for c in T.FLAGGING}) or not value.isdigit():
            raise argparse.ArgumentTypeError(f"expected CATEGORY=N or *=N, got {part!r}")
        out[name] = int(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("T2IGUARD_DATA", "../shared/benchmarks")))
    ap.add_argument("--head", type=Path, required=True, help="the second head's directory")
    ap.add_argument("--cache", type=Path, default=T.HERE / ".cache", help="the embedding cache (as train.py's)")
    ap.add_argument(
        "--first",
        type=Path,
        default=HEAD_DIR,
        help="the first head (the shipped one at the default policy's thresholds, another at its own)",
    )
    ap.add_argument("--floor", type=float, default=0.5, help="no tier threshold below this")
    ap.add_argument(
        "--everyday-budget",
        type=parse_budget,
        default=None,
        help='per category, the most everyday benign calibration prompts the tier may add, e.g. "sexual=1,*=0"',
    )
    args = ap.parse_args()

    meta = json.loads((args.head / "head.json").read_text(encoding="utf-8"))
    if meta["encoder"]["name"] != "minilm":
        raise SystemExit("a tier after the English classifier needs a MiniLM head")
    T.log("rebuilding the head's calibration and test splits")
    models = ModelCache()
    data = examples(args.data, meta, models)
    splits = {s: [e for e in data if T.split_of(e.group, meta["seed"]) == s] for s in ("calib", "test")}
    encoder, key = T.head_encoder(models, args.head)
    if T.head_encoder(models, args.first)[1] != key:
        raise SystemExit(f"{args.first} and {args.head} read different embeddings: the tiers share one encoder pass")
    x = {
        s: T.embed([e.text for e in v], args.cache, key, lambda t: encoder.encode(t, batch_size=64))
        for s, v in splits.items()
    }
    first_p, first_own = T.reference_head(args.first)
    first_thr, first_at = first_thresholds(args.first, first_own)
    second_p, own = T.reference_head(args.head)
    cats = [c for c in T.FLAGGING if c in first_thr]
    idx = [T.CATEGORIES.index(T.Category(c)) for c in cats]

    calib = splits["calib"]
    natural = np.array([all(v == 0 for v in e.labels.values()) and not e.source.startswith("authored/") for e in calib])
    passed = ~T.flags(first_p(x["calib"]), first_thr)  # what the first head lets through
    pool = natural & passed
    everyday = np.array([T.everyday_benign(e) for e in calib]) & passed
    p2 = second_p(x["calib"])
    thresholds: dict[str, float] = {}
    for j, c in zip(idx, cats, strict=True):
        highest = float(p2[pool, j].max()) if pool.any() else 0.0
        lowest = max(own[c], args.floor, highest + 1e-3)
        if args.everyday_budget is not None:
            budget = args.everyday_budget.get(c, args.everyday_budget.get("*", 0))
            scores = np.sort(p2[everyday, j])[::-1]
            if len(scores) > budget:  # just above the (budget + 1)-th highest everyday benign score
                lowest = max(lowest, float(scores[budget]) + 1e-3)
        thresholds[c] = round(min(0.99, lowest), 3)
    T.log(f"tier thresholds: {thresholds} ({int(pool.sum())} benign calibration prompts the first head passes)")

    test = splits["test"]
    f1 = T.flags(first_p(x["test"]), first_thr)
    both = f1 | T.flags(second_p(x["test"]), thresholds)
    src = np.array([e.source for e in test])
    unsafe = np.array([any(e.labels[T.Category(c)] == 1 for c in T.FLAGGING) for e in test])
    indirect_sets = indirect_sources(meta)
    indirect = np.array([e.source in indirect_sets for e in test])
    groups = {
        "COCO captions (rows < 20,000)": src == "coco/train",
        "CoProV2 unsafe": src == "coprov2/unsafe",
        "CoProV2 safe rewrites": src == "coprov2/safe",
        "everyday benign": np.array([T.everyday_benign(e) for e in test]),
        "authored indirect + composed (all files), unsafe": indirect & unsafe,
        "authored indirect + composed (all files), benign": indirect & ~unsafe,
        "all unsafe": unsafe,
    }

    def cell(m: np.ndarray, f: np.ndarray) -> str:
        return f"{int(f[m].sum())}/{int(m.sum())} ({100 * f[m].mean():.2f} %)"

    report = {name: {"first": cell(m, f1), "both": cell(m, both)} for name, m in groups.items()}
    for name, r in report.items():
        T.log(f"  {name:48s} first {r['first']:22s} both {r['both']}")
    meta["tier_thresholds"] = {
        "first": str(args.first.relative_to(ROOT)) if args.first.is_relative_to(ROOT) else str(args.first),
        "first_at": first_at,
        "floor": args.floor,
        "calibration_pool": int(pool.sum()),
        "everyday_pool": int(everyday.sum()),
        "everyday_budget": args.everyday_budget,
        "thresholds": thresholds,
        "test_split": report,
    }
    (args.head / "head.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    size = (args.head / "head.safetensors").stat().st_size
    (args.head / "README.md").write_text(T.model_card(meta, size), encoding="utf-8")
    T.log(f"wrote tier_thresholds into {args.head / 'head.json'} and the model card")


if __name__ == "__main__":
    main()
