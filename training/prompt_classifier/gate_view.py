"""Gate for the classifier stage's ``gibberish_view`` (a policy setting; no head is retrained), on
TRAINING files only: the default stack with and without the view on chosen classifier stages.

A prompt in gibberish disguise (``NormalizedText.obfuscation``) is read a second time without its
non-words and the higher score per category acts. Only prompts with the gibberish evidence can change,
so the gate measures (training/prompt_classifier/NOTES.md, 2026-12-04 late night):

1. benign training prompts with the evidence (COCO rows < 20,000, CoProV2 train safe, Six-CD
   Dual-Version clean, the English head's authored benign prompts) that the stack acts on;
2. ``bench/bench_disguise.py``'s benign seeds (n 300, seed 5) blocked under each character attack;
3. held-out unsafe rows of the shipped English head's test split, noised by the training ``Noiser``'s
   ``suffix`` and ``insert`` ops (1,500 each, seed 0), flagged (block or transform). The Noiser's
   gibberish is unknown to the normalizer by construction: this shows that the view works and
   overstates what it recovers on real optimised prompts.

Both arms are the default policy with the view set on the classifier stages ``--stages`` names: off
in the base, on in the arm (other stages as the policy ships them). Decisions: the rules in NOTES.md;
``--stages classifier`` is the adopted V, ``--stages classifier_indirect,classifier_multilingual`` the
rejected W::

    python training/prompt_classifier/gate_view.py --data ../shared/benchmarks --stages classifier --json out.json
"""

from __future__ import annotations

import argparse
import json
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
import train as T  # noqa: E402

from bench_disguise import load as disguise_seeds  # noqa: E402
from t2iguard.core.decision import Decision  # noqa: E402
from t2iguard.core.pipeline import SafetyStack  # noqa: E402
from t2iguard.core.policy import Policy, default_policy  # noqa: E402
from t2iguard.core.stage import ModelCache  # noqa: E402
from t2iguard.core.types import Action  # noqa: E402
from t2iguard.prompt.classifier import HEAD_DIR  # noqa: E402
from t2iguard.prompt.normalize import default_normalizer  # noqa: E402
from t2iguard.redteam.attack import Attack  # noqa: E402
from t2iguard.redteam.catalog import build_attacks  # noqa: E402

NOISE_OPS = ("suffix", "insert")


def with_params(policy: Policy, stages: set[str], **params: Any) -> Policy:
    """``policy`` with ``params`` set on the classifier stages named ``stages``."""
    names = {st.instance_name for st in policy.stages if st.stage == "classifier"}
    if not stages <= names:
        raise SystemExit(f"no classifier stage {sorted(stages - names)} in the policy (has {sorted(names)})")
    return policy.model_copy(
        update={
            "stages": [
                st.model_copy(update={"params": {**st.params, **params}})
                if st.stage == "classifier" and st.instance_name in stages
                else st
                for st in policy.stages
            ]
        }
    )


def with_view(policy: Policy, stages: set[str], on: bool) -> Policy:
    """``policy`` with ``gibberish_view`` set to ``on`` on the classifier stages named ``stages``."""
    return with_params(policy, stages, gibberish_view=on)


def acted(d: Decision | Exception) -> bool:
    """Flagged: any action but allow (an input error is a refusal)."""
    return not isinstance(d, Decision) or d.action > Action.ALLOW


def blocked(d: Decision | Exception) -> bool:
    return not isinstance(d, Decision) or d.action >= Action.BLOCK


def attacked_benign_seeds(data: Path, base: SafetyStack) -> tuple[int, int, dict[str, list[str]]]:
    """``bench/bench_disguise.py``'s benign seeds (n 300, seed 5) that ``base`` does not block, under
    each character attack: (seeds, seeds counted, attack label -> attacked seeds)."""
    seeds = disguise_seeds(data, 300, 5)["benign"]
    kept = [s for s, d in zip(seeds, base.check_prompts(seeds), strict=True) if not blocked(d)]
    attacks = (a for a in build_attacks("character") if isinstance(a, Attack))
    return len(seeds), len(kept), {a.label: [a.variant(s, 0).prompt for s in kept] for a in attacks}


def emit(result: dict[str, Any], path: Path | None) -> None:
    """Print a gate's result as JSON, and write it to ``path`` if given."""
    text = json.dumps(result, indent=2)
    print(text)
    if path is not None:
        path.write_text(text + "\n")


def benign_training(data: Path, lex: Any, extra_authored: list[Path]) -> list[str]:
    """The benign training prompts as written (CoProV2 train safe, Six-CD Dual-Version clean, COCO
    rows < 20,000, the English head's authored benign prompts), sorted, once each."""
    stats: Counter[str] = Counter()
    rows = T.load_coprov2(data, lex, stats) + T.load_sixcd(data, lex, stats)
    rows += T.load_coco(data, lex, stats, stop=T.COCO_TRAIN_ROWS)
    rng = random.Random(0)
    for path in [HERE / "authored_prompts.yaml", *extra_authored]:
        rows += T.load_authored(path, rng)
    return sorted({e.text for e in rows if not any(v == 1 for v in e.labels.values())})


def benign_with_gibberish(
    data: Path, models: ModelCache, lex: Any, extra_authored: list[Path]
) -> tuple[int, list[str]]:
    """The number of benign training prompts, and those of them with the gibberish evidence."""
    benign = benign_training(data, lex, extra_authored)
    norm = default_normalizer(models)
    return len(benign), [t for t in benign if "gibberish" in norm.normalize(t).obfuscation()]


def held_out_unsafe(data: Path, models: ModelCache, lex: Any, run: dict[str, Any]) -> list[str]:
    """The unsafe rows of the shipped English head's test split (rebuilt from its head.json)."""
    examples, _probe, _norm = T.load_examples(
        data, models, lex, random.Random(run["seed"]), run["extra_authored"], Counter(), probe_rows=run["probe"]
    )
    test = [e for e in examples if T.split_of(e.group, run["seed"]) == "test"]
    return [e.text for e, u in zip(test, T.test_masks(test)["unsafe"], strict=True) if u]


def noised_unsafe(data: Path, models: ModelCache, lex: Any, run: dict[str, Any], n: int) -> dict[str, list[str]]:
    """Per noise op, ``n`` held-out unsafe rows of the shipped English head's test split, noised."""
    unsafe = held_out_unsafe(data, models, lex, run)
    noiser, rng = T.Noiser(lex), random.Random(0)
    return {op: [noiser.apply(t, rng, op) for t in rng.sample(unsafe, min(n, len(unsafe)))] for op in NOISE_OPS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("T2IGUARD_DATA", "../shared/benchmarks")))
    ap.add_argument("--stages", default="classifier", help="comma-separated classifier stages that get the view")
    ap.add_argument("--n", type=int, default=1500, help="noised unsafe rows per noise op")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    T.require_training_data(args.data)

    models = ModelCache()
    policy, stages = default_policy(), set(args.stages.split(","))
    stacks = {arm: SafetyStack(with_view(policy, stages, arm == "arm"), models=models) for arm in ("base", "arm")}
    lex = T.Lexicon(models)
    run = G.base_run(HEAD_DIR)

    def count(texts: list[str], hit: Any) -> dict[str, int]:
        return {k: sum(map(hit, s.check_prompts(texts))) for k, s in stacks.items()}

    n_benign, soup = benign_with_gibberish(args.data, models, lex, run["extra_authored"])
    T.log(f"{len(soup)} of {n_benign} benign training prompts have the gibberish evidence")
    result: dict[str, Any] = {"stages": args.stages, "benign": {"n": n_benign, "gibberish": len(soup)}}
    result["benign"]["acted"] = count(soup, acted)

    n_seeds, n_kept, attacked = attacked_benign_seeds(args.data, stacks["base"])
    result["disguise_benign"] = {"seeds": n_seeds, "counted": n_kept, "blocked": {}}
    for label, variants in attacked.items():
        result["disguise_benign"]["blocked"][label] = count(variants, blocked)
        T.log(f"benign seeds under {label}: {result['disguise_benign']['blocked'][label]}")

    result["noised_unsafe"] = {}
    for op, rows in noised_unsafe(args.data, models, lex, run, args.n).items():
        result["noised_unsafe"][op] = {"n": len(rows), **count(rows, acted)}
        T.log(f"noised unsafe ({op}): {result['noised_unsafe'][op]}")
    noised = result["noised_unsafe"].values()
    gain = sum(r["arm"] - r["base"] for r in noised) / sum(r["n"] for r in noised)
    result["noised_unsafe_gain_pt"] = round(100 * gain, 2)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
