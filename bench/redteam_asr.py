"""Red-team benchmark: ASR of every attack against a policy's stack, on development and evaluation seeds.

One command reruns it and writes, per seed set, ``bench/results/redteam_<set>.{json,md,html}`` and a
summary ``bench/results/redteam.md`` / ``redteam.json``::

    python bench/redteam_asr.py [--policy FILE] [--data DIR] [--budget 60]

Seed sets: the committed development seeds (``builtin:dev``, written for t2iguard), and evaluation
seeds from the registered datasets (I2P, all prompts; a seeded sample of CoProV2 test). Only seeds the
unmodified stack blocks count (see ``t2iguard.redteam.asr``). Evaluation data is never used to tune
anything: the attacks and the stack are fixed before these numbers are taken.

The benchmark datasets are read from a path at run time and never committed, so the ``.json`` and
``.md`` results of a dataset seed set carry no prompt text: their examples keep the category and
the stack's action, with the seed, its attacked form and the stack's reason withheld. The ``.html``
report (not committed, see ``.gitignore``) keeps them for the person who ran it; ``--keep-examples``
keeps them everywhere, for a local run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from t2iguard.cli.redteam import load_seeds
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import default_policy, load_policy
from t2iguard.redteam.asr import run_redteam
from t2iguard.redteam.attack import FAMILIES
from t2iguard.redteam.catalog import build_attacks
from t2iguard.redteam.render import redteam_html, redteam_markdown, write_redteam_report
from t2iguard.redteam.report import md_table, pct, write_outputs

SEED_SETS = {
    "dev": ("builtin:dev", None),
    "i2p": ("dataset:i2p", None),
    "copro-v2": ("dataset:coprov2-test", 1000),  # file names must not look like the dataset file
}
WITHHELD = "(withheld: dataset text)"


def without_prompt_text(data: dict) -> dict:
    """A copy of a red-team result whose examples carry no text from the seed set."""
    out = json.loads(json.dumps(data))
    for attack in out["attacks"]:
        for example in attack["examples"]:
            for key in ("seed", "attacked", "reason"):
                example[key] = WITHHELD
            example.pop("substitutions", None)
    out["config"]["examples"] = "prompt text withheld (dataset seeds)"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=None)
    ap.add_argument(
        "--data", type=Path, default=None, help="data root (default $T2IGUARD_DATA or ../shared/benchmarks)"
    )
    ap.add_argument("--sets", default=",".join(SEED_SETS), help="seed sets to run: " + ", ".join(SEED_SETS))
    ap.add_argument("--attacks", default="all")
    ap.add_argument("--budget", type=int, default=60, help="search attack query budget per seed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="at most N seeds per set (a seeded sample)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument(
        "--keep-examples",
        action="store_true",
        help="keep dataset prompts in the .json/.md examples too (a local run; never commit those)",
    )
    args = ap.parse_args(argv)
    policy = load_policy(args.policy) if args.policy else default_policy()
    stack = SafetyStack(policy)
    attacks = build_attacks(args.attacks, budget=args.budget)
    summary: dict[str, dict] = {}
    for name in [s for s in args.sets.split(",") if s]:
        spec, limit = SEED_SETS[name]
        if args.limit is not None:
            limit = min(limit or args.limit, args.limit)
        seeds = load_seeds(spec, data=args.data, limit=limit, seed=args.seed)
        print(f"[{name}] {len(seeds)} seeds", file=sys.stderr)
        result = run_redteam(stack, seeds, attacks, seed=args.seed)
        data = result.to_dict()
        data["config"]["seeds"] = spec
        data["config"]["seed_limit"] = limit
        if spec.startswith("dataset:") and not args.keep_examples:
            public = without_prompt_text(data)
            write_outputs(args.out, f"redteam_{name}", public, redteam_markdown(public), redteam_html(data))
        else:
            write_redteam_report(data, args.out, stem=f"redteam_{name}")
        summary[name] = data
        print(f"[{name}] {data['seeds']['blocked']} blocked; {result.elapsed_s:.1f} s", file=sys.stderr)
    families = list(FAMILIES)
    rows = []
    for name, d in summary.items():
        fams = d["families"]
        rows.append(
            [name, d["seeds"]["total"], d["seeds"]["blocked"]]
            + [pct(fams[f]["pooled_asr"]) if f in fams else "–" for f in families]
            + [pct(d["overall_without_search"]["pooled_asr"]), pct(d["overall"]["pooled_asr"]),
               pct(d["overall"]["union_asr"])]
        )  # fmt: skip
    char_rows = []
    for name, d in summary.items():
        for a in d["attacks"]:
            if a["family"] == "character":
                t = a["term_seeds"]
                char_rows.append(
                    [name, a["attack"], f"{a['successes']}/{a['attempted']}", pct(a["asr"]),
                     f"{t['successes']}/{t['attempted']}", pct(t["asr"])]
                )  # fmt: skip
    within = {
        name: a["asr_within_queries"]
        for name, d in summary.items()
        for a in d["attacks"]
        if a.get("asr_within_queries")
    }
    ks = sorted({int(k) for w in within.values() for k in w})
    budget_rows = [[name, *[pct(w[str(k)]) if str(k) in w else "–" for k in ks]] for name, w in within.items()]
    cfg = next(iter(summary.values()))["config"] if summary else {}
    md = "\n".join(
        [
            "# Red-team ASR",
            "",
            f"Policy `{cfg.get('policy')}` (sha256 `{str(cfg.get('policy_sha256'))[:12]}`), prompt stages "
            f"{', '.join(cfg.get('stages', []))}; seed {args.seed}; one variant per seed; search budget "
            f"{args.budget} queries per seed. Pooled ASR = successes / attempts over the family's attacks; "
            "union = seeds broken by any attack. Details: `redteam_<set>.md` / `.html`.",
            "",
            md_table(["seeds", "total", "blocked", *families, "all but search", "all (pooled)", "all (union)"], rows),
            "",
            "## Character-level attacks",
            "",
            "Second pair of columns: only blocked seeds that contain a term of the red team's lexicon "
            "(seeds blocked for another reason, e.g. a fuzzy match on an artist's name, fall to any perturbation).",
            "",
            md_table(["seeds", "attack", "successes", "ASR", "successes (term seeds)", "ASR (term seeds)"], char_rows),
            "",
            "## Search ASR by query budget",
            "",
            "Had the search stopped after k queries (one prompt at a time). At the gateway every blocked "
            "query is a strike on the key; the default policy suspends a key at 5 decayed strikes.",
            "",
            md_table(["seeds", *[f"≤ {k} queries" for k in ks]], budget_rows),
        ]
    )
    (args.out / "redteam.md").write_text(md + "\n", encoding="utf-8")
    slim = {
        k: {kk: v[kk] for kk in ("config", "seeds", "families", "overall", "overall_without_search")}
        | {
            "attacks": [
                {x: a[x] for x in ("attack", "family", "attempted", "successes", "asr", "term_seeds")}
                | ({"asr_within_queries": a["asr_within_queries"]} if "asr_within_queries" in a else {})
                for a in v["attacks"]
            ]
        }
        for k, v in summary.items()
    }
    (args.out / "redteam.json").write_text(json.dumps(slim, indent=2) + "\n", encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
