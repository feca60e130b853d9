"""Train the tiny text-to-image model and the concept classifier on the emoji world.

    python -m t2iguard.generate.tiny.train unet --out out/tiny-train --steps 3000
    python -m t2iguard.generate.tiny.train classifier --out out/tiny-train --steps 1500
    python -m t2iguard.generate.tiny.train export --out out/tiny-train   # -> the bundled model folder

Both trainers draw fresh scenes from :mod:`t2iguard.generate.tiny.world` every step (scene index =
step * batch + i of the ``train`` split, so a run is reproducible and resumable), checkpoint every
``--every`` steps to ``OUT/<what>.pt`` and resume from it. The UNet and the text encoder are
trained jointly with the DDPM objective (Ho et al., NeurIPS 2020) in v-prediction (Salimans &
Ho, ICLR 2022) weighted by min-SNR-5 (Hang et al., ICCV 2023), 10 % empty captions for
classifier-free guidance (Ho & Salimans, 2022), and an exponential moving average of the weights,
which is what is exported.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from t2iguard.generate.tiny import world
from t2iguard.generate.tiny.components import (
    MODEL_SIZE,
    PatchVAE,
    build_tokenizer,
    scheduler_config,
    text_config,
    unet_config,
)
from t2iguard.generate.tiny.concepts import (
    CLASSIFIER_FILE,
    CONCEPT_KEYS,
    CONCEPTS,
    ConceptClassifier,
    build_classifier_module,
    concept_prompt,
)


def _log(out: Path, msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with (out / "train.log").open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def build_models() -> tuple[Any, Any, Any, PatchVAE, Any]:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer(world.vocabulary())
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config(len(tokenizer))))
    unet = UNet2DConditionModel(**unet_config())
    cfg = {k: v for k, v in scheduler_config().items() if k not in ("set_alpha_to_one",)}
    return tokenizer, text_encoder, unet, PatchVAE(), DDPMScheduler(**cfg)


def _batch(step: int, batch: int, drop: float) -> tuple[torch.Tensor, list[str]]:
    items = world.scenes(world.SPLIT_SEEDS["train"], step * batch, (step + 1) * batch)
    rng = random.Random(f"caption-drop/{step}")
    captions = ["" if rng.random() < drop else s.caption for s in items]
    x = torch.from_numpy(
        world.to_array([s.image.resize((MODEL_SIZE, MODEL_SIZE), Image.Resampling.LANCZOS) for s in items])
    )
    if rng.random() < 0.5:  # horizontal flips keep captions true
        x = x.flip(-1)
    return x, captions


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)


def train_unet(args: argparse.Namespace) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tokenizer, text_encoder, unet, vae, sched = build_models()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    for p in [*ema_unet.parameters(), *ema_text.parameters()]:
        p.requires_grad_(False)
    ckpt = out / "unet.pt"
    step = 0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text"])
        ema_unet.load_state_dict(state["ema_unet"])
        ema_text.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        _log(out, f"resumed at step {step}")
    elif args.init_from:  # warm start from another run (new modules keep their initialisation)
        state = torch.load(args.init_from, map_location="cpu", weights_only=False)
        missing, _ = unet.load_state_dict(state["unet"], strict=False)
        if "add_embedding.norm2.weight" in missing:  # start the new text path as a no-op
            torch.nn.init.zeros_(unet.add_embedding.norm2.weight)
        text_encoder.load_state_dict(state["text"])
        ema_unet.load_state_dict(unet.state_dict())
        ema_text.load_state_dict(text_encoder.state_dict())
        _log(out, f"initialised from {args.init_from} (step {state['step']}); new: {len(missing)} tensors")
    n_params = sum(p.numel() for p in params)
    _log(out, f"unet+text: {n_params / 1e6:.2f}M parameters; training to step {args.steps}")
    alphas = sched.alphas_cumprod
    unet.train()
    text_encoder.train()
    t_last, losses = time.perf_counter(), []
    while step < args.steps:
        lr = args.lr * min(1.0, (step + 1) / 200)
        if step > args.steps * 0.8:  # linear decay over the last fifth
            lr *= max(0.1, (args.steps - step) / (args.steps * 0.2))
        for g in opt.param_groups:
            g["lr"] = lr
        x, captions = _batch(step, args.batch, args.drop)
        latents = vae.encode(x).latent_dist.sample()
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
        ids_t = torch.tensor(ids["input_ids"])
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],))
        noisy = sched.add_noise(latents, noise, t)
        hidden = text_encoder(ids_t).last_hidden_state
        pred = unet(noisy, t, hidden).sample
        snr = alphas[t] / (1 - alphas[t])
        weight = torch.clamp(snr, max=5.0) / (snr + 1)  # min-SNR-5 for v-prediction
        target = sched.get_velocity(latents, noise, t)
        loss = (weight * F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        _ema_update(ema_text, text_encoder, decay)
        losses.append(loss.item())
        if step % 25 == 0:
            dt = (time.perf_counter() - t_last) / 25
            _log(out, f"step {step} loss {np.mean(losses):.4f} lr {lr:.2e} {dt:.2f}s/step")
            t_last, losses = time.perf_counter(), []
        if step % args.every == 0 or step == args.steps:
            state = {
                "unet": unet.state_dict(),
                "text": text_encoder.state_dict(),
                "ema_unet": ema_unet.state_dict(),
                "ema_text": ema_text.state_dict(),
                "opt": opt.state_dict(),
                "step": step,
            }
            torch.save(state, out / "unet.tmp")
            (out / "unet.tmp").replace(ckpt)
            _log(out, f"checkpoint at step {step}")
            export(out, out / "pipeline", quiet=True)
            _preview(out / "pipeline", out / f"preview-{step:06d}.png")


def _preview(model_dir: Path, path: Path) -> None:
    from t2iguard.generate.tiny.pipeline import load_tiny_pipeline

    pipe = load_tiny_pipeline(model_dir=model_dir)
    prompts = [concept_prompt(k) for k in CONCEPT_KEYS] + ["a knife and an apple on a blue background"]
    g = torch.Generator().manual_seed(0)
    images = pipe(prompts, num_inference_steps=20, generator=g).images
    world.grid(images, cols=8).save(path)


def export(out: Path, model_dir: Path, quiet: bool = False) -> None:
    """Write the EMA weights of ``OUT/unet.pt`` as a diffusers pipeline folder at ``model_dir``."""
    from t2iguard.generate.tiny.pipeline import assemble_pipeline

    state = torch.load(out / "unet.pt", map_location="cpu", weights_only=False)
    tokenizer, text_encoder, unet, vae, _ = build_models()
    unet.load_state_dict(state["ema_unet"])
    text_encoder.load_state_dict(state["ema_text"])
    pipe = assemble_pipeline(unet=unet.half(), text_encoder=text_encoder.half(), tokenizer=tokenizer, vae=vae)
    pipe.save_pretrained(model_dir, safe_serialization=True)  # fp16 on disk (half the size); loaded as fp32
    info = (
        {"step": state["step"], "batch": 32, **json.loads((out / "run.json").read_text())}
        if (out / "run.json").is_file()
        else {"step": state["step"]}
    )
    (model_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    if not quiet:
        print(f"exported step {state['step']} to {model_dir}")


# ---- the concept classifier ------------------------------------------------------------------
def _augment(img: Image.Image, rng: random.Random) -> Image.Image:
    if rng.random() < 0.5:  # what the model's 32x32 samples look like once upsampled
        small = img.resize((MODEL_SIZE, MODEL_SIZE), Image.Resampling.LANCZOS)
        img = small.resize(img.size, Image.Resampling.BILINEAR)
    elif rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.2)))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img


def _classifier_batch(seed: int, start: int, n: int, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
    rng = random.Random(f"classifier/{seed}/{start}")
    images, labels = [], []
    for i in range(start, start + n):
        r = rng.random()
        if augment and r < 0.05:  # empty backgrounds and noise: no concept present
            rgb = tuple(rng.randrange(256) for _ in range(3))
            img = Image.new("RGB", (world.SIZE, world.SIZE), rgb)
            if rng.random() < 0.5:
                arr = np.random.default_rng(i).normal(0, rng.uniform(10, 90), (world.SIZE, world.SIZE, 3))
                img = Image.fromarray(np.clip(np.asarray(img, np.float32) + arr, 0, 255).astype(np.uint8))
            images.append(img)
            labels.append(np.zeros(len(CONCEPTS), np.float32))
            continue
        s = world.scene(seed, i)
        images.append(_augment(s.image, rng) if augment else s.image)
        labels.append(s.labels)
    x = torch.from_numpy(world.to_array(images))
    if augment:
        x = x + torch.randn_like(x) * torch.rand(x.shape[0], 1, 1, 1) * 0.1
    return x, torch.from_numpy(np.stack(labels))


def evaluate_classifier(clf: ConceptClassifier, n: int = 2000, degraded: bool = False) -> dict[str, Any]:
    """Accuracy on ``n`` held-out composed scenes of the ``test`` split (``degraded``: first
    downsampled to the model's 32x32 and upsampled back)."""
    x, y = _classifier_batch(world.SPLIT_SEEDS["test"], 0, n, augment=False)
    if degraded:  # as seen on the model's outputs: 32x32 upsampled to 64x64
        x = F.interpolate(F.interpolate(x, size=MODEL_SIZE, mode="area"), size=world.SIZE, mode="bilinear")
    p = clf.predict(x)
    pred = p >= 0.5
    truth = y.numpy() >= 0.5
    per_concept = {k: float((pred[:, i] == truth[:, i]).mean()) for i, k in enumerate(CONCEPT_KEYS)}
    recall = {k: float(pred[truth[:, i], i].mean()) for i, k in enumerate(CONCEPT_KEYS)}
    single = truth.sum(1) == 1
    top1 = float((p[single].argmax(1) == truth[single].argmax(1)).mean())
    return {
        "n": n,
        "exact_match": float((pred == truth).all(1).mean()),
        "label_accuracy": float((pred == truth).mean()),
        "single_object_top1": top1,
        "per_concept_accuracy": per_concept,
        "per_concept_recall": recall,
    }


def train_classifier(args: argparse.Namespace) -> None:
    from safetensors.torch import save_file

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    module = build_classifier_module()
    opt = torch.optim.AdamW(module.parameters(), lr=args.lr, weight_decay=1e-4)
    ckpt = out / "classifier.pt"
    step = 0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        module.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
    module.train()
    t_last, losses = time.perf_counter(), []
    while step < args.steps:
        lr = args.lr * (0.5 * (1 + np.cos(np.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = _classifier_batch(world.SPLIT_SEEDS["train"], 10_000_000 + step * args.batch, args.batch, True)
        loss = F.binary_cross_entropy_with_logits(module(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            _log(
                out,
                f"classifier step {step} loss {np.mean(losses):.4f} {(time.perf_counter() - t_last) / 50:.2f}s/step",
            )
            t_last, losses = time.perf_counter(), []
        if step % args.every == 0 or step == args.steps:
            torch.save({"model": module.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
    module.eval()
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(out / CLASSIFIER_FILE))
    clf = ConceptClassifier(module)
    metrics = {"scenes_64": evaluate_classifier(clf), "scenes_32_upsampled": evaluate_classifier(clf, degraded=True)}
    (out / "classifier_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    for name, m in metrics.items():
        _log(out, f"classifier test {name}: {json.dumps({k: v for k, v in m.items() if not k.startswith('per_')})}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["unet", "classifier", "export"])
    ap.add_argument("--out", type=Path, default=Path("out/tiny-train"))
    ap.add_argument("--model-dir", type=Path, default=None, help="export target (default: the bundled folder)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--drop", type=float, default=0.1, help="fraction of empty captions (for CFG)")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--every", type=int, default=250, help="checkpoint every N steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init-from", type=Path, default=None, help="warm start the UNet from another run's unet.pt")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.what == "unet":
        args.lr = args.lr or 5e-4
        train_unet(args)
    elif args.what == "classifier":
        args.lr = args.lr or 2e-3
        train_classifier(args)
    else:
        from t2iguard.generate.tiny.model import model_dir

        export(args.out, args.model_dir or model_dir())


if __name__ == "__main__":
    main()
