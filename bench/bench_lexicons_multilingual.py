"""What the blocklist's foreign word lists (``lexicons/multilingual/<code>``) add, on TRAINING data only.

Two policies, run through the prompt benchmark's cascade path: **B**, the default policy with the
English word lists only (``lexicons: [builtin]``), and **M**, the default policy as shipped
(``lexicons: [builtin, multilingual]``). Only a prompt in which a foreign list matches something can
be decided differently, so those are the prompts both run on.

- **Benign training prompts** (the lists' pruning set): COCO captions of rows < 20,000, CoProV2
  training safe rewrites, Six-CD Dual-Version clean prompts and benign sets, and every benign
  prompt of the English authored files. The number to read: prompts M flags and B does not.
- **Authored foreign prompts** (the decision set): the test split of
  ``training/prompt_classifier/authored_prompts_{de,es,fr,it,pt}.yaml``, drawn as ``train.py`` draws
  them (seed 0) and split by its ``split_of``: flagged by B and by M, benign and unsafe.

The adoption rule and its result are in ``training/prompt_classifier/NOTES.md`` (2026-12-03,
late night). Writes ``bench/results/lexicons_multilingual.{json,md}``::

    python bench/bench_lexicons_multilingual.py --data ../shared/benchmarks
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from t2iguard.core.policy import Policy, default_policy, policy_from_dict
from t2iguard.core.stage import ModelCache
from t2iguard.prompt.benchmark import stack_systems
from t2iguard.prompt.blocklist import BlocklistStage, build_matcher

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training" / "prompt_classifier"))
import train as T  # noqa: E402  (the trainer's authored-file reader and split, so the split is the same)

FOREIGN = ("es", "de", "fr", "pt", "it")
# the multilingual head's authored files, in its make target's order (the order draws the templates)
HEAD_FILES = ("people", "everyday", "indirect", "composed", *FOREIGN)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def benign_training(data: Path) -> list[tuple[str, str]]:
    """(source, prompt) of the benign training prompts; never an evaluation row."""
    out = [("coco rows < 20,000", r["prompt"]) for r in _csv(data / "erasing/data/coco_30k.csv")[: T.COCO_TRAIN_ROWS]]
    out += [
        ("CoProV2 train safe", r["prompt"])
        for r in _csv(data / "SafetyDPO/data/CoProv2_train.csv")
        if r["image"].startswith("s_")
    ]
    base = data / "Six-CD/Datasets/Dual-Version"
    for kind in sorted(p.name for p in base.iterdir() if p.is_dir()):
        for split in ("malicious", "clean"):
            f = base / kind / f"{split}.csv"
            if f.exists() and (split == "clean" or kind not in ("Nudity", "Harm", "Celebrity")):
                out += [("Six-CD benign", r["prompt"]) for r in _csv(f)]
    rng = random.Random(0)
    for path in sorted(T.HERE.glob("authored_prompts*.yaml")):
        if path.stem.rpartition("_")[2] in FOREIGN:
            continue
        drawn = T.load_authored(path, rng)
        out += [("authored English benign", ex.text) for ex in drawn if 1 not in ex.labels.values()]
    return out


def authored_foreign_test() -> list[tuple[str, str]]:
    """(``<lang> benign|unsafe``, prompt) of the foreign authored files' test split."""
    rng = random.Random(0)
    T.load_authored(T.HERE / "authored_prompts.yaml", rng)
    out = []
    for name in HEAD_FILES:
        examples = T.load_authored(T.HERE / f"authored_prompts_{name}.yaml", rng)
        if name in FOREIGN:
            out += [
                (f"{name} {'unsafe' if 1 in ex.labels.values() else 'benign'}", ex.text)
                for ex in examples
                if T.split_of(ex.group, 0) == "test"
            ]
    return out


def english_only(policy: Policy) -> Policy:
    spec = policy.model_dump(mode="json")
    blocklist = next(s for s in spec["stages"] if s["stage"] == "blocklist")
    blocklist["params"]["lexicons"] = [x for x in blocklist["params"]["lexicons"] if not x.startswith("multilingual")]
    return policy_from_dict(spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/benchmarks"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    models = ModelCache()
    shipped = default_policy()
    lists = build_matcher(BlocklistStage.Params(lexicons=["multilingual"]), models)
    benign = benign_training(args.data)
    foreign = authored_foreign_test()
    touched = [i for i, (_, t) in enumerate(benign) if lists.match(lists.normalizer.normalize(t))]
    prompts = [benign[i][1] for i in touched] + [t for _, t in foreign]
    flags: dict[str, list[bool]] = {}
    for name, policy in (("B", english_only(shipped)), ("M", shipped)):
        run, _ = stack_systems(policy, models, progress=lambda m: print(m, file=sys.stderr, flush=True))
        flags[name] = [bool(x) for x in run(prompts)["cascade"].flagged]

    n_touched = len(touched)
    # sources only: the prompts are the data folder's, never written into the repository
    new = [benign[i][0] for k, i in enumerate(touched) if flags["M"][k] and not flags["B"][k]]
    by_source = Counter(s for s, _ in benign)
    rows: dict[str, dict[str, Any]] = {}
    for k, (group, _) in enumerate(foreign):
        r = rows.setdefault(group, {"n": 0, "B": 0, "M": 0})
        r["n"] += 1
        r["B"] += flags["B"][n_touched + k]
        r["M"] += flags["M"][n_touched + k]
    for kind in ("benign", "unsafe"):
        parts = [r for g, r in rows.items() if g.endswith(kind)]
        rows[f"all {kind}"] = {x: sum(r[x] for r in parts) for x in ("n", "B", "M")}
    result = {
        "benign_training": {
            "prompts": len(benign),
            "by_source": dict(by_source),
            "a_foreign_list_matches": n_touched,
            "new_flags": len(new),
            "new_flags_by_source": dict(Counter(new)),
        },
        "authored_foreign_test": rows,
        "lexicon_terms": len(lists.lexicon.terms),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lexicons_multilingual.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    lines = [
        "# The blocklist's foreign word lists, on training data",
        "",
        f"B: the default policy with the English word lists only; M: as shipped ({len(lists.lexicon.terms)} foreign "
        "terms). Cascade path of the prompt benchmark.",
        "",
        f"Benign training prompts: {len(benign):,} ("
        + ", ".join(f"{s} {n:,}" for s, n in by_source.items())
        + f"); a foreign list matches something in {n_touched}; **flagged by M and not by B: {len(new)}**.",
        "",
        "| authored foreign test split | prompts | flagged by B | flagged by M | change |",
        "|---|---:|---:|---:|---:|",
    ]
    for group in sorted(rows, key=lambda g: (g.startswith("all"), g)):
        r = rows[group]
        b, m = 100 * r["B"] / r["n"], 100 * r["M"] / r["n"]
        lines.append(f"| {group} | {r['n']} | {b:.2f} % | {m:.2f} % | {m - b:+.2f} points |")
    (args.out / "lexicons_multilingual.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
