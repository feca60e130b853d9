"""Overhead of SLD safety guidance per sampling step vs plain classifier-free guidance.

Times one denoising step of an SD-1.5-architecture UNet (random weights: no checkpoint needed to
time it) at ``--size`` pixels (512 = 64x64 latents): plain CFG is one UNet call on the batch
``[uncond; cond]``; SLD (``t2iguard.generate.guidance``) adds the safety-concept branch, i.e. one
call on ``[uncond; cond; safety]`` plus the elementwise SLD update. Reports median milliseconds per
step and the ratio.

    python bench/bench_sld_overhead.py --device cuda --size 512          # the real measurement
    python bench/bench_sld_overhead.py --device cpu --size 128 --repeats 3  # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from t2iguard.generate.guidance import SLD_PRESETS, SLDGuidance, _GuidedUNet

RESULTS = Path(__file__).parent / "results"

SD15_UNET: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_pair(a: Any, b: Any, device: str, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    """Time ``a`` and ``b`` alternately (so load changes on a shared machine hit both alike)."""
    for _ in range(warmup):
        a()
        b()
    _sync(device)
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(repeats):
        for fn, acc in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            acc.append((time.perf_counter() - t0) * 1000.0)
    return ta, tb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="float16 on CUDA, float32 on CPU by default")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels (latents: size / 8)")
    ap.add_argument("--batch", type=int, default=1, help="images per prompt")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--preset", default="medium", choices=list(SLD_PRESETS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    from diffusers import UNet2DConditionModel

    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.float16 if args.device.startswith("cuda") else torch.float32)
    )
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).eval().to(args.device, dtype)
    side = args.size // 8
    b = args.batch
    latents = torch.randn(2 * b, 4, side, side, device=args.device, dtype=dtype)
    emb = torch.randn(2 * b, 77, 768, device=args.device, dtype=dtype)
    safety = {"prompt_embeds": torch.randn(1, 77, 768, device=args.device, dtype=dtype)}
    t = torch.tensor(500, device=args.device)
    pipe = SimpleNamespace(unet=unet, do_classifier_free_guidance=True, num_timesteps=50, guidance_scale=7.5)
    guided = _GuidedUNet(pipe, SLDGuidance.preset(args.preset, "violence"), None, 50, safety)

    with torch.inference_mode():

        def plain() -> None:
            unet(latents, t, encoder_hidden_states=emb, return_dict=False)

        def sld() -> None:
            guided(latents, t, encoder_hidden_states=emb, return_dict=False)

        plain_ms, sld_ms = _time_pair(plain, sld, args.device, args.warmup, args.repeats)
    name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    )
    res = {
        "device": args.device,
        "device_name": name,
        "dtype": str(dtype).removeprefix("torch."),
        "size": args.size,
        "batch": b,
        "preset": args.preset,
        "unet_params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
        "plain_ms_per_step": statistics.median(plain_ms),
        "sld_ms_per_step": statistics.median(sld_ms),
        "ratio": statistics.median(sld_ms) / statistics.median(plain_ms),
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"{args.device.split(':')[0]}_{args.size}"
    (args.out / f"sld_overhead_{tag}.json").write_text(json.dumps(res, indent=2) + "\n")
    md = (
        f"| device | size | dtype | plain CFG ms/step | SLD ms/step | ratio |\n|---|---|---|---|---|---|\n"
        f"| {name} ({args.device}) | {args.size} | {res['dtype']} | {res['plain_ms_per_step']:.1f} | "
        f"{res['sld_ms_per_step']:.1f} | {res['ratio']:.2f}x |\n"
    )
    (args.out / f"sld_overhead_{tag}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
