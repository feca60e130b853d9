"""Stricter thresholds for prompts in disguise: the trade-off behind ``obfuscated_scale``, on TRAINING
prompts only (the files issue #3 names for training; never an evaluation set).

The classifier stage can multiply its thresholds by ``obfuscated_scale`` when the normalizer finds a
disguise (:meth:`t2iguard.prompt.normalize.NormalizedText.obfuscation`: leetspeak, look-alike or
hidden characters, words split by separators, two typos or more). Normalization cannot always undo
a disguise (a name outside the vocabulary, a typo with two readings), and a prompt that needed undoing
is evidence of intent. This benchmark measures, for each scale of a grid:

- **unsafe kept out**: seeds the stack blocks (Six-CD Dual-Version malicious Harm/Nudity/Celebrity
  and CoProV2 train unsafe prompts) whose attacked form would get through, per character-level attack;
- **benign cost**: benign seeds (COCO rows < 20,000, Six-CD clean Harm/Nudity) that the stack allows
  and whose attacked form would be blocked: what an honest user who writes that way pays;
- how often clean, honest prompts look disguised at all (every COCO row < 20,000 and CoProV2 train
  prompt): the cost for everyone else.

The policy's classifier runs without the scale; a scale ``s`` is applied afterwards to the stage's
score vector (a prompt in disguise is blocked when a blocking category scores >= ``s`` x threshold),
which is exactly what the stage does. Rule used to choose the default (0.7): the smallest scale of the
grid that, under every attack, blocks at most 2.5 % more of the benign seeds than no scale does.

Writes ``bench/results/disguise.{json,md}``::

    python bench/bench_disguise.py --data ../shared/benchmarks [--n 300]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
from pathlib import Path
from typing import Any

from rich.progress import track

from t2iguard.core.decision import Decision
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import Policy, default_policy
from t2iguard.core.stage import ModelCache
from t2iguard.core.types import Action, Phase
from t2iguard.prompt.normalize import Normalizer, default_normalizer
from t2iguard.redteam.attack import Attack
from t2iguard.redteam.catalog import build_attacks

COCO = "erasing/data/coco_30k.csv"
COPRO = "SafetyDPO/data/CoProv2_train.csv"
SIXCD = "Six-CD/Datasets/Dual-Version"
SCALES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
BENIGN_BUDGET = 0.025


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load(data: Path, n: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    coco = [r["prompt"] for r in _rows(data / COCO)[:20_000]]  # rows >= 20,000 are evaluation data
    copro = _rows(data / COPRO)
    six = {(f.parent.name, f.stem): [r["prompt"] for r in _rows(f)] for f in sorted((data / SIXCD).glob("*/*.csv"))}
    unsafe = [p for k in ("Harm", "Nudity", "Celebrity") for p in six[(k, "malicious")]]
    unsafe += rng.sample([r["prompt"] for r in copro if r["image"].startswith("u_")], n)
    benign = rng.sample(coco, n) + [p for k in ("Harm", "Nudity") for p in six[(k, "clean")]]
    return {"unsafe": unsafe, "benign": benign, "honest": coco + [r["prompt"] for r in copro]}


def unscaled(policy: Policy) -> tuple[Policy, dict[str, float]]:
    """The policy with the English classifier's scale removed, and that stage's blocking thresholds."""
    stages = []
    thresholds: dict[str, float] = {}
    for st in policy.stages:
        if st.stage == "classifier" and st.instance_name == "classifier":
            st = st.model_copy(update={"params": {k: v for k, v in st.params.items() if k != "obfuscated_scale"}})
            sp = policy.stage_policy(st, Phase.PROMPT_CHECK)
            for cat in policy.categories:
                threshold, action, enabled = sp.rule(cat)
                if enabled and action >= Action.BLOCK:
                    thresholds[str(cat)] = threshold
        stages.append(st)
    return policy.model_copy(update={"stages": stages}), thresholds


def blocked_at(d: Decision | Exception, disguised: bool, scale: float, thresholds: dict[str, float]) -> bool:
    if not isinstance(d, Decision) or d.action >= Action.BLOCK:  # an input error is a refusal
        return True
    if not disguised:
        return False
    clf = next((r for r in d.stages if r.stage == "classifier"), None)
    scores = clf.artifacts.get("scores", {}) if clf is not None else {}
    return any(scores.get(c, 0.0) >= scale * t for c, t in thresholds.items())


def sweep(stack: SafetyStack, norm: Normalizer, seeds: list[str], thresholds: dict[str, float], unsafe: bool) -> dict:
    base = stack.check_prompts(seeds)
    keep = [i for i, d in enumerate(base) if blocked_at(d, False, 1.0, thresholds) == unsafe]
    out: dict[str, Any] = {"seeds": len(seeds), "counted": len(keep), "attacks": {}}
    attacks = [a for a in build_attacks("character") if isinstance(a, Attack)]
    for attack in track(attacks, description="unsafe" if unsafe else "benign"):
        variants = [attack.variant(seeds[i], 0).prompt for i in keep]
        decisions = stack.check_prompts(variants)
        disguised = [bool(norm.normalize(v).obfuscation()) for v in variants]
        row = {"disguised": sum(disguised)}
        for s in SCALES:
            hits = [blocked_at(d, g, s, thresholds) for d, g in zip(decisions, disguised, strict=True)]
            row[str(s)] = sum(not h for h in hits) if unsafe else sum(hits)
        out["attacks"][attack.label] = row
    return out


def _table(title: str, attacks: dict[str, dict[str, int]]) -> list[str]:
    """One section: a row per attack, a column per scale."""
    lines = [f"## {title}", "", "| attack | " + " | ".join(f"x{s:g}" for s in SCALES) + " |"]
    lines.append("|---|" + "---:|" * len(SCALES))
    lines += [f"| {name} | " + " | ".join(str(row[str(s)]) for s in SCALES) + " |" for name, row in attacks.items()]
    return lines


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Stricter thresholds for prompts in disguise (training prompts only)",
        "",
        f"`python bench/bench_disguise.py --data ../shared/benchmarks --n {r['n']}`; classifier thresholds times "
        "the scale for a prompt the normalizer finds disguised. Chosen default: "
        f"**x{r['chosen']:g}** (smallest scale that blocks at most {100 * BENIGN_BUDGET:g} % more of the benign "
        "seeds than x1 under every attack).",
        "",
        f"Honest prompts that look disguised: {r['honest']['disguised']} of {r['honest']['n']} "
        f"({100 * r['honest']['disguised'] / r['honest']['n']:.2f} %; COCO rows < 20,000 and CoProV2 train).",
        "",
        *_table(
            f"Unsafe seeds the stack blocks ({r['unsafe']['counted']}) whose attacked form gets through",
            r["unsafe"]["attacks"],
        ),
        "",
        *_table(
            f"Benign seeds the stack allows ({r['benign']['counted']}) whose attacked form gets blocked",
            r["benign"]["attacks"],
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the benchmarks data root (../shared/benchmarks)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    sets = load(args.data, args.n, args.seed)
    policy, thresholds = unscaled(default_policy())
    models = ModelCache()
    stack = SafetyStack(policy, models=models)
    norm = default_normalizer(models)
    honest = sum(bool(norm.normalize(p).obfuscation()) for p in track(sets["honest"], description="honest"))
    result: dict[str, Any] = {
        "n": args.n,
        "seed": args.seed,
        "machine": platform.machine(),
        "scales": list(SCALES),
        "thresholds": thresholds,
        "honest": {"n": len(sets["honest"]), "disguised": honest},
        "unsafe": sweep(stack, norm, sets["unsafe"], thresholds, unsafe=True),
        "benign": sweep(stack, norm, sets["benign"], thresholds, unsafe=False),
    }
    budget = BENIGN_BUDGET * result["benign"]["counted"]
    extra = result["benign"]["attacks"].values()  # benign prompts blocked beyond those blocked without a scale
    result["chosen"] = min((s for s in SCALES if all(row[str(s)] - row["1.0"] <= budget for row in extra)), default=1.0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "disguise.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "disguise.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
