"""Gate for the classifier stage's ``segment_view`` (a policy setting; no head is retrained), on
TRAINING files only: the default stack with and without the view on the English tiers.

A *dilution* attack pads an unsafe request with benign text: the mean-pooled sentence embedding of the
long prompt is dominated by the padding, so the classifier reads it as benign. With the view, a stage
also scores each sentence of a prompt and each half-overlapping window of ``W`` words of a longer
sentence (``NormalizedText.segments``), and the higher score per category acts. The gate measures
(training/prompt_classifier/NOTES.md, 2026-12-04, last entry), per candidate ``W``:

1. U1: held-out unsafe rows of the shipped English head's test split (a sample of ``--n``, seed 1),
   padded with ``k`` COCO training captions (rows < 20,000) on each side, ``k`` in {1, 2, 4}, joined
   by ". " and by ", ": caught;
2. B1: every benign training prompt (as ``gate_view.py``): caught;
3. B2: COCO training captions padded with COCO training captions the same ways (seed 2): caught;
4. B3: ``bench/bench_disguise.py``'s benign seeds (300, seed 5) blocked under each character attack.

"Caught": a deciding trace entry of a check stage (blocklist, a classifier tier) with an action
above allow. Decisions: the rules in NOTES.md::

    python training/prompt_classifier/gate_segments.py --data ../shared/benchmarks --words 24,16,12 --json out.json

With ``--clauses 12:0.5,12:0.7``, the arms are the shipped policy (base, its ``segment_view`` as
configured) and, per candidate ``C:w``, that policy with ``clause_view: {words: C, weight: w}`` on the
same stages (gate 3, NOTES.md).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "bench"))

import gate as G  # noqa: E402
import gate_view as V  # noqa: E402
import train as T  # noqa: E402

from t2iguard.core.decision import Decision  # noqa: E402
from t2iguard.core.pipeline import SafetyStack  # noqa: E402
from t2iguard.core.policy import Policy, default_policy  # noqa: E402
from t2iguard.core.stage import ModelCache  # noqa: E402
from t2iguard.core.types import Action  # noqa: E402
from t2iguard.prompt.classifier import HEAD_DIR  # noqa: E402
from t2iguard.prompt.normalize import default_normalizer  # noqa: E402
from t2iguard.redteam.context import JOINS  # noqa: E402

CHECKS = frozenset({"blocklist", "classifier", "classifier_indirect", "classifier_multilingual"})
PADS = (1, 2, 4)


def with_segments(policy: Policy, stages: set[str], words: int | None) -> Policy:
    """``policy`` with ``segment_view`` set to ``words`` on the classifier stages named ``stages``."""
    return V.with_params(policy, stages, segment_view=words)


def caught(d: Decision | Exception) -> bool:
    """Acted on by a check stage (an input error is a refusal too); transforms alone do not count."""
    if not isinstance(d, Decision):
        return True
    return any(t.stage in CHECKS and t.action > Action.ALLOW for t in d.decided_by)


def padded(centres: list[str], fillers: list[str], seed: int) -> dict[str, list[str]]:
    """Each of ``centres`` between ``k`` fillers on each side, per ``k`` and join: the dilution attack."""
    rng = random.Random(seed)
    out: dict[str, list[str]] = {}
    for k in PADS:
        for name, sep in JOINS.items():
            rows = []
            for c in centres:
                pad = [f.strip().rstrip(".") for f in rng.sample(fillers, 2 * k)]
                rows.append(sep.join([*pad[:k], c.strip().rstrip("."), *pad[k:]]))
            out[f"{k}+{k} {name}"] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("T2IGUARD_DATA", "../shared/benchmarks")))
    ap.add_argument("--stages", default="classifier,classifier_indirect", help="classifier stages that get the view")
    ap.add_argument("--words", default="24,16,12", help="comma-separated candidate window lengths W")
    ap.add_argument(
        "--clauses", default=None, help="comma-separated clause_view candidates C:w (arms beside the shipped policy)"
    )
    ap.add_argument("--n", type=int, default=400, help="centre prompts per padding configuration")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    T.require_training_data(args.data)

    models = ModelCache()
    policy, stages = default_policy(), set(args.stages.split(","))
    if args.clauses:
        clauses = [c.split(":") for c in args.clauses.split(",")]
        candidates = [int(c) for c, _ in clauses]
        arm_policies = {"base": policy} | {
            f"C{c}w{w}": V.with_params(policy, stages, clause_view={"words": int(c), "weight": float(w)})
            for c, w in clauses
        }
    else:
        candidates = [int(w) for w in args.words.split(",")]
        arm_policies = {"base": with_segments(policy, stages, None)} | {
            f"W{w}": with_segments(policy, stages, w) for w in candidates
        }
    arms = list(arm_policies)
    stacks = {arm: SafetyStack(p, models=models) for arm, p in arm_policies.items()}
    lex = T.Lexicon(models)
    run = G.base_run(HEAD_DIR)
    result: dict[str, Any] = {"stages": args.stages, "arms": arms}

    def count(texts: list[str], hit: Any) -> dict[str, int]:
        counts = {k: sum(map(hit, s.check_prompts(texts))) for k, s in stacks.items()}
        T.log(f"  {counts}")
        return counts

    coco = [e.text for e in T.load_coco(args.data, lex, Counter(), stop=T.COCO_TRAIN_ROWS)]
    unsafe = random.Random(1).sample(V.held_out_unsafe(args.data, models, lex, run), args.n)
    for name, centres, seed in (("U1", unsafe, 1), ("B2", random.Random(2).sample(coco, args.n), 2)):
        result[name] = {}
        for config, rows in padded(centres, coco, seed).items():
            T.log(f"{name} {config}")
            result[name][config] = {"n": len(rows), **count(rows, caught)}
    result["U0"] = {"n": len(unsafe), **count(unsafe, caught)}

    benign = V.benign_training(args.data, lex, run["extra_authored"])
    norm = default_normalizer(models)
    parts = [t for t in benign if norm.normalize(t).segments(min(candidates))]
    T.log(f"B1: {len(parts)} of {len(benign)} benign training prompts have more than one part")
    result["B1"] = {"n": len(benign), "parts": len(parts), **count(parts, caught)}

    n_seeds, n_kept, attacked = V.attacked_benign_seeds(args.data, stacks["base"])
    result["B3"] = {"seeds": n_seeds, "counted": n_kept, "blocked": {}}
    for label, variants in attacked.items():
        T.log(f"B3 {label}")
        result["B3"]["blocked"][label] = count(variants, V.blocked)

    result["summary"] = {}
    for arm in arms[1:]:
        u = result["U1"].values()
        b2 = result["B2"].values()
        result["summary"][arm] = {
            "U1_gain_pt": round(100 * sum(r[arm] - r["base"] for r in u) / sum(r["n"] for r in u), 2),
            "B1_gain_pt": round(100 * (result["B1"][arm] - result["B1"]["base"]) / result["B1"]["n"], 3),
            "B2_gain_pt": round(100 * sum(r[arm] - r["base"] for r in b2) / sum(r["n"] for r in b2), 2),
            "B3_max_gain": max(r[arm] - r["base"] for r in result["B3"]["blocked"].values()),
        }
    V.emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
