"""Latency of the foundation's stages, in process, on this machine.

Prompt path: 1,000 COCO-30k captions (rows 20,000-20,999 of ``erasing/data/coco_30k.csv``; latency
only, nothing is fitted) through (a) normalization, (b) normalization + blocklist, (c) the whole
``SafetyStack.check_prompt`` with the default policy. Image path: 512x512 photos through open_nsfw,
NudeNet and the whole image chain.

    python bench/bench_latency.py --data ../shared/benchmarks

Writes ``bench/results/latency.json``, ``latency.md`` and ``latency.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.progress import track

from t2iguard import SafetyStack
from t2iguard.core.inputs import load_image
from t2iguard.core.stage import ImageContext
from t2iguard.core.types import Phase
from t2iguard.generate.base import GenerationRequest
from t2iguard.generate.procedural import ProceduralGenerator
from t2iguard.prompt.blocklist import BlocklistStage, build_matcher

RESULTS = Path(__file__).parent / "results"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 4),
        "p95_ms": round(pct(ms, 95), 4),
        "p99_ms": round(pct(ms, 99), 4),
        "mean_ms": round(statistics.fmean(ms), 4),
    }


def timed(fn: Callable[[], Any], repeat: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) * 1000.0 / repeat


def coco_prompts(data: Path, n: int) -> list[str]:
    path = data / "erasing" / "data" / "coco_30k.csv"
    if not path.is_file():
        raise SystemExit(f"COCO captions not found at {path}; pass --data pointing at the benchmarks folder")
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if i >= 20_000:
                out.append(row["prompt"])
            if len(out) == n:
                break
    return out


def sample_images(n: int) -> list[Image.Image]:
    imgs: list[Image.Image] = []
    try:
        from skimage import data as skdata

        for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina"):
            imgs.append(Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((512, 512)))
    except ImportError:
        pass
    gen = ProceduralGenerator()
    seed = 0
    while len(imgs) < n:
        imgs += gen.generate(GenerationRequest(prompt="scene", width=512, height=512, seed=seed)).images
        seed += 1
    return imgs[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("T2IGUARD_DATA", "../shared/benchmarks")))
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    prompts = coco_prompts(args.data, args.prompts)
    stack = SafetyStack()
    stack.warmup()
    matcher = build_matcher(BlocklistStage.Params(), stack.models)
    normalizer = matcher.normalizer
    for p in prompts[:50]:  # warm caches
        matcher.match(normalizer.normalize(p))
        stack.check_prompt(p)

    norm_ms, block_ms, stack_ms = [], [], []
    for p in track(prompts, description="prompts"):
        norm_ms.append(timed(lambda p=p: normalizer.normalize(p)))
        block_ms.append(timed(lambda p=p: matcher.match(normalizer.normalize(p))))
        stack_ms.append(timed(lambda p=p: stack.check_prompt(p)))
    t0 = time.perf_counter()
    stack.check_prompts(prompts)
    batch_rate = len(prompts) / (time.perf_counter() - t0)

    images = [load_image(img, source=f"img{i}") for i, img in enumerate(sample_images(args.images))]
    nsfw = next(s for s in stack.stages(Phase.OUTPUT_IMAGE) if s.name == "nsfw")
    nudity = next(s for s in stack.stages(Phase.OUTPUT_IMAGE) if s.name == "nudity")
    ctx = ImageContext(phase=Phase.OUTPUT_IMAGE)
    for it in images[:3]:
        stack.check_image(it)
    nsfw_ms, nudity_ms, chain_ms = [], [], []
    for it in track(images, description="images"):
        nsfw_ms.append(timed(lambda it=it: nsfw.scan_batch([it], ctx)))  # type: ignore[attr-defined]
        nudity_ms.append(timed(lambda it=it: nudity.scan_batch([it], ctx)))  # type: ignore[attr-defined]
        chain_ms.append(timed(lambda it=it: stack.check_image(it)))

    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "prompts": {
            "dataset": "erasing/data/coco_30k.csv rows 20000+",
            "normalize": summary(norm_ms),
            "normalize+blocklist": summary(block_ms),
            "check_prompt (default policy)": summary(stack_ms),
            "check_prompts batch throughput (prompts/s)": round(batch_rate, 1),
        },
        "images_512": {
            "nsfw (open_nsfw)": summary(nsfw_ms),
            "nudity (NudeNet 320n)": summary(nudity_ms),
            "check_image chain (default policy)": summary(chain_ms),
        },
        "targets": {"normalize+blocklist p95 < 1 ms": pct(block_ms, 95) < 1.0},
    }
    (args.out / "latency.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Latency (in process, this machine)",
        "",
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; prompts: {len(prompts)} COCO captions; "
        f"images: {len(images)} at 512x512.",
        "",
        "| path | n | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for group in ("prompts", "images_512"):
        for name, s in results[group].items():  # type: ignore[attr-defined]
            if isinstance(s, dict):
                lines.append(f"| {name} | {s['n']} | {s['p50_ms']:.3f} | {s['p95_ms']:.3f} | {s['p99_ms']:.3f} |")
    lines += ["", f"Batched `check_prompts` throughput: {batch_rate:.0f} prompts/s.", ""]
    (args.out / "latency.md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        for label, ms in (("normalize", norm_ms), ("normalize+blocklist", block_ms), ("check_prompt", stack_ms)):
            axes[0].hist(ms, bins=60, alpha=0.6, label=label, range=(0, max(2.0, pct(stack_ms, 99))))
        axes[0].axvline(1.0, color="k", ls="--", lw=1)
        axes[0].set(title="prompt latency (ms)", xlabel="ms", ylabel="prompts")
        axes[0].legend()
        axes[1].boxplot([nsfw_ms, nudity_ms, chain_ms], tick_labels=["open_nsfw", "NudeNet", "chain"])
        axes[1].set(title="image latency, 512x512 (ms)", ylabel="ms")
        fig.tight_layout()
        fig.savefig(args.out / "latency.png", dpi=110)
    except ImportError:
        pass
    print("\n".join(lines))


if __name__ == "__main__":
    main()
