"""``classifier``: a learned multi-label prompt classifier, one calibrated probability per category.

Keyword lists miss paraphrase, euphemism and "visual synonyms". Following the embedding-classifier
approach of prompt filters in the literature (e.g. Latent Guard, Liu et al., ECCV 2024, which
classifies in a learned embedding space; and the linear probes on sentence embeddings of
Schramowski et al.'s Q16, FAccT 2022), this stage embeds the prompt with the packaged
all-MiniLM-L6-v2 encoder (:mod:`t2iguard.prompt.embedding`) and scores it with a small MLP head
that has one sigmoid output per policy category, each calibrated with Platt scaling (Platt, 1999)
on held-out training data. The head (``models/prompt_classifier/head.safetensors``, < 1 MB) is
trained by ``training/prompt_classifier/train.py``; its model card is the ``README.md`` next to it.

The stage reads the canonical text of the ``normalize`` stage (character-level obfuscation is
undone before the model sees the prompt) and scores every window of ``max_length`` word pieces,
so a long prompt has no unread tail. It runs batched, loads once per
:class:`~t2iguard.core.stage.ModelCache`, and reports categories scoring at least
``report_floor``; the full score vector is left in the result's artifacts for later tiers (the
LLM judge reads it to decide whether the prompt is in its uncertain band).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from t2iguard.core.decision import Finding, StageResult, TraceEntry
from t2iguard.core.errors import ConfigurationError, MissingDependencyError
from t2iguard.core.stage import ModelCache, PromptContext, PromptStage
from t2iguard.core.types import Action, Category
from t2iguard.prompt.embedding import E5Encoder, MiniLMEncoder, file_sha256, get_encoder
from t2iguard.prompt.language import foreign_share, language_check
from t2iguard.prompt.normalize import NormalizedText, default_normalizer

CATEGORIES: tuple[Category, ...] = tuple(Category)
HEAD_DIR = Path(str(resources.files("t2iguard.prompt").joinpath("models/prompt_classifier")))
# the heads that ship in the package, by the name a policy may give instead of a directory
BUILTIN_HEADS = {
    "english": HEAD_DIR,
    "multilingual": Path(str(resources.files("t2iguard.prompt").joinpath("models/prompt_classifier_multilingual"))),
    "indirect": Path(str(resources.files("t2iguard.prompt").joinpath("models/prompt_classifier_indirect"))),
}
FORMAT = "t2iguard-prompt-classifier/1"
TIER = "classifier"
# disguise kinds that read an English prompt: another language's words are no typos and no gibberish
_ENGLISH_ONLY_DISGUISES = frozenset({"misspelling", "gibberish"})


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (Hendrycks & Gimpel, 2016), as the head was trained with."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


def mlp_logits(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The head's raw logits for embeddings ``x`` (n, d) -> (n, categories)."""
    h = gelu(x @ params["w1"] + params["b1"])
    out: np.ndarray = h @ params["w2"] + params["b2"]
    return out


class WindowedEncoder(Protocol):
    """A sentence encoder that can also embed every window of a long text."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray: ...

    def encode_windows(self, texts: Sequence[str], *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class PromptClassifier:
    """Encoder + calibrated head. Thread-safe; build with :func:`load_classifier`."""

    encoder: WindowedEncoder
    params: dict[str, np.ndarray]
    categories: tuple[Category, ...]
    meta: dict[str, Any]
    windows: bool = True
    # threadpoolctl's controller of the BLAS that NumPy calls (the head runs on one of its threads)
    blas: Any = None

    @property
    def sha256(self) -> str:
        return str(self.meta.get("sha256", ""))

    @property
    def thresholds(self) -> dict[Category, float]:
        """The operating points recommended by the model card (FPR-bounded on held-out
        benign training prompts); the policy decides which threshold applies."""
        return {Category(k): float(v) for k, v in self.meta.get("thresholds", {}).items()}

    def predict(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Calibrated probabilities, shape (len(texts), len(categories))."""
        n = len(texts)
        if n == 0:
            return np.zeros((0, len(self.categories)), dtype=np.float32)
        if self.windows:
            emb, owners = self.encoder.encode_windows(texts, batch_size=batch_size)
        else:
            emb, owners = self.encoder.encode(texts, batch_size=batch_size), np.arange(n)
        z = self._head(emb) * self.params["platt_a"] + self.params["platt_b"]
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))
        out = np.zeros((n, len(self.categories)), dtype=np.float32)
        np.maximum.at(out, owners, p.astype(np.float32))
        return out

    def _head(self, emb: np.ndarray) -> np.ndarray:
        """The head's logits, on one BLAS thread: its products are small, and the idle threads of a
        multi-threaded BLAS spin on the cores that the encoder's sessions need for the next batch (on
        2 cores, a 4-sentence prompt and its parts: 27 -> 17 ms)."""
        if self.blas is None:
            return mlp_logits(self.params, emb)
        with self.blas.limit(limits=1, user_api="blas"):
            return mlp_logits(self.params, emb)


def load_classifier(
    models: ModelCache,
    path: str | Path | None = None,
    *,
    threads: int | None = None,
    windows: bool = True,
) -> PromptClassifier:
    """The classifier whose head lives in directory ``path`` (default: the bundled English head;
    ``"english"`` or ``"multilingual"`` name a bundled head), loaded once per model cache."""
    directory = BUILTIN_HEADS.get(str(path), Path(path)) if path else HEAD_DIR

    def build() -> PromptClassifier:
        meta_file = directory / "head.json"
        weights = directory / "head.safetensors"
        if not meta_file.is_file() or not weights.is_file():
            raise ConfigurationError(f"classifier head not found: {directory} needs head.json and head.safetensors")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ConfigurationError(f"{meta_file}: unknown format {meta.get('format')!r}; expected {FORMAT}")
        try:
            from safetensors.numpy import load_file
            from threadpoolctl import ThreadpoolController
        except ImportError as exc:
            raise MissingDependencyError(exc.name or "safetensors", "classifier", "the prompt classifier") from None
        params = {k: v.astype(np.float32) for k, v in load_file(str(weights)).items()}
        categories = tuple(Category(c) for c in meta["categories"])
        missing = {"w1", "b1", "w2", "b2", "platt_a", "platt_b"} - set(params)
        if missing:
            raise ConfigurationError(f"{weights}: missing tensors {sorted(missing)}")
        if params["w2"].shape[1] != len(categories) or params["platt_a"].shape != (len(categories),):
            raise ConfigurationError(f"{weights}: head outputs do not match the {len(categories)} categories")
        enc = meta.get("encoder", {})
        encoder: WindowedEncoder
        if enc.get("name") == "minilm":
            adapter = _adapter_file(meta_file, enc.get("adapter"))
            minilm = get_encoder(
                models, "minilm", max_length=int(enc.get("max_length", 128)), threads=threads, adapter=adapter
            )
            assert isinstance(minilm, MiniLMEncoder)
            encoder = minilm
        elif enc.get("name") == "e5":
            e5 = get_encoder(models, "e5")
            assert isinstance(e5, E5Encoder)
            encoder = e5
        else:
            raise ConfigurationError(f"{meta_file}: unsupported encoder {enc.get('name')!r} (minilm or e5)")
        if params["w1"].shape[0] != encoder.dim:
            raise ConfigurationError(
                f"{weights}: head expects {params['w1'].shape[0]}-d input, encoder gives {encoder.dim}"
            )
        return PromptClassifier(encoder, params, categories, meta, windows=windows, blas=ThreadpoolController())

    return models.get(("prompt-classifier", str(directory.resolve()), threads, windows), build)


def _adapter_file(meta_file: Path, ref: Any) -> Path | None:
    """The encoder adapter a head was trained on (``encoder.adapter`` in head.json: a path relative
    to the head's directory and the file's sha256), checked before use: a head read through the
    wrong encoder would score every prompt wrongly without any error."""
    if ref is None:
        return None
    if not isinstance(ref, dict) or not isinstance(ref.get("path"), str) or not isinstance(ref.get("sha256"), str):
        raise ConfigurationError(f"{meta_file}: encoder.adapter needs 'path' and 'sha256'")
    path = (meta_file.parent / ref["path"]).resolve()
    if not path.is_file():
        raise ConfigurationError(f"{meta_file}: encoder adapter not found: {path}")
    digest = file_sha256(path)
    if digest != ref["sha256"]:
        raise ConfigurationError(
            f"{meta_file}: encoder adapter {path} has sha256 {digest[:12]}…, the head was trained on "
            f"{ref['sha256'][:12]}…"
        )
    return path


class SecondOpinion(BaseModel):
    """Confirm a head's marginal flags with a head on another encoder before acting on them.

    Two sentence encoders err differently on subjects neither head was trained on (Dietterich,
    2000: ensembles help as far as their members' errors are uncorrelated), while a request that is
    really unsafe reads as unsafe to both. So a flag scoring in ``[threshold, below)`` acts only if
    the second head also scores the category at least ``scale`` x its model-card threshold (times
    the disguise scale, as for the first head); flags at or above ``below`` act alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="the second head: a directory with head.json, or a bundled head (multilingual)")
    below: float = Field(gt=0.0, le=1.0, description="flags scoring at least this act without confirmation")
    scale: float = Field(default=1.0, gt=0.0, le=1.0, description="confirm at this x the second head's threshold")


class ShareOfThreshold(BaseModel):
    """A co-evidence level written relative to the stage's own threshold for that category, so that
    it follows the threshold when a retrained head's card moves it (``{of_threshold: 0.5}``: half)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    of_threshold: float = Field(gt=0.0, le=1.0, description="this x the stage's threshold for the category")


class ClauseView(BaseModel):
    """``clause_view``: a finer reading than ``segment_view``, at a weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    words: int = Field(ge=4, le=128, description="runs of whole clauses of at most this many words")
    weight: float = Field(
        gt=0.0, le=1.0, description="a run's scores enter times this: a short fragment acts at threshold / weight"
    )


class PromptClassifierStage(PromptStage):
    """Scores the (normalized) prompt for every policy category with the learned classifier."""

    covers: ClassVar[frozenset[Category]] = frozenset(Category)
    cost: ClassVar[str] = "model"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        model: str | None = Field(
            default=None,
            description="directory with head.json + head.safetensors, or a bundled head: english (default), "
            "multilingual, indirect",
        )
        batch_size: int = Field(default=64, ge=1, le=4096)
        threads: int | None = Field(default=None, ge=1, description="ONNX Runtime intra-op threads")
        windows: bool = Field(default=True, description="score every window of a long prompt (max)")
        report_floor: float = Field(
            default=0.05, ge=0.0, le=1.0, description="report categories scoring at least this in the trace"
        )
        foreign_share: float | None = Field(
            default=None,
            gt=0.0,
            le=1.0,
            description="score only prompts with at least this share of words outside the English vocabulary "
            "(a multilingual tier after the English classifier); None: every prompt",
        )
        obfuscated_scale: float | None = Field(
            default=None,
            gt=0.0,
            le=1.0,
            description="multiply the thresholds by this for a prompt in disguise (leetspeak, look-alike or "
            "hidden characters, words split by separators, several typos: NormalizedText.obfuscation); "
            "disguise is evidence of intent, and normalization cannot always undo it; None: no change",
        )
        co_evidence: dict[Category, dict[Category, float | ShareOfThreshold]] = Field(
            default_factory=dict,
            description="act on a category only when other categories score at least this much too, e.g. "
            "{minors: {sexual: 0.1}} or, relative to this stage's sexual threshold, {minors: {sexual: "
            "{of_threshold: 0.5}}}: the minors category is the *sexualised* depiction of minors (every "
            "minors-labelled training prompt is also sexual), and a child playing is no violation; a gated "
            "score (at or above report_floor) stays in the trace and the stage's artifacts ('gated')",
        )
        obfuscated_min_corrections: int = Field(
            default=2, ge=1, description="spelling corrections that count as a disguise (obfuscated_scale)"
        )
        obfuscated_min_gibberish: int = Field(
            default=3,
            ge=1,
            description="lower-case non-words (4+ letters, a sixth of the words or more) that count as a disguise "
            "(obfuscated_scale): the sub-word soup of prompts optimised against a text encoder",
        )
        gibberish_view: bool = Field(
            default=False,
            description="for a prompt in gibberish disguise (obfuscated_min_gibberish; English prompts), score "
            "the text without its non-words too and keep the higher score per category: a mean-pooled "
            "encoder dilutes a few unsafe words among many sub-word tokens (NormalizedText.without_gibberish)",
        )
        segment_view: int | None = Field(
            default=None,
            ge=4,
            le=128,
            description="also score each sentence of a prompt and, in a sentence longer than this many words, "
            "each run of whole clauses of at most this many words, and keep the higher score per category: a "
            "mean-pooled embedding of a long prompt is dominated by its majority, so unsafe words padded with "
            "benign text (a dilution attack) read as benign (NormalizedText.segments); None: the whole prompt only",
        )
        clause_view: ClauseView | None = Field(
            default=None,
            description="also score the runs of whole clauses of at most `words` words (NormalizedText.segments), "
            "their scores times `weight`: a request in a comma list of benign scenes shares segment_view's "
            "runs with a scene or two; a part that segment_view reads too is read once, at weight 1",
        )
        second_opinion: SecondOpinion | None = Field(
            default=None,
            description="confirm flags in the marginal band [threshold, below) with a head on another encoder "
            "(see SecondOpinion); None: every flag at its threshold acts",
        )

    params: Params

    def _classifier(self) -> PromptClassifier:
        return load_classifier(self.models, self.params.model, threads=self.params.threads, windows=self.params.windows)

    def warmup(self) -> None:
        self._classifier()

    def _normalized(self, ctx: PromptContext) -> NormalizedText:
        """The normalize stage's view of the prompt (computed here when no normalize stage ran)."""
        if ctx.normalized is not None:
            return ctx.normalized
        return default_normalizer(self.models).normalize(ctx.text)

    def scan(self, ctx: PromptContext) -> StageResult:
        return self.scan_batch([ctx])[0]

    def _foreign_share(self, ctx: PromptContext) -> float:
        """The share of words (two letters or more) outside the English vocabulary, as written:
        other languages, but also names and typos."""
        vocab = default_normalizer(self.models).vocabulary
        if vocab is None:
            return 0.0
        return foreign_share((w.canonical for w in self._normalized(ctx).words if w.canonical.isalpha()), vocab)

    def scan_batch(self, ctxs: Sequence[PromptContext]) -> list[StageResult]:
        gate = self.params.foreign_share
        if gate is None:
            return self._score(ctxs)
        shares = [self._foreign_share(c) for c in ctxs]
        routed = [i for i, share in enumerate(shares) if share >= gate]
        scored = iter(self._score([ctxs[i] for i in routed]))
        out: list[StageResult] = []
        for share in shares:
            if share >= gate:
                out.append(next(scored))
            else:
                out.append(
                    self.result(
                        [],
                        message=f"not run: {share:.0%} of the words are outside the English vocabulary (< {gate:.0%})",
                        artifacts={"foreign_share": round(share, 3)},
                    )
                )
        return out

    def _score(self, ctxs: Sequence[PromptContext]) -> list[StageResult]:
        if not ctxs:
            return []
        clf = self._classifier()
        normalized = [self._normalized(c) for c in ctxs]
        # the prompts and their parts (segment_view, clause_view) in one call: the encoder spreads the
        # whole prompts and the short parts over its workers instead of embedding one, then the other
        segments = self._segments(normalized)
        scored = clf.predict(
            [n.text for n in normalized] + [p for _, p, _ in segments], batch_size=self.params.batch_size
        )
        probs, part_rows = scored[: len(normalized)], scored[len(normalized) :]
        model = clf.sha256[:12]
        evidences = [self._disguise_evidence(n) for n in normalized]
        views = self._gibberish_view(clf, probs, normalized, evidences)
        # the disguise scale and its evidence apply only where the policy sets a scale
        configured = self.params.obfuscated_scale
        disguises = [e if configured is not None else {} for e in evidences]
        scales = [configured if configured is not None and d else 1.0 for d in disguises]
        parts = self._segment_view(clf, probs, segments, part_rows, scales)
        co_evidence = self._co_evidence()
        gated = [self._gated(clf, row, co_evidence) for row in probs]
        unconfirmed = self._second_opinion(clf, probs, normalized, scales, gated)
        out: list[StageResult] = []
        for row, scale, disguise, view, part, held, doubt in zip(
            probs, scales, disguises, views, parts, gated, unconfirmed, strict=True
        ):
            scores = {str(c): round(float(p), 6) for c, p in zip(clf.categories, row, strict=True)}
            evidence: dict[str, object] = {"tier": TIER, "model": model}
            note = "learned classifier"
            if disguise:
                evidence.update(disguise=disguise, threshold_scale=scale)
                kinds = ", ".join(f"{k} {n}" for k, n in sorted(disguise.items()))
                note += f"; thresholds x{scale:g} for a prompt in disguise ({kinds})"
            if view:
                evidence["gibberish_view"] = view
                note += f"; read without its non-words too ({view['text']!r}), higher in {', '.join(view['raised'])}"
            if part:
                evidence["segment_view"] = part
                note += f"; read in parts too ({part['text']!r}), higher in {', '.join(part['raised'])}"
            findings = [
                Finding(category=c, score=float(p), evidence=evidence, message=note)
                for c, p in zip(clf.categories, row, strict=True)
                if p >= self.params.report_floor and str(c) not in held and str(c) not in doubt
            ]
            top = int(np.argmax(row))
            message = None if findings else f"every category below {self.params.report_floor:g} "
            if message:
                message += f"(highest {clf.categories[top]} {float(row[top]):.3f})"
            artifacts: dict[str, object] = {"scores": scores}
            if held:
                artifacts["gated"] = held
            if doubt:
                artifacts["unconfirmed"] = doubt
            if disguise:
                artifacts.update(disguise=disguise, threshold_scale=scale)
            if view:
                artifacts["gibberish_view"] = view
            if part:
                artifacts["segment_view"] = part
            result = self.result(findings, message=message, artifacts=artifacts, threshold_scale=scale)
            # scores this stage reports but does not act on, and why
            withheld = [
                (
                    cat,
                    g["score"],
                    "gated",
                    g,
                    "not acted on without co-evidence: needs "
                    + ", ".join(f"{o} >= {v:g} (has {g['had'][o]:.3f})" for o, v in g["needs"].items()),
                )
                for cat, g in held.items()
            ] + [
                (
                    cat,
                    u["score"],
                    "second_opinion",
                    u,
                    f"not confirmed by the second opinion: {cat} {u['score']:.3f} "
                    f"is under {u['below']:g}, and the second head scored {u['second_score']:.3f} < "
                    f"{u['second_threshold']:.3f}",
                )
                for cat, u in doubt.items()
            ]
            for cat, score, key, detail, why in withheld:
                result.trace.append(
                    TraceEntry(
                        stage=self.name,
                        phase=result.phase,
                        category=Category(cat),
                        score=score,
                        action=Action.ALLOW,
                        evidence={**evidence, key: detail},
                        message=why,
                    )
                )
            out.append(result)
        return out

    def _disguise_evidence(self, norm: NormalizedText) -> dict[str, int]:
        """The prompt's disguise, kind -> words (the English-only kinds dropped for another language);
        not looked for when neither the disguise scale nor the gibberish view would use it."""
        if self.params.obfuscated_scale is None and not self.params.gibberish_view:
            return {}
        disguise = norm.obfuscation(self.params.obfuscated_min_corrections, self.params.obfuscated_min_gibberish)
        english_only = disguise.keys() & _ENGLISH_ONLY_DISGUISES
        if english_only and not language_check(self.models).english(norm.original):
            for kind in english_only:
                del disguise[kind]
        return disguise

    def _gibberish_view(
        self,
        clf: PromptClassifier,
        probs: np.ndarray,
        normalized: Sequence[NormalizedText],
        evidences: Sequence[dict[str, int]],
    ) -> list[dict[str, Any]]:
        """With ``gibberish_view``: score the prompts in gibberish disguise again without their
        non-words and raise ``probs`` in place to the higher score per category. Per prompt, the view
        and the categories it raised to ``report_floor`` or more ({} where none, or where it did not run)."""
        if not self.params.gibberish_view:
            return [{} for _ in normalized]
        views = [(i, normalized[i].without_gibberish()) for i, e in enumerate(evidences) if "gibberish" in e]
        return self._read_views(clf, probs, [(i, text) for i, text in views if text])

    def _segments(self, normalized: Sequence[NormalizedText]) -> list[tuple[int, str, float]]:
        """The parts of each prompt (:meth:`NormalizedText.segments`) that ``segment_view`` (at weight
        1) and ``clause_view`` (at its weight) read, as (prompt index, part, weight); a part both give
        is read once, at 1. None for a one-part prompt, or without the views."""
        levels = [(self.params.segment_view, 1.0)] if self.params.segment_view is not None else []
        if self.params.clause_view is not None:
            levels.append((self.params.clause_view.words, self.params.clause_view.weight))
        out: list[tuple[int, str, float]] = []
        for i, n in enumerate(normalized):
            parts: dict[str, float] = {}
            for words, weight in levels:
                for part in n.segments(words):
                    parts.setdefault(part, weight)
            out += [(i, part, weight) for part, weight in parts.items()]
        return out

    def _segment_view(
        self,
        clf: PromptClassifier,
        probs: np.ndarray,
        segments: Sequence[tuple[int, str, float]],
        rows: np.ndarray,
        scales: Sequence[float],
    ) -> list[dict[str, Any]]:
        """With ``segment_view`` or ``clause_view``: raise ``probs`` in place to the highest score per
        category of the prompts' parts (``segments``, scored as ``rows``). A part's score enters times its
        weight and the prompt's disguise scale (``scales``), so a sentence acts at the threshold as
        configured: the disguise scale is for what normalization may have missed in the whole, and
        reading many parts at lowered thresholds would compound two relaxations. Per prompt, the number
        of parts, the part that scored highest in the first category raised, the categories raised to
        ``report_floor`` or more and that part's weight where it is not 1 ({} where none, or where the
        prompt is one part)."""
        views = [(i, part) for i, part, _ in segments]
        weights = [weight * scales[i] for i, _, weight in segments]
        return self._read_views(clf, probs, views, rows=rows, count="parts", weights=weights)

    def _read_views(
        self,
        clf: PromptClassifier,
        probs: np.ndarray,
        views: Sequence[tuple[int, str]],
        *,
        rows: np.ndarray | None = None,
        count: str | None = None,
        weights: Sequence[float] | None = None,
    ) -> list[dict[str, Any]]:
        """Score ``views`` (prompt index, another reading of that prompt), in one batch (or take their
        scores, ``rows``), and raise ``probs`` in place to the highest score per category (a reading's
        scores times its entry in ``weights``, if given). Per prompt, the reading that scored highest in
        the first category it raised to ``report_floor`` or more, its weight where it is not 1, and those
        categories ({} where none; with ``count``, also the number of readings under that key)."""
        out: list[dict[str, Any]] = [{} for _ in probs]
        if not views:
            return out
        if rows is None:
            rows = clf.predict([text for _, text in views], batch_size=self.params.batch_size)
        floor = self.params.report_floor
        readings: dict[int, list[tuple[str, np.ndarray, float]]] = {}
        for k, ((i, text), row) in enumerate(zip(views, rows, strict=True)):
            weight = 1.0 if weights is None else weights[k]
            readings.setdefault(i, []).append((text, row * weight, weight))
        for i, scored in readings.items():
            top = np.max(np.stack([row for _, row, _ in scored]), axis=0)
            raised = [j for j, (p, q) in enumerate(zip(probs[i], top, strict=True)) if q > p and q >= floor]
            probs[i] = np.maximum(probs[i], top)
            if raised:
                text, _, weight = max(scored, key=lambda r: float(r[1][raised[0]]))
                out[i] = {"text": text, "raised": [str(clf.categories[j]) for j in raised]}
                if count is not None:
                    out[i][count] = len(scored)
                if weight != 1.0:
                    out[i]["weight"] = weight
        return out

    def _co_evidence(self) -> dict[str, dict[str, float]]:
        """``co_evidence`` as scores to reach: each level as written, or a share of this stage's
        threshold for its category (the configured one, before any disguise scale)."""

        def level(category: Category, v: float | ShareOfThreshold) -> float:
            return round(v.of_threshold * self.policy.rule(category)[0], 6) if isinstance(v, ShareOfThreshold) else v

        return {
            str(cat): {str(o): level(o, v) for o, v in levels.items()}
            for cat, levels in self.params.co_evidence.items()
        }

    def _gated(
        self, clf: PromptClassifier, row: np.ndarray, co_evidence: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, Any]]:
        """Categories held back for want of co-evidence (``co_evidence``, resolved by :meth:`_co_evidence`)."""
        scores = {str(c): float(p) for c, p in zip(clf.categories, row, strict=True)}
        gated: dict[str, dict[str, Any]] = {}
        for cat, needs in co_evidence.items():
            if scores.get(cat, 0.0) < self.params.report_floor:
                continue  # not a finding anyway (or not a category of this head)
            had = {o: round(scores.get(o, 0.0), 6) for o in needs}
            if any(had[o] < v for o, v in needs.items()):
                gated[cat] = {"score": round(scores[cat], 6), "needs": needs, "had": had}
        return gated

    def _second_opinion(
        self,
        clf: PromptClassifier,
        probs: np.ndarray,
        normalized: Sequence[NormalizedText],
        scales: Sequence[float],
        gated: Sequence[dict[str, dict[str, Any]]],
    ) -> list[dict[str, dict[str, Any]]]:
        """Per prompt, the acting categories in the marginal band that the second head does not
        confirm (``second_opinion``); the second head reads only the prompts with such a flag."""
        so = self.params.second_opinion
        out: list[dict[str, dict[str, Any]]] = [{} for _ in normalized]
        if so is None:
            return out
        marginal: dict[int, list[int]] = {}
        for i, (row, scale) in enumerate(zip(probs, scales, strict=True)):
            for j, c in enumerate(clf.categories):
                p = float(row[j])
                # the band: scores under `below` that the policy would act on (its own judgment)
                in_band = p < so.below and str(c) not in gated[i]
                if in_band and self.policy.judge(Finding(category=c, score=p), scale).action > Action.ALLOW:
                    marginal.setdefault(i, []).append(j)
        if not marginal:
            return out
        second = load_classifier(self.models, so.model, threads=self.params.threads, windows=self.params.windows)
        rows = list(marginal)
        probs2 = second.predict([normalized[i].text for i in rows], batch_size=self.params.batch_size)
        own = second.thresholds
        index2 = {c: k for k, c in enumerate(second.categories)}
        for i, row2 in zip(rows, probs2, strict=True):
            for j in marginal[i]:
                c = clf.categories[j]
                if c not in index2 or c not in own:
                    raise ConfigurationError(f"second-opinion head {so.model!r} has no {c} category or threshold")
                need = own[c] * so.scale * scales[i]
                got = float(row2[index2[c]])
                if got < need:
                    out[i][str(c)] = {
                        "score": round(float(probs[i][j]), 6),
                        "below": so.below,
                        "second_model": second.sha256[:12],
                        "second_score": round(got, 6),
                        "second_threshold": round(need, 6),
                    }
        return out
