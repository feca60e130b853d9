"""Cost of concept erasure: training steps/s and peak memory of ESD-x, ESD-u and SDD, and UCE's
edit time, on a Stable Diffusion 1.5-architecture UNet + CLIP ViT-L/14 text encoder with random
weights (timing needs the architecture, not the weights) at 512×512 (64×64 latents).

One training step is what the method's reference code does per iteration: draw x_t from the model
(DDIM with classifier-free guidance, ``--sample-steps`` steps, stopped at a random step — on
average half the chain), then one forward/backward of the trained UNet (ESD: plus two frozen
forwards; SDD: one teacher forward and the EMA update). bf16 autocast on CUDA, fp32 on CPU.

    python bench/bench_erasure_cost.py                          # CUDA if present, SD 1.5 size
    python bench/bench_erasure_cost.py --size reduced --device cpu --steps 3   # smoke run on CPU

Writes ``bench/results/erasure_cost_<device>_<size>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from t2iguard.erase.api import make_method
from t2iguard.erase.config import ErasureConfig
from t2iguard.erase.random_models import random_components, sd15_text_config, sd15_unet_config
from t2iguard.erase.trainer import resolve_device, train
from t2iguard.erase.uce import uce_edit

RESULTS = Path(__file__).parent / "results"

# What the papers / reference implementations report for their own runs (see the README table).
PAPER = {
    "esd-x": "1000 steps, batch 1 (paper); authors' diffusers rewrite: 5-8x faster, ~half the memory of the original",
    "esd-u": "1000 steps, batch 1 (paper); same loop as ESD-x, more trainable weights",
    "sdd": "1500 steps, batch 1, EMA teacher (reference train_sdd.py)",
    "uce": "closed form, no training (paper)",
}


def reduced_configs() -> tuple[dict[str, Any], dict[str, Any]]:
    """SD 1.5's layout (4 levels, 3 with cross-attention, 2 layers each) at a width that runs on a
    laptop CPU: for smoke runs of this script, not for numbers."""
    unet = {
        **sd15_unet_config(),
        "sample_size": 8,
        "block_out_channels": (32, 64, 64, 64),
        "cross_attention_dim": 64,
        "norm_num_groups": 16,
    }
    text = {**sd15_text_config(), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    text["num_attention_heads"] = 4
    return unet, text


def peak_memory(device: str) -> dict[str, float]:
    if device.startswith("cuda"):
        return {"peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20}
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def time_training(method: str, args: argparse.Namespace, configs: tuple[dict[str, Any], dict[str, Any]]) -> dict:
    device = resolve_device(args.device)
    comps = random_components(*configs)
    cfg = ErasureConfig(
        method=method,
        concepts=["a photo of a knife"],
        steps=args.warmup + args.steps,
        sample_steps=args.sample_steps,
        device=device,
        seed=0,
    )
    m = make_method(comps, cfg)
    trainable = sum(p.numel() for _, p in m.params)
    train(m, None, stop_after=args.warmup, progress=False)  # warm-up (kernels, allocator)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    state, _ = train(m, None, stop_after=args.steps, progress=True)
    out = {
        "method": method,
        "steps_timed": state.step,
        "seconds": state.seconds,
        "steps_per_s": state.step / state.seconds,
        "s_per_step": state.seconds / state.step,
        "trainable_params": trainable,
        "precision": m.precision,
        **peak_memory(device),
    }
    del m, comps
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def time_uce(args: argparse.Namespace, configs: tuple[dict[str, Any], dict[str, Any]]) -> list[dict]:
    device = resolve_device(args.device)
    rows = []
    for n_erase, n_keep in ((1, 0), (10, 10), (100, 0)):
        comps = random_components(*configs).to(device, torch.float32)
        cfg = ErasureConfig(
            method="uce",
            concepts=[f"concept number {i}" for i in range(n_erase)],
            preserve=[f"kept thing {i}" for i in range(n_keep)],
            device=device,
        )
        uce_edit(comps, cfg)  # warm-up
        res = uce_edit(comps, cfg)
        rows.append({"method": "uce", "erase": n_erase, "preserve": n_keep, "seconds": res.seconds})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", choices=("sd15", "reduced"), default="sd15")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per method")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--sample-steps", type=int, default=50, help="DDIM chain x_t is drawn from (papers: 50)")
    ap.add_argument("--methods", default="esd-x,esd-u,sdd,uce")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    configs = (sd15_unet_config(), sd15_text_config()) if args.size == "sd15" else reduced_configs()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows: list[dict] = []
    for method in methods:
        if method == "uce":
            rows += time_uce(args, configs)
        else:
            rows.append(time_training(method, args, configs))
        print(json.dumps(rows[-1]), file=sys.stderr)
    side = int(configs[0]["sample_size"]) * 8
    meta = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "size": args.size,
        "image_side_px": side,
        "latent_side": configs[0]["sample_size"],
        "sample_steps": args.sample_steps,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "created": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"erasure_cost_{device.split(':')[0]}_{args.size}"
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        f"# Erasure cost: {args.size} UNet, {side}x{side} px, {meta['device']}",
        "",
        "| method | steps/s | s/step | peak memory MiB | trainable params | reference |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["method"] == "uce":
            lines.append(
                f"| UCE edit ({r['erase']} erased, {r['preserve']} kept) | - | {r['seconds']:.3f} | - | - "
                f"| {PAPER['uce']} |"
            )
            continue
        mem = r.get("peak_gpu_mib", r.get("peak_rss_mib", 0.0))
        lines.append(
            f"| {r['method']} | {r['steps_per_s']:.3f} | {r['s_per_step']:.2f} | {mem:,.0f} | "
            f"{r['trainable_params']:,} | {PAPER[r['method']]} |"
        )
    lines += ["", f"DDIM chain for x_t: {args.sample_steps} steps; precision: bf16 autocast on CUDA, fp32 on CPU."]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print((args.out / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
