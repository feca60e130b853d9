"""Typo robustness of the prompt layer, on TRAINING prompts only (the data issue #3 names for training).

Two measurements, both on 300 prompts each from COCO captions with row index < 20,000, CoProV2
train and Six-CD Dual-Version malicious (seeded sample; never an evaluation set, so the spelling
corrector's constants could be chosen on it, ``training/prompt_classifier/NOTES.md``):

- **restoration**: every prompt attacked with the red team's ``misspelling`` transformation; the
  share of typo'd words whose canonical form (what the classifiers read) equals the clean prompt's.
  **False corrections**: words changed in unattacked COCO, CoProV2 and Six-CD *clean* prompts
  (names, styles, jargon);
- **decisions** under the character-level attacks: seeds the default stack blocks whose attacked
  form gets through, and allowed seeds whose attacked form gets blocked.

Writes ``bench/results/spelling.{json,md}``::

    python bench/bench_spelling.py --data ../shared/benchmarks [--n 300] [--attacks misspelling,leetspeak,separator]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
from collections import Counter
from pathlib import Path
from typing import Any

from rich.progress import track

from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import default_policy
from t2iguard.core.stage import ModelCache
from t2iguard.prompt.normalize import default_normalizer
from t2iguard.redteam.catalog import build_attacks

COCO = "erasing/data/coco_30k.csv"
COPRO = "SafetyDPO/data/CoProv2_train.csv"
SIXCD = "Six-CD/Datasets/Dual-Version"


def _csv(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [row["prompt"] for row in csv.DictReader(fh)]


def load(data: Path, n: int, seed: int) -> dict[str, list[str]]:
    """Seeded samples of the training files: the attacked sets and the clean set."""
    rng = random.Random(seed)
    coco = _csv(data / COCO)[:20_000]  # rows >= 20,000 are evaluation data
    copro = _csv(data / COPRO)
    malicious = [p for f in sorted((data / SIXCD).glob("*/malicious.csv")) for p in _csv(f)]
    clean = [p for f in sorted((data / SIXCD).glob("*/clean.csv")) for p in _csv(f)]
    return {
        "coco": rng.sample(coco, n),
        "coprov2": rng.sample(copro, n),
        "sixcd_malicious": rng.sample(malicious, min(n, len(malicious))),
        "clean": rng.sample(coco, 2 * n) + rng.sample(copro, n) + rng.sample(clean, min(2 * n, len(clean))),
    }


def restoration(sets: dict[str, list[str]]) -> dict[str, Any]:
    norm = default_normalizer(ModelCache())
    attack = next(a for a in build_attacks("character") if a.label == "misspelling")
    typod = restored = 0
    misses: Counter[tuple[str, str]] = Counter()
    seeds = sets["coco"] + sets["coprov2"] + sets["sixcd_malicious"]
    for prompt in track(seeds, description="restoration"):
        attacked = attack.variant(prompt, 0).prompt
        clean_words, attacked_words = norm.normalize(prompt).text.split(), norm.normalize(attacked).text.split()
        raw, raw_attacked = prompt.split(), attacked.split()
        if not (len(raw) == len(raw_attacked) == len(clean_words) == len(attacked_words)):
            continue  # alignment by position only
        for want, got, r1, r2 in zip(clean_words, attacked_words, raw, raw_attacked, strict=True):
            if r1 != r2:
                typod += 1
                restored += want == got
                if want != got:
                    misses[(want, got)] += 1
    corrections: Counter[tuple[str, str]] = Counter()
    for prompt in track(sets["clean"], description="false corrections"):
        for w in norm.normalize(prompt).words:
            if w.corrected:
                corrections[(w.canonical, w.corrected)] += 1
    return {
        "typod_words": typod,
        "restored": restored,
        "restored_rate": restored / typod if typod else 0.0,
        "clean_prompts": len(sets["clean"]),
        "false_corrections": sum(corrections.values()),
        "correction_examples": [f"{a} -> {b}" for (a, b), _ in corrections.most_common(20)],
        "miss_examples": [f"{a} <- {b}" for (a, b), _ in misses.most_common(20)],
    }


def decisions(sets: dict[str, list[str]], attacks: list[str]) -> dict[str, Any]:
    stack = SafetyStack(default_policy())
    out: dict[str, Any] = {}
    groups = {"coco+coprov2": sets["coco"] + sets["coprov2"], "sixcd_malicious": sets["sixcd_malicious"]}
    chosen = [a for a in build_attacks("character") if a.label in attacks]
    for name, seeds in groups.items():
        base = [d.action.severity >= 3 for d in stack.check_prompts(seeds)]
        rows: dict[str, Any] = {}
        for attack in track(chosen, description=f"decisions {name}"):
            attacked = [attack.variant(s, 0).prompt for s in seeds]
            after = [d.action.severity >= 3 for d in stack.check_prompts(attacked)]
            through = sum(b and not a for b, a in zip(base, after, strict=True))
            newly = sum(a and not b for b, a in zip(base, after, strict=True))
            rows[attack.label] = {
                "blocked_seeds": sum(base),
                "got_through": through,
                "allowed_seeds": len(base) - sum(base),
                "newly_blocked": newly,
            }
        out[name] = rows
    return out


def markdown(r: dict[str, Any]) -> str:
    res = r["restoration"]
    lines = [
        "# Typo robustness of the prompt layer (training prompts only)",
        "",
        f"Seed {r['seed']}, {r['n']} prompts per source (COCO rows < 20,000, CoProV2 train, Six-CD "
        "Dual-Version malicious); attack: the red team's transformations, seed 0.",
        "",
        f"- typo'd words restored to the clean canonical word: **{res['restored']} / {res['typod_words']} "
        f"({100 * res['restored_rate']:.1f} %)**",
        f"- words corrected in {res['clean_prompts']} clean prompts (names, jargon, real typos): "
        f"**{res['false_corrections']}**",
        "",
        "| seeds | attack | blocked seeds | attacked form gets through | allowed seeds | attacked form blocked |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for group, rows in r["decisions"].items():
        for attack, row in rows.items():
            lines.append(
                f"| {group} | {attack} | {row['blocked_seeds']} | {row['got_through']} | "
                f"{row['allowed_seeds']} | {row['newly_blocked']} |"
            )
    lines += ["", "Corrections of clean prompts (most frequent): " + ", ".join(res["correction_examples"][:12])]
    lines += ["", "Words not restored (clean <- read): " + ", ".join(res["miss_examples"][:12])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the benchmarks data root (../shared/benchmarks)")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--attacks", default="misspelling,leetspeak,separator")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    sets = load(args.data, args.n, args.seed)
    r = {
        "seed": args.seed,
        "n": args.n,
        "policy_sha256": default_policy().sha256,
        "machine": platform.machine(),
        "restoration": restoration(sets),
        "decisions": decisions(sets, args.attacks.split(",")),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "spelling.json").write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    md = markdown(r)
    (args.out / "spelling.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
