"""Prompt classifier speed: single-prompt latency and batched throughput of the learned classifier
(MiniLM encoder + head, windows over long prompts), on COCO captions (rows >= 20,000, evaluation
rows: only timed here, nothing is fitted); and of the default policy's English ``classifier`` stage
on the normalizer's text (the disguise, gibberish and segment views as configured; timed as ``t2iguard
bench prompts`` times it) on those captions and on long prompts, four captions joined by ". " or ", "
(each read in parts by ``segment_view``).

    python bench/bench_classifier_speed.py [--data ../shared/benchmarks] [--n 2000]

Writes ``bench/results/classifier_speed.{json,md}``. Targets (prompt-classifier issue): p95 <= 15 ms
per prompt single, >= 300 prompts/s batched, on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from t2iguard.core.policy import default_policy
from t2iguard.core.stage import ModelCache
from t2iguard.prompt.benchmark import classifier_stage_speed
from t2iguard.prompt.classifier import load_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("T2IGUARD_DATA", "../shared/benchmarks")))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--single", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    with (args.data / "erasing/data/coco_30k.csv").open(encoding="utf-8") as f:
        everything = [r["prompt"] for r in csv.DictReader(f)]
    rows = everything[20000 : 20000 + 3 * args.n]
    # the stage's captions: rows no earlier call embedded (the encoder remembers its last batches)
    captions = everything[20000 + 3 * args.n :][: args.single + args.n // 2]
    # three different batches: the encoder keeps its last batch's embeddings (for the second English
    # tier), so timing one batch three times would time that memo, not the encoder
    batches = [rows[i * args.n : (i + 1) * args.n] for i in range(3)]
    texts = batches[0]
    models = ModelCache()
    clf = load_classifier(models)
    clf.predict(rows[-64:])  # warm-up
    runs = []
    for batch in batches:
        t0 = time.perf_counter()
        clf.predict(batch)
        runs.append(len(batch) / (time.perf_counter() - t0))
    lat = []
    for t in texts[: args.single]:
        t0 = time.perf_counter()
        clf.predict([t])
        lat.append((time.perf_counter() - t0) * 1e3)
    joined = [
        (". " if i % 2 else ", ").join(p.strip().rstrip(".") for p in rows[4 * i : 4 * i + 4])
        for i in range(args.single + args.n // 8)
    ]
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg(),
        "prompts": len(texts),
        "batched_prompts_per_s": {"median": float(np.median(runs)), "runs": runs},
        "single_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)), "n": len(lat)},
        # the default policy's English classifier stage on the normalizer's text, as `t2iguard bench prompts`
        "stage": classifier_stage_speed(
            default_policy(),
            models,
            {
                "captions": (captions[: args.single], captions[args.single :]),
                "four_captions_joined": (joined[: args.single], joined[args.single :]),
            },
            log=lambda _: None,
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "classifier_speed.json").write_text(json.dumps(res, indent=2))
    md = (
        "| prompts | single p50 ms | single p95 ms (target <= 15) | batched prompts/s (target >= 300) | load avg |\n"
        "|---:|---:|---:|---:|---|\n"
        f"| {len(texts)} COCO captions | {res['single_ms']['p50']:.1f} | {res['single_ms']['p95']:.1f} "
        f"| {res['batched_prompts_per_s']['median']:.0f} | {res['load_average'][0]:.2f} |\n"
    )
    md += (
        "\n| `classifier` stage (default policy) | single p50 ms | single p95 ms "
        "| batched prompts/s |\n"
        "|---|---:|---:|---:|\n"
    )
    for name, what in (("captions", "COCO captions"), ("four_captions_joined", "four captions joined (parts)")):
        r = res["stage"]["samples"][name]
        md += (
            f"| {what} ({r['single_prompts']} single, {r['batch_prompts']} batched) | {r['single_p50_ms']:.1f} "
            f"| {r['single_p95_ms']:.1f} | {r['batched_prompts_per_s']:.0f} |\n"
        )
    (args.out / "classifier_speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
