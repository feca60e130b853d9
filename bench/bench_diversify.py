"""Diversity augmentation benchmark: do the appended descriptors follow the configured distribution?

    python bench/bench_diversify.py [--out bench/results] [--templates 4]

Every occupation of the ``diversify`` stage's role lexicon is put into a few neutral templates and
run through the default policy's prompt stages. From each ``diversify`` change the sampled
descriptors are read back (gender, ethnicity, age); per attribute, the observed counts are compared
with the configured distribution by Pearson's chi-square goodness-of-fit test (Pearson 1900). A
second set of prompts already states a gender, an ethnicity, an age or names a person: the stage
must append nothing to any of them. Writes ``diversify.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

from scipy.stats import chisquare  # type: ignore[import-untyped]
from tqdm import tqdm

from t2iguard import SafetyStack
from t2iguard.core.policy import default_policy
from t2iguard.prompt.diversify import DiversifyStage, roles

TEMPLATES = ["a photo of a {}", "portrait of a {}", "a {} at work", "an illustration of a {} in an office"]
SPECIFIED = [
    "a photo of a female {}",
    "a photo of a male {}",
    "portrait of an elderly {}",
    "a young {} at work",
    "a Black {} at work",
    "an East Asian {} smiling",
    "a Hispanic woman working as a {}",
    "portrait of John Smith, a {}",
]


def _sampled(reason: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if "sampled " not in reason:
        return out
    for part in reason.split("sampled ", 1)[1].split(", "):
        k, v = part.split("=", 1)
        out[k] = v.strip("'")
    return out


def run(n_templates: int) -> dict[str, Any]:
    policy = default_policy()
    stack = SafetyStack(policy)
    spec = next(s for s in policy.stages if s.stage == "diversify")
    configured = DiversifyStage.Params(**spec.params).attributes
    occupations = sorted({o for o in roles()["occupations"]})
    counts: dict[str, Counter[str]] = {a: Counter() for a in configured}
    augmented = 0
    refused = 0
    prompts = [t.format(o) for o in occupations for t in TEMPLATES[:n_templates]]
    t0 = time.perf_counter()
    for p in tqdm(prompts, desc="role prompts", unit="prompt"):
        d = stack.check_prompt(p)
        if not d.allowed:  # refused requests deliver no descriptors: they do not count
            refused += 1
            continue
        changes = [c for c in d.changes if c.stage == "diversify"]
        augmented += bool(changes)
        for c in changes:
            for k, v in _sampled(c.reason).items():
                counts[k][v] += 1
    tests: dict[str, Any] = {}
    for attr, dist in configured.items():
        keys = list(dist)
        total = sum(counts[attr].values())
        weights = sum(dist.values())
        observed = [counts[attr][k] for k in keys]
        expected = [total * dist[k] / weights for k in keys]
        stat = chisquare(observed, expected) if total else None
        tests[attr] = {
            "n": total,
            "observed": dict(zip(keys, observed, strict=True)),
            "configured": {k: dist[k] / weights for k in keys},
            "chi2": float(stat.statistic) if stat else None,
            "dof": len(keys) - 1,
            "p_value": float(stat.pvalue) if stat else None,
        }
    leaks: list[dict[str, str]] = []
    specified = [t.format(o) for o in occupations for t in SPECIFIED]
    for p in tqdm(specified, desc="specified prompts", unit="prompt"):
        d = stack.check_prompt(p)
        for c in d.changes:
            if c.stage == "diversify":
                leaks.append({"prompt": p, "after": d.prompt, "reason": c.reason})
    return {
        "machine": f"{platform.machine()} ({platform.system()})",
        "policy": policy.name,
        "occupations": len(occupations),
        "role_prompts": len(prompts),
        "augmented": augmented,
        "refused": refused,
        "tests": tests,
        "specified_prompts": len(specified),
        "specified_augmented": len(leaks),
        "specified_examples": leaks[:20],
        "wall_s": time.perf_counter() - t0,
    }


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Diversity augmentation: descriptor distribution",
        "",
        f"{r['role_prompts']} role prompts ({r['occupations']} occupations x templates), policy `{r['policy']}`; "
        f"{r['augmented']} augmented and delivered, {r.get('refused', 0)} refused (not counted). "
        "Pearson chi-square of observed descriptor counts against the configured "
        "distribution (p > 0.05: no evidence of a mismatch).",
        "",
        "| attribute | n | chi2 | dof | p-value | observed (configured share) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for attr, t in r["tests"].items():
        obs = ", ".join(f"{k} {v} ({t['configured'][k]:.0%})" for k, v in t["observed"].items())
        lines.append(f"| {attr} | {t['n']} | {t['chi2']:.2f} | {t['dof']} | {t['p_value']:.3f} | {obs} |")
    lines += [
        "",
        f"Prompts that already state a gender, ethnicity or age, or name a person: {r['specified_prompts']}; "
        f"augmented anyway: **{r['specified_augmented']}** (target 0).",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(r["tests"]), figsize=(5 * len(r["tests"]), 3.6))
    for ax, (attr, t) in zip(axes, r["tests"].items(), strict=True):
        keys = list(t["observed"])
        xs = range(len(keys))
        ax.bar([x - 0.2 for x in xs], [t["observed"][k] / max(t["n"], 1) for k in keys], 0.4, label="observed")
        ax.bar([x + 0.2 for x in xs], [t["configured"][k] for k in keys], 0.4, label="configured")
        ax.set_xticks(list(xs), keys, rotation=45, ha="right")
        ax.set_title(f"{attr} (p = {t['p_value']:.2f})")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--templates", type=int, default=4, choices=range(1, len(TEMPLATES) + 1))
    args = ap.parse_args()
    r = run(args.templates)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diversify.json").write_text(json.dumps(r, indent=2))
    (args.out / "diversify.md").write_text(markdown(r))
    plot(r, args.out / "diversify.png")
    print(markdown(r))


if __name__ == "__main__":
    main()
