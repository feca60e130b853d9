"""Latency of each image stage and of the image-check chain on this CPU, 512x512 images.

    python bench/bench_image_latency.py [--reps 30] [--riva-reps 3]

Per stage: p50/p95 wall time of one image (batch of 1), after warm-up, models loaded once, and
the median process CPU time (less sensitive to other jobs on a shared machine; ONNX Runtime and
torch use both cores, so it can exceed the wall time).
``clip_concepts`` runs a ViT-B/32-sized CLIP built from the default ``CLIPConfig`` with random
weights (no CLIP ships offline; the cost is the architecture's, not the weights'). The vision
judge is timed against the loopback stub server, so it measures t2iguard's own overhead (image
encoding, HTTP, validation), not a model. The chain is ``SafetyStack.check_image`` with the
output checks of the default policy (``nsfw`` + ``nudity``), and with ``clip_concepts`` added.
Writes ``bench/results/image_latency.json`` and ``image_latency.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from t2iguard.core.inputs import load_image
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import policy_from_dict
from t2iguard.core.stage import EditContext, ImageContext, ModelCache
from t2iguard.core.types import Phase
from unmarked import photo_set

RESULTS = Path(__file__).parent / "results"


def timeit(fn: Callable[[int], Any], reps: int, warmup: int = 2) -> dict[str, float]:
    for i in range(warmup):
        fn(i)
    times, cpu = [], []
    for i in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    a = np.asarray(times)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "cpu_p50_ms": float(np.percentile(cpu, 50)),
        "reps": reps,
    }


def tiny_tokenizer(directory: Path) -> None:
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 49406, "<eos>": 49407}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 49406), ("<eos>", 49407)]
    )
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    ).save_pretrained(str(directory))


def vit_b32(directory: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    transformers.CLIPModel(transformers.CLIPConfig()).save_pretrained(str(directory))  # ViT-B/32 sizes
    tiny_tokenizer(directory)
    return directory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--riva-reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=None, help="threads per model (ONNX Runtime and torch)")
    args = ap.parse_args()
    th = {"threads": args.threads} if args.threads else {}
    load_before = os.getloadavg()[0]
    imgs = [load_image(im, source=f"photo {i}") for i, im in enumerate(photo_set(8))]
    models = ModelCache()
    tmp = Path(tempfile.mkdtemp(prefix="t2iguard-bench-"))
    clip_dir = vit_b32(tmp / "clip")
    clip_stage = {"stage": "clip_concepts", "params": {"model_path": str(clip_dir), **th}}
    rows: dict[str, dict[str, Any]] = {}

    def stage_of(cfg: dict[str, Any], phase: Phase) -> Any:
        stack = SafetyStack(policy_from_dict({"name": "b", "stages": [cfg]}), models=models)
        (st,) = stack.stages(phase)
        st.warmup()
        return st

    out_ctx = ImageContext(phase=Phase.OUTPUT_IMAGE, prompt="a portrait of a woman")
    for name, cfg in {
        "nsfw": {"stage": "nsfw", "params": th},
        "nudity": {"stage": "nudity", "params": th},
        "nsfw_nudity": {"stage": "nsfw_nudity", "params": {"nsfw": th, "nudity": th}},
        "clip_concepts (ViT-B/32)": clip_stage,
    }.items():
        st = stage_of(cfg, Phase.OUTPUT_IMAGE)
        rows[name] = timeit(lambda i, st=st: st.scan_batch([imgs[i % len(imgs)]], out_ctx), args.reps)
        print(name, rows[name], flush=True)
    st = stage_of({"stage": "minors_risk", "phases": ["input_image"]}, Phase.INPUT_IMAGE)
    in_ctx = ImageContext(phase=Phase.INPUT_IMAGE, prompt="put the schoolgirl in a library")
    rows["minors_risk (input)"] = timeit(lambda i: st.scan_batch([imgs[i % len(imgs)]], in_ctx), args.reps)
    st = stage_of({"stage": "edit_transform", "params": {"nudity_params": th}}, Phase.EDIT_CHECK)
    rows["edit_transform (input+output)"] = timeit(
        lambda i: st.scan(EditContext(input=imgs[0], output=imgs[i % len(imgs)], prompt="add a hat")), args.reps
    )
    print("edit", rows["edit_transform (input+output)"], flush=True)

    from support.servers import openai_stub

    judge_reply = json.dumps({c: {"score": 0.0} for c in ("violence", "shocking", "hate", "self_harm", "illegal")})
    with openai_stub(tmp, [], default=judge_reply) as srv:
        st = stage_of(
            {"stage": "vision_judge", "params": {"endpoint": {"base_url": srv.base_url, "model": "stub"}}},
            Phase.OUTPUT_IMAGE,
        )
        rows["vision_judge (loopback stub: overhead only)"] = timeit(
            lambda i: st.scan_batch([imgs[i % len(imgs)]], out_ctx), args.reps
        )

    from t2iguard.image.provenance.certs import make_test_credentials
    from t2iguard.image.provenance.watermark import WatermarkCodec

    for method in ("dwtDct", "dwtDctSvd", "rivaGan"):
        codec = WatermarkCodec(method)  # type: ignore[arg-type]
        reps = args.riva_reps if method == "rivaGan" else args.reps
        w = 1 if method == "rivaGan" else 2
        rows[f"watermark embed ({method})"] = timeit(
            lambda i, c=codec: c.embed(imgs[i % 8].image, "ab" * 16, verify=False), reps, w
        )
        marked = codec.embed(imgs[0].image, "ab" * 16, verify=False)
        rows[f"watermark detect ({method})"] = timeit(lambda i, c=codec, m=marked: c.detect(m), reps, w)
        print(method, rows[f"watermark embed ({method})"], rows[f"watermark detect ({method})"], flush=True)
    paths = make_test_credentials().write(tmp / "pki")
    st = stage_of(
        {"stage": "c2pa", "params": {"cert_chain": str(paths["chain"]), "private_key": str(paths["key"])}},
        Phase.PROVENANCE,
    )
    prov_ctx = ImageContext(phase=Phase.PROVENANCE, metadata={})
    rows["c2pa sign (PNG)"] = timeit(lambda i: st.apply([imgs[i % 8]], "ab" * 16, prov_ctx), args.reps)

    chains = {
        "chain: nsfw + nudity (default output checks)": [
            {"stage": "nsfw", "params": th},
            {"stage": "nudity", "params": th},
        ],
        "chain: nsfw + nudity + clip_concepts": [
            {"stage": "nsfw", "params": th},
            {"stage": "nudity", "params": th},
            clip_stage,
        ],
    }
    for name, stages in chains.items():
        stack = SafetyStack(policy_from_dict({"name": "chain", "stages": stages}), models=models)
        stack.warmup()
        rows[name] = timeit(lambda i, s=stack: s.check_image(imgs[i % len(imgs)]), args.reps)
        print(name, rows[name], flush=True)

    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "note": "measured on a shared 2-core machine under load from other jobs: contention inflates these",
        "load_average": [load_before, os.getloadavg()[0]],
        "threads": args.threads,
        "image_size": [512, 512],
        "stages": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "image_latency.json").write_text(json.dumps(result, indent=2))
    lines = ["| stage (512x512, one image) | p50 ms | p95 ms | CPU time p50 ms |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['p50_ms']:.0f} | {v['p95_ms']:.0f} | {v['cpu_p50_ms']:.0f} |" for k, v in rows.items()]
    lines.append(
        f"\nLoad average while measuring: {load_before:.1f} -> {os.getloadavg()[0]:.1f} (2 cores); "
        f"threads per model: {args.threads or 'default'}."
    )
    (args.out / "image_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
