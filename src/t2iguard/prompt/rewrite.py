"""``rewrite``: reframe a problematic but salvageable prompt into a benign, well-specified one.

"Show a lazy [ethnic group] person taking a nap" → "a person relaxing in the afternoon". The stage
acts only on prompts an earlier check flagged with action ``transform`` in one of its
``categories`` (so the policy decides, per category, what is rewritten instead of refused); the
pipeline re-runs every prompt check on the rewrite and blocks if it still fails. ``minors`` is
zero tolerance: the stage never rewrites a prompt with any minors evidence, and refuses a
configuration that lists it.

Backends:

* ``retrieval`` — the safe side of the curated unsafe→safe pair whose unsafe side is nearest (cosine
  of the shared MiniLM sentence embeddings) to the prompt, if at least ``min_similarity``; the
  grounding of Safe Latent Diffusion's "edit towards a safe concept", done in prompt space. Pairs:
  the shipped curated set (``data/rewrite_pairs.yaml``) and any files configured — CSV/YAML with
  ``unsafe``/``safe`` columns, or the CoProV2 training CSV (rows alternate ``u_``/``s_`` image ids;
  Liu et al., *SafetyDPO*, 2024), read from its path at run time and cached (embeddings) under the
  user cache directory, keyed by the file's SHA-256. Pairs whose safe side still triggers the
  blocklist are dropped.
* ``llm`` — any OpenAI-compatible chat endpoint (:mod:`t2iguard.core.llm`) asked for
  ``{"salvageable": bool, "rewrite": str, "reason": str}``; an unsalvageable answer leaves the
  prompt unchanged, so the pipeline fails closed.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from t2iguard.core.decision import Change, StageResult
from t2iguard.core.errors import ConfigurationError
from t2iguard.core.llm import ChatClient, ChatEndpoint
from t2iguard.core.policy import ZERO_TOLERANCE
from t2iguard.core.stage import ModelCache, PromptContext, PromptTransform
from t2iguard.core.types import Action, Category

REWRITABLE = frozenset(set(Category) - set(ZERO_TOLERANCE) - {Category.PRIVATE_INDIVIDUAL, Category.PUBLIC_FIGURE})

SYSTEM_PROMPT = (
    "You rewrite prompts for a text-to-image model so that they are safe for a general audience. "
    "Keep the benign intent (subject, setting, style) and remove what is sexual, violent, hateful, "
    "harassing, illegal, self-harming, shocking or misleading about real events. Never depict minors "
    "in any problematic way; if the request is about sexualising minors or cannot be made safe "
    "without changing its point, it is not salvageable. Reply with a JSON object: "
    '{"salvageable": true|false, "rewrite": "<the safe prompt, one sentence>", "reason": "<short>"}.'
)


class LLMRewrite(BaseModel):
    model_config = ConfigDict(extra="ignore")

    salvageable: bool
    rewrite: str = ""
    reason: str = ""


@dataclass(frozen=True)
class RewritePair:
    unsafe: str
    safe: str
    category: str = ""
    source: str = "builtin"


def cache_dir() -> Path:
    base = os.environ.get("T2IGUARD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "t2iguard"
    )
    return Path(base)


def load_pairs(source: str) -> list[RewritePair]:
    """Pairs from 'builtin', a YAML list, a CSV with unsafe/safe columns, or the CoProV2 CSV."""
    if source == "builtin":
        ref = resources.files("t2iguard.prompt").joinpath("data/rewrite_pairs.yaml")
        rows = yaml.safe_load(ref.read_text(encoding="utf-8"))
        return [RewritePair(r["unsafe"], r["safe"], r.get("category", ""), "builtin") for r in rows]
    path = Path(source)
    if not path.is_file():
        raise ConfigurationError(f"rewrite pairs file not found: {path}")
    if path.suffix.lower() in (".yaml", ".yml"):
        rows = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        return [RewritePair(r["unsafe"], r["safe"], r.get("category", ""), path.name) for r in rows]
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = set(reader.fieldnames or [])
        if {"unsafe", "safe"} <= fields:
            return [RewritePair(r["unsafe"], r["safe"], r.get("category", ""), path.name) for r in reader]
        if {"prompt", "image"} <= fields:
            return _copro_pairs(list(reader), path.name)
    raise ConfigurationError(f"{path}: expected unsafe/safe columns, or CoProV2's prompt/image/category")


def _copro_pairs(rows: list[dict[str, str]], name: str) -> list[RewritePair]:
    """CoProV2: an unsafe row (image ``u_idx_N_k``) followed by its safe counterpart (``s_idx_N_k``)."""
    out: list[RewritePair] = []
    pending: dict[str, dict[str, str]] = {}
    for r in rows:
        img = r.get("image", "")
        key = img[2:]
        if img.startswith("u_"):
            pending[key] = r
        elif img.startswith("s_") and key in pending:
            u = pending.pop(key)
            out.append(RewritePair(u["prompt"], r["prompt"], (r.get("category") or "").lower(), name))
    return out


class PairIndex:
    """Embedded unsafe sides of the pairs, for nearest-neighbour search."""

    def __init__(self, pairs: list[RewritePair], vectors: np.ndarray) -> None:
        self.pairs = pairs
        self.vectors = vectors

    def nearest(self, query: np.ndarray) -> tuple[int, float]:
        sims = self.vectors @ query
        i = int(np.argmax(sims))
        return i, float(sims[i])


def build_index(sources: tuple[str, ...], models: ModelCache) -> PairIndex:
    from t2iguard.prompt.blocklist import BlocklistStage, build_matcher
    from t2iguard.prompt.embedding import get_encoder

    encoder = get_encoder(models)
    matcher = models.get(
        ("blocklist", ("builtin",), "[]", "[]", True), lambda: build_matcher(BlocklistStage.Params(), models)
    )
    pairs: list[RewritePair] = []
    vectors: list[np.ndarray] = []
    for src in sources:
        loaded = load_pairs(src)
        kept = []
        for p in loaded:
            hits = matcher.match(matcher.normalizer.normalize(p.safe))
            if any(h.score >= 0.9 or h.term.category in ZERO_TOLERANCE for h in hits):
                continue  # the "safe" side still carries unsafe words
            kept.append(p)
        if src == "builtin":
            vecs = encoder.encode([p.unsafe for p in kept])
        else:
            vecs = _cached_vectors(Path(src), kept, encoder)
        pairs += kept
        vectors.append(vecs)
    if not pairs:
        raise ConfigurationError("no usable rewrite pairs")
    return PairIndex(pairs, np.concatenate(vectors).astype(np.float32))


def _cached_vectors(path: Path, pairs: list[RewritePair], encoder: Any) -> np.ndarray:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    target = cache_dir() / "rewrite" / f"{digest[:32]}-{encoder.name}-{len(pairs)}.npy"
    if target.is_file():
        vecs = np.load(target)
        if vecs.shape == (len(pairs), encoder.dim):
            return np.asarray(vecs)
    vecs = encoder.encode([p.unsafe for p in pairs])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.npy")
    np.save(tmp, vecs)
    tmp.replace(target)
    return np.asarray(vecs)


class RewriteStage(PromptTransform):
    """Rewrites prompts flagged ``transform`` into safe ones (retrieval or LLM)."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        backend: Literal["retrieval", "llm"] = "retrieval"
        categories: list[Category] = Field(
            default_factory=lambda: sorted(REWRITABLE), description="categories this stage rewrites when flagged"
        )
        pairs: list[str] = Field(
            default_factory=lambda: ["builtin"],
            description="'builtin' and/or paths: CSV/YAML unsafe/safe pairs or the CoProV2 training CSV",
        )
        min_similarity: float = Field(default=0.55, ge=0.0, le=1.0)
        llm: ChatEndpoint | None = None

        @field_validator("categories")
        @classmethod
        def _no_zero_tolerance(cls, v: list[Category]) -> list[Category]:
            bad = [c for c in v if c in ZERO_TOLERANCE]
            if bad:
                raise ValueError(f"zero-tolerance categories are never rewritten: {', '.join(bad)}")
            return v

    covers: ClassVar[frozenset[Category]] = frozenset()
    cost: ClassVar[str] = "model"

    def __init__(self, policy: Any, params: BaseModel, models: ModelCache) -> None:
        super().__init__(policy, params, models)
        if self.p.backend == "llm" and self.p.llm is None:
            raise ConfigurationError(f"stage '{self.name}': backend 'llm' needs an `llm` endpoint")
        self._client: ChatClient | None = None

    @property
    def p(self) -> RewriteStage.Params:
        return self.params  # type: ignore[return-value]

    def index(self) -> PairIndex:
        return self.models.get(
            ("rewrite-index", tuple(self.p.pairs)), lambda: build_index(tuple(self.p.pairs), self.models)
        )

    def warmup(self) -> None:
        if self.p.backend == "retrieval":
            self.index()

    def scan(self, ctx: PromptContext) -> StageResult:
        minors = [
            e
            for r in ctx.results
            for e in r.trace
            if e.category in ZERO_TOLERANCE and (e.action > Action.ALLOW or (e.score or 0.0) > 0.0)
        ]
        if minors:
            return self.result([], message="minors evidence: zero tolerance, never rewritten")
        flagged = ctx.flagged_categories()
        cats = sorted(c for c, a in flagged.items() if a == Action.TRANSFORM and c in self.p.categories)
        if not cats:
            return self.result([], message="nothing flagged for rewriting")
        if self.p.backend == "llm":
            return self._llm(ctx, cats)
        from t2iguard.prompt.embedding import get_encoder

        index = self.index()
        q = get_encoder(self.models).encode([ctx.text])[0]
        i, sim = index.nearest(q)
        pair = index.pairs[i]
        if sim < self.p.min_similarity:
            return self.result(
                [],
                message=f"no curated rewrite close enough (best cosine {sim:.2f} < {self.p.min_similarity:.2f}: "
                f"{pair.unsafe!r}); not salvageable here",
            )
        change = Change(
            stage=self.name,
            kind="rewrite",
            before=ctx.text,
            after=pair.safe,
            reason=f"flagged {', '.join(cats)}; nearest curated rewrite (cosine {sim:.2f}) of {pair.unsafe!r} "
            f"[{pair.source}]",
            category=cats[0],
        )
        return self.result([], prompt=pair.safe, changes=[change])

    def _llm(self, ctx: PromptContext, cats: list[Category]) -> StageResult:
        assert self.p.llm is not None
        if self._client is None:
            self._client = ChatClient(self.p.llm)
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Flagged categories: {', '.join(cats)}.\nPrompt: {ctx.text}"},
        ]
        reply, meta = self._client.complete_json(messages, LLMRewrite)
        new = " ".join(reply.rewrite.split())
        if not reply.salvageable or not new:
            return self.result([], message=f"the LLM judged the prompt not salvageable: {reply.reason}")
        change = Change(
            stage=self.name,
            kind="rewrite",
            before=ctx.text,
            after=new,
            reason=f"flagged {', '.join(cats)}; LLM rewrite ({self.p.llm.model}): {reply.reason}",
            category=cats[0],
        )
        return self.result([], prompt=new, changes=[change], artifacts={"llm": {"attempts": meta["attempts"]}})
