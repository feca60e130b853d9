"""Prompt classifier speed: single-prompt latency and batched throughput of the learned classifier
(MiniLM encoder + head, windows over long prompts), on COCO captions (rows >= 20,000, evaluation
rows: only timed here, nothing is fitted); and of the default policy's English ``classifier`` stage
(after ``normalize``: the disguise, gibberish and segment views as configured) on those captions
and on long prompts, four captions joined by ". " or ", " (each read in parts by ``segment_view``).

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

from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import default_policy, policy_from_dict
from t2iguard.core.stage import ModelCache
from t2iguard.prompt.classifier import load_classifier


def classifier_stack(models: ModelCache) -> SafetyStack:
    """normalize -> the default policy's English ``classifier`` stage, as configured there."""
    stages = default_policy().model_dump(mode="json")["stages"]
    keep = [st for st in stages if st["stage"] == "normalize" or (st.get("name") or st["stage"]) == "classifier"]
    return SafetyStack(policy_from_dict({"name": "classifier-speed", "stages": keep}), models=models)


def stage_timing(stack: SafetyStack, single: list[str], batched: list[str]) -> dict[str, float]:
    """The ``classifier`` stage's own latency (its trace timing) on ``single``, one prompt per call,
    and the stack's throughput on ``batched`` in one call."""
    lat = []
    for t in single:
        d = stack.check_prompt(t)
        lat.append(next(r.latency_ms for r in d.stages if r.stage == "classifier"))
    t0 = time.perf_counter()
    stack.check_prompts(batched)
    return {
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "n": len(lat),
        "batched_n": len(batched),
        "batched_prompts_per_s": len(batched) / (time.perf_counter() - t0),
    }


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
    stack = classifier_stack(models)
    stack.check_prompts(rows[-64:])  # warm-up
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
        "stage": {
            "captions": stage_timing(stack, captions[: args.single], captions[args.single :]),
            "four_captions_joined": stage_timing(stack, joined[: args.single], joined[args.single :]),
        },
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
        "| batched prompts/s (normalize + stage) |\n"
        "|---|---:|---:|---:|\n"
    )
    for name, what in (("captions", "COCO captions"), ("four_captions_joined", "four captions joined (parts)")):
        r = res["stage"][name]
        md += (
            f"| {what} ({r['n']} single, {r['batched_n']} batched) | {r['p50']:.1f} | {r['p95']:.1f} "
            f"| {r['batched_prompts_per_s']:.0f} |\n"
        )
    (args.out / "classifier_speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
