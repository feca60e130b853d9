"""``public_figure``: who a prompt names, and whether they may be depicted in this context.

Each person the shared :mod:`~t2iguard.prompt.people` analysis finds is a *public figure* (a
gazetteer match, fuzzy: ``Barak Obama``), a *fictional character* (ignored), a *style reference*
("by Greg Rutkowski": credited, not depicted) or a *private individual*. The stage reports:

* ``public_figure`` — the best match score. The default policy allows neutral depictions;
* the *context* categories — a real public figure named together with a term from
  ``data/public_figure_contexts.yaml`` (sexual, violent, humiliating, criminal, hateful, or
  election/arrest scenes: the political-misinformation deepfakes of the DALL·E 3 system card), or
  with evidence from earlier checks in those categories at or above ``context_min_score`` (the
  blocklist's weak terms, the classifiers' scores). Which contexts apply is configured per kind of
  figure (``kind_contexts``);
* ``private_individual`` — named private people and other PII (e-mail, phone, address...). The
  default policy says ``transform``: the ``anonymize`` stage replaces them.

The analysis is returned in ``artifacts["people"]`` so the transforms reuse it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field

from t2iguard.core.decision import Finding, StageResult
from t2iguard.core.stage import PromptContext, PromptStage
from t2iguard.core.types import Category
from t2iguard.prompt.normalize import default_normalizer
from t2iguard.prompt.people import PeopleAnalysis, PersonMention, get_people_analyzer

CONTEXT_CATEGORIES: tuple[Category, ...] = (
    Category.SEXUAL,
    Category.VIOLENCE,
    Category.HARASSMENT,
    Category.HATE,
    Category.ILLEGAL,
    Category.SELF_HARM,
    Category.SHOCKING,
    Category.POLITICAL_MISINFORMATION,
)


@lru_cache(maxsize=1)
def builtin_contexts() -> dict[Category, tuple[str, ...]]:
    ref = resources.files("t2iguard.prompt").joinpath("data/public_figure_contexts.yaml")
    data = yaml.safe_load(ref.read_text(encoding="utf-8")) or {}
    return {Category(k): tuple(str(t).lower() for t in v) for k, v in data.items()}


def _compile(terms: dict[Category, tuple[str, ...]]) -> list[tuple[Category, re.Pattern[str]]]:
    out = []
    for cat, words in terms.items():
        if words:
            alts = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
            out.append((cat, re.compile(rf"(?<![\w])(?:{alts})(?![\w])")))
    return out


class PeopleParams(BaseModel):
    """Parameters shared by the stages that use the people analysis (so they share one model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gazetteer: list[str] = Field(
        default_factory=lambda: ["builtin"], description="'builtin' and/or paths to CSV/YAML lists of public figures"
    )
    fuzzy_cutoff: float = Field(default=88.0, ge=50.0, le=100.0, description="fuzzy name-match cutoff (0-100)")


class PublicFigureStage(PromptStage):
    """Public figures vs private individuals, and public figures in disallowed contexts."""

    class Params(PeopleParams):
        context_categories: list[Category] = Field(
            default_factory=lambda: list(CONTEXT_CATEGORIES),
            description="categories in which a real public figure is reported when the prompt has such context",
        )
        kind_contexts: dict[str, list[Category]] = Field(
            default_factory=dict,
            description="per gazetteer kind (politician, actor, ...), the context categories that apply "
            "instead of context_categories",
        )
        context_terms: dict[Category, list[str]] = Field(
            default_factory=dict, description="extra context terms per category"
        )
        builtin_context_terms: bool = True
        context_min_score: float = Field(
            default=0.7,
            ge=0.0,
            le=1.0,
            description="an earlier check's score that counts as context (0.7: classifier scores and strong "
            "terms; the blocklist's weak terms, 0.5, are too ambiguous alone: 'a close-up shot')",
        )
        pii: bool = Field(default=True, description="report e-mails, phone numbers, addresses as private_individual")

    covers: ClassVar[frozenset[Category]] = frozenset(
        {Category.PUBLIC_FIGURE, Category.PRIVATE_INDIVIDUAL, *CONTEXT_CATEGORIES}
    )
    cost: ClassVar[str] = "model"

    def __init__(self, policy: Any, params: BaseModel, models: Any) -> None:
        super().__init__(policy, params, models)
        p: PublicFigureStage.Params = self.params  # type: ignore[assignment]
        terms: dict[Category, tuple[str, ...]] = dict(builtin_contexts()) if p.builtin_context_terms else {}
        for cat, extra in p.context_terms.items():
            terms[cat] = (*terms.get(cat, ()), *(t.lower().strip() for t in extra if t.strip()))
        self._contexts = _compile(terms)

    @property
    def p(self) -> PublicFigureStage.Params:
        return self.params  # type: ignore[return-value]

    def analyzer(self) -> Any:
        return get_people_analyzer(self.models, tuple(self.p.gazetteer), self.p.fuzzy_cutoff)

    def warmup(self) -> None:
        self.analyzer()
        default_normalizer(self.models)

    def scan_batch(self, ctxs: Any) -> list[StageResult]:
        analyses = self.analyzer().analyze_many([c.text for c in ctxs])
        return [self._scan(c, a) for c, a in zip(ctxs, analyses, strict=True)]

    def scan(self, ctx: PromptContext) -> StageResult:
        return self._scan(ctx, self.analyzer().analyze(ctx.text))

    def _scan(self, ctx: PromptContext, analysis: PeopleAnalysis) -> StageResult:
        findings: list[Finding] = []
        public = analysis.public
        if public:
            best = max(public, key=lambda m: m.match.score if m.match else 0.0)
            assert best.match is not None
            findings.append(
                Finding(
                    category=Category.PUBLIC_FIGURE,
                    score=best.match.score,
                    evidence={"people": [m.to_dict() for m in public]},
                    message="public figure(s): " + ", ".join(f"{m.match.figure.name}" for m in public if m.match),
                )
            )
            findings += self._contexts_for(ctx, public)
        private = analysis.private
        pii = analysis.pii if self.p.pii else ()
        if private or pii:
            score = max([m.score for m in private] + [p.score for p in pii])
            parts = []
            if private:
                parts.append("private individual(s): " + ", ".join(repr(m.text) for m in private))
            if pii:
                parts.append("personal data: " + ", ".join(sorted({p.entity for p in pii})))
            findings.append(
                Finding(
                    category=Category.PRIVATE_INDIVIDUAL,
                    score=min(1.0, score),
                    evidence={"people": [m.to_dict() for m in private], "pii": [p.to_dict() for p in pii]},
                    message="; ".join(parts),
                )
            )
        others = [m.to_dict() for m in analysis.people if m.fictional or m.style_reference]
        message = None if findings else ("no named people" if not others else "only credited or fictional names")
        return self.result(findings, message=message, artifacts={"people": analysis})

    def _contexts_for(self, ctx: PromptContext, public: list[PersonMention]) -> list[Finding]:
        text = (
            ctx.normalized.text if ctx.normalized is not None and ctx.normalized.original == ctx.text else None
        ) or (default_normalizer(self.models).normalize(ctx.text).text)
        # evidence from checks that already ran (not from this stage, not from earlier passes of it)
        upstream: dict[Category, tuple[float, str]] = {}
        for r in ctx.results:
            if r.stage == self.name:
                continue
            for e in r.trace:
                if e.category is None or e.score is None or e.score < self.p.context_min_score:
                    continue
                if e.score > upstream.get(e.category, (0.0, ""))[0]:
                    what = e.evidence.get("matched") or e.evidence.get("term") or e.message or ""
                    upstream[e.category] = (e.score, f"{r.stage}: {what}")
        lexical: dict[Category, str] = {}
        for cat, rx in self._contexts:
            m = rx.search(text)
            if m is not None:
                lexical[cat] = m.group(0)
        out: list[Finding] = []
        for cat in CONTEXT_CATEGORIES:
            hits = [
                m
                for m in public
                if m.match is not None
                and cat in self.p.kind_contexts.get(m.match.figure.kind, self.p.context_categories)
            ]
            if not hits or (cat not in lexical and cat not in upstream):
                continue
            fig = max(hits, key=lambda m: m.match.score if m.match else 0.0)
            assert fig.match is not None
            why = f"term {lexical[cat]!r}" if cat in lexical else f"{upstream[cat][1]} ({upstream[cat][0]:.2f})"
            out.append(
                Finding(
                    category=cat,
                    score=fig.match.score,
                    evidence={
                        "figure": fig.match.figure.name,
                        "kind": fig.match.figure.kind,
                        "matched": fig.text,
                        "context": lexical.get(cat) or upstream[cat][1],
                    },
                    message=f"public figure {fig.match.figure.name!r} ({fig.match.figure.kind}) in a {cat} context: {why}",
                )
            )
        return out
