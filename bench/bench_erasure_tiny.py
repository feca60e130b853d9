"""Concept erasure measured on the bundled tiny model (the analogue of ESD's Imagenette object
erasure): for each method and each stand-in unsafe concept, erase the concept, then measure with
the world's concept classifier the recognition rate of

- the erased concept on its canonical prompt (erasure: lower is better),
- paraphrases and compositions of it (robustness: lower is better),
- every other concept (preservation: higher is better, compared with the base model),

all at fixed seeds (see :mod:`t2iguard.erase.world`), plus the wall time of each erasure. Writes
``bench/results/erasure_tiny.{json,md}`` and a bar plot ``erasure_tiny.png``.

    nice -n 10 python bench/bench_erasure_tiny.py                       # every method and concept (~2 h CPU)
    python bench/bench_erasure_tiny.py --methods uce --concepts knife   # one cell
    # split over processes, then merge the parts into bench/results/erasure_tiny.*
    python bench/bench_erasure_tiny.py --concepts knife --out /tmp/a &
    python bench/bench_erasure_tiny.py --concepts skull --out /tmp/b; wait
    python bench/bench_erasure_tiny.py --combine /tmp/a/erasure_tiny.json /tmp/b/erasure_tiny.json

Hyper-parameters per method are in :data:`SETTINGS` (the papers' objectives, step counts scaled
to the tiny model); ``--pilot`` measures them on validation seeds (disjoint from the reported
seeds) for one concept, which is how they were chosen (``--set method.field=value`` to try one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from t2iguard.erase import world
from t2iguard.erase.api import erase
from t2iguard.erase.components import DiffusionComponents, load_components
from t2iguard.erase.config import METHODS, ErasureConfig

RESULTS = Path(__file__).parent / "results"
UNSAFE = ("knife", "pistol", "bomb", "skull", "blood")
SAMPLE_STEPS = 20  # the tiny model's default DDIM steps (training chains and evaluation alike)
GUIDANCE = 5.0  # the tiny model's default guidance scale
PILOT_SEED_BASE = 90_000  # validation seeds for --pilot (the report uses world.SEED_BASE)

SETTINGS: dict[str, dict[str, Any]] = {
    "esd-x": {"steps": 200, "lr": 1e-4, "negative_guidance": 1.0},
    "esd-u": {"steps": 200, "lr": 2e-5, "negative_guidance": 1.0},
    # closed form; preserve = every other concept of the world. Erase scale 4 (validation seeds,
    # knife: 6 % recognised, preservation 1.10) beat the default 1 (12 %, 0.95) and lambda 0.05 (25 %)
    "uce": {"uce_erase_scale": 4.0},
    "sdd": {"steps": 300, "lr": 1e-4, "ema_decay": 0.99},
    # mosaic cells of 16 px at the world's 64x64: with 8 px cells the classifier still recognises
    # about half of the mosaicked pistols and knives in the *training* triplets (checked on the
    # triplets, not on evaluation images)
    "safegen": {"steps": 400, "lr": 1e-4, "mosaic_block": 16},
}
"""Per-method overrides of :class:`ErasureConfig` on the tiny model (all else: the defaults)."""


def config_for(method: str, keys: list[str], seed: int, extra: dict[str, Any] | None = None) -> ErasureConfig:
    prompts = [world.concept_prompt(k) for k in keys]
    others = [world.concept_prompt(c.key) for c in world.tiny().concepts.CONCEPTS if c.key not in keys]
    data: dict[str, Any] = {
        "method": method,
        "concepts": prompts,
        "preserve": others if method in ("uce", "safegen") else [],
        "seed": seed,
        "sample_steps": SAMPLE_STEPS,
        "device": "cpu",
        **SETTINGS[method],
        **(extra or {}),
    }
    return ErasureConfig(**data)


def load(model: str) -> DiffusionComponents:
    return load_components(model)


def run_one(
    method: str, keys: list[str], args: argparse.Namespace, clf: Any, base_cache: dict, extra: dict | None = None
) -> dict[str, Any]:
    comps = load(args.model)
    cfg = config_for(method, keys, args.seed, extra)
    triplets = (
        world.world_triplets(cfg.concepts, n=256, block=cfg.mosaic_block, seed=cfg.seed)
        if method == "safegen"
        else None
    )
    out_dir = args.work / f"{method}-{'+'.join(keys)}" if args.work else None
    t0 = time.perf_counter()
    res = erase(comps, cfg, out_dir, base_model=args.model, triplets=triplets, progress=not args.quiet)
    wall = time.perf_counter() - t0
    kw = {"n": args.n, "n_other": args.n_other, "steps": SAMPLE_STEPS, "guidance_scale": GUIDANCE}
    seed_base = PILOT_SEED_BASE if args.pilot else world.SEED_BASE
    rates = world.measure(comps, keys, classifier=clf, seed_base=seed_base, progress=not args.quiet, **kw)
    base = load(args.model)
    base_rates = world.measure(base, keys, classifier=clf, cache=base_cache, seed_base=seed_base, **kw)
    s, b = world.summarise(rates, keys), world.summarise(base_rates, keys)
    row = {
        "method": method,
        "concepts": keys,
        "erase_seconds": wall,
        "train_seconds": res.record["train"]["seconds"],
        "settings": {k: v for k, v in cfg.resolved().model_dump().items() if k in {*SETTINGS[method], *(extra or {})}},
        "summary": s,
        "base_summary": b,
        "preservation_ratio": s["other"] / b["other"] if b["other"] > 0 else float("nan"),
        "rates": rates,
        "base_rates": base_rates,
        "loss_first": res.record["train"].get("loss_first"),
        "loss_last": res.record["train"].get("loss_last"),
    }
    print(json.dumps({k: row[k] for k in ("method", "concepts", "summary", "preservation_ratio", "erase_seconds")}),
          file=sys.stderr)  # fmt: skip
    return row


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731

    def knobs(r: dict[str, Any]) -> str:
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["settings"].items())

    lines = [
        "# Concept erasure on the tiny model (concept-classifier recognition rate)",
        "",
        f"{meta['n']} images per erased-concept prompt set, {meta['n_other']} per other concept, DDIM "
        f"{SAMPLE_STEPS} steps, guidance {GUIDANCE}, fixed seeds; classifier threshold {world.THRESHOLD}. "
        "Erased/paraphrase/composition: lower is better; others: higher is better (base model in brackets).",
        "",
        "| method | settings | concept | erased | paraphrase | composition | others (base) | preservation | train s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s, b = r["summary"], r["base_summary"]
        lines.append(
            f"| {r['method']} | {knobs(r)} | {'+'.join(r['concepts'])} | {pct(s['direct'])} ({pct(b['direct'])}) | "
            f"{pct(s['paraphrase'])} ({pct(b['paraphrase'])}) | {pct(s['composition'])} ({pct(b['composition'])}) | "
            f"{pct(s['other'])} ({pct(b['other'])}) | {r['preservation_ratio']:.2f} | {r['train_seconds']:.1f} |"
        )
    groups = list(dict.fromkeys((r["method"], knobs(r)) for r in rows))
    single = {g: [r for r in rows if (r["method"], knobs(r)) == g and len(r["concepts"]) == 1] for g in groups}
    common = set.intersection(*({r["concepts"][0] for r in sel} for sel in single.values() if sel))
    both = ", ".join(sorted(common))
    lines += [
        "",
        f"Mean over the single-concept erasures of the concepts every method ran on ({both}), "
        "and over all of a method's single-concept erasures where it ran on more:",
        "",
    ]
    lines += [
        "| method | settings | concepts | erased | paraphrase | composition | preservation | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (method, setting), every in single.items():
        subset = [r for r in every if r["concepts"][0] in common]
        for sel in [subset] + ([every] if len(every) > len(subset) else []):
            if not sel:
                continue
            m = {k: statistics.fmean(r["summary"][k] for r in sel) for k in ("direct", "paraphrase", "composition")}
            pr = statistics.fmean(r["preservation_ratio"] for r in sel)
            t = statistics.fmean(r["train_seconds"] for r in sel)
            lines.append(
                f"| {method} | {setting} | {', '.join(r['concepts'][0] for r in sel)} | {pct(m['direct'])} | "
                f"{pct(m['paraphrase'])} | {pct(m['composition'])} | {pr:.2f} | {t:.1f} |"
            )
    lines += ["", f"Machine: {meta['machine']}; torch threads {meta['threads']}; {meta['created']}."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = [r for r in rows if len(r["concepts"]) == 1]
    methods = list(dict.fromkeys(r["method"] for r in single))
    common = set.intersection(*({r["concepts"][0] for r in single if r["method"] == m} for m in methods))
    kinds = ("direct", "paraphrase", "composition", "other")
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        vals = [
            statistics.fmean(r["summary"][kind] for r in single if r["method"] == m and r["concepts"][0] in common)
            for m in methods
        ]
        ax.bar([i + j * width for i in range(len(methods))], vals, width, label=kind)
    ax.set_xticks([i + 0.3 for i in range(len(methods))], methods)
    ax.set_ylabel("recognition rate")
    ax.set_ylim(0, 1)
    ax.legend(ncols=4, fontsize=8)
    ax.set_title(f"tiny model, mean over {', '.join(sorted(common))}: erased concept vs other concepts", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny' (bundled) or a tiny-model diffusers folder")
    ap.add_argument("--classifier", default=None, help="concept classifier safetensors (default: bundled)")
    ap.add_argument("--methods", default="esd-x,esd-u,uce,sdd,safegen")
    ap.add_argument("--concepts", default=",".join(UNSAFE))
    ap.add_argument("--multi", default="uce,sdd", help="methods also run on all concepts at once")
    ap.add_argument("--n", type=int, default=16, help="images per erased-concept prompt set")
    ap.add_argument("--n-other", type=int, default=4, help="images per other concept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this model)")
    ap.add_argument("--pilot", action="store_true", help="validation seeds; results go to erasure_tiny_pilot.*")
    ap.add_argument("--set", action="append", default=[], help="override a setting: esd-x.lr=3e-4 (repeatable)")
    ap.add_argument("--work", type=Path, default=Path("out/erasure-tiny"), help="where erased models are saved")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--combine", nargs="+", type=Path, default=None,
        help="only merge the rows of these result JSONs (runs split over processes) into one table",
    )  # fmt: skip
    args = ap.parse_args(argv)
    stem = "erasure_tiny_pilot" if args.pilot else "erasure_tiny"
    if args.combine:
        parts = [json.loads(p.read_text()) for p in args.combine]
        meta = {**parts[0]["meta"], "created": max(p["meta"]["created"] for p in parts), "parts": len(parts)}
        order = {m: i for i, m in enumerate(METHODS)}
        rows = sorted((r for p in parts for r in p["rows"]), key=lambda r: (order[r["method"]], len(r["concepts"])))
        write(rows, meta, args.out, stem)
        return
    torch.set_num_threads(args.threads)
    for item in args.set:
        name, _, value = item.partition("=")
        method, _, field = name.partition(".")
        SETTINGS[method][field] = json.loads(value)
    clf = world.load_classifier(args.classifier)
    keys = world.resolve_keys([c for c in args.concepts.split(",") if c])
    methods = [m for m in args.methods.split(",") if m]
    base_cache: dict = {}
    rows = []
    for method in methods:
        for key in keys:
            rows.append(run_one(method, [key], args, clf, base_cache))
    for method in [m for m in args.multi.split(",") if m and m in methods]:
        if len(keys) > 1:
            rows.append(run_one(method, keys, args, clf, base_cache))
    meta = {
        "n": args.n,
        "n_other": args.n_other,
        "sample_steps": SAMPLE_STEPS,
        "guidance": GUIDANCE,
        "threshold": world.THRESHOLD,
        "seed_base": PILOT_SEED_BASE if args.pilot else world.SEED_BASE,
        "settings": SETTINGS,
        "machine": "2-core shared CPU (contended)",
        "threads": args.threads,
        "created": time.strftime("%Y-%m-%d %H:%M"),
    }
    write(rows, meta, args.out, stem)


def write(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path, stem: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(rows, meta))
    plot(rows, out / f"{stem}.png")
    print((out / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
