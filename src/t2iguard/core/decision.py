"""The one decision model: what a stage found, what it proposes, and why.

Modelled on LlamaFirewall's small typed ``ScanResult`` and Presidio's decision traces: every
verdict carries the stage, category, score and threshold that produced it, so a decision can
always be explained and replayed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from t2iguard.core.types import Action, Category, Phase


class Finding(BaseModel):
    """One observation of a stage: a category score in [0, 1] plus its evidence.

    Stages report findings; the policy turns them into trace entries with a threshold and an
    action (see :meth:`t2iguard.core.policy.StagePolicy.judge`).
    """

    model_config = ConfigDict(frozen=True)

    category: Category
    score: float = Field(ge=0.0, le=1.0)
    evidence: dict[str, Any] = Field(default_factory=dict)
    message: str | None = None

    @field_validator("score", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> float:
        value = float(v)
        if value != value:  # NaN: a model produced garbage; refuse rather than pass it through
            raise ValueError("score is NaN")
        return value


class TraceEntry(BaseModel):
    """One line of a decision's explanation."""

    stage: str
    phase: Phase
    category: Category | None = None
    score: float | None = None
    threshold: float | None = None
    action: Action = Action.ALLOW
    evidence: dict[str, Any] = Field(default_factory=dict)
    message: str | None = None
    error: str | None = None
    latency_ms: float = 0.0

    def explain(self) -> str:
        """A one-line human explanation, e.g. ``blocklist: sexual 1.00 >= 0.90 -> block``."""
        head = f"{self.stage}"
        if self.error:
            return f"{head}: error ({self.error}) -> {self.action}"
        if self.category is None:
            return f"{head}: {self.message or 'ok'} -> {self.action}"
        cmp = ">=" if self.threshold is not None and (self.score or 0.0) >= self.threshold else "<"
        thr = f" {cmp} {self.threshold:.2f}" if self.threshold is not None else ""
        score = f" {self.score:.2f}" if self.score is not None else ""
        ev = ""
        if "term" in self.evidence:
            ev = f" (matched {self.evidence.get('matched', self.evidence['term'])!r})"
        elif self.message:
            ev = f" ({self.message})"
        return f"{head}: {self.category}{score}{thr}{ev} -> {self.action}"


class Change(BaseModel):
    """One edit a transform stage made to the prompt (or image)."""

    stage: str
    kind: str
    before: str
    after: str
    reason: str
    category: Category | None = None
    span: tuple[int, int] | None = None


class StageResult(BaseModel):
    """What one stage returns: scores, the action it proposes, and its trace."""

    stage: str
    phase: Phase
    scores: dict[Category, float] = Field(default_factory=dict)
    action: Action = Action.ALLOW
    trace: list[TraceEntry] = Field(default_factory=list)
    prompt: str | None = None
    changes: list[Change] = Field(default_factory=list)
    error: str | None = None
    latency_ms: float = 0.0
    skipped: bool = False
    artifacts: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @property
    def flagged(self) -> bool:
        return self.action > Action.ALLOW


class InputRef(BaseModel):
    """What a decision is about, without carrying the content itself."""

    kind: str  # "prompt" | "image" | "generation" | "edit"
    source: str | None = None
    sha256: str | None = None
    size: tuple[int, int] | None = None


class ImageRecord(BaseModel):
    """An image produced (or checked) under a decision."""

    index: int
    sha256: str
    width: int
    height: int
    action: Action = Action.ALLOW
    attempt: int = 0
    path: str | None = None
    watermark: str | None = None


class Attempt(BaseModel):
    """One generation attempt (regeneration records one per try, each with its own trace;
    the decision's ``stages`` hold the checks of the last attempt)."""

    attempt: int
    seed: int | None = None
    guidance: dict[str, Any] = Field(default_factory=dict)
    generation: dict[str, Any] = Field(default_factory=dict, description="the backend's metadata for this try")
    action: Action = Action.ALLOW
    latency_ms: float = 0.0
    trace: list[TraceEntry] = Field(default_factory=list)


class PolicyRef(BaseModel):
    name: str
    version: str
    sha256: str


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Decision(BaseModel):
    """The pipeline's verdict on one request, explaining itself.

    ``action`` is the most severe action proposed by any stage (after the transform rules of the
    pipeline); ``decided_by`` holds the trace entries that set it; ``trace`` holds every entry.
    """

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: datetime = Field(default_factory=_utcnow)
    input: InputRef
    action: Action
    categories: dict[Category, float] = Field(default_factory=dict)
    prompt: str | None = None
    original_prompt: str | None = None
    changes: list[Change] = Field(default_factory=list)
    decided_by: list[TraceEntry] = Field(default_factory=list)
    stages: list[StageResult] = Field(default_factory=list)
    images: list[ImageRecord] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)
    policy: PolicyRef | None = None
    latency_ms: float = 0.0
    errors: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def allowed(self) -> bool:
        """True when content may be returned (``allow`` or ``transform``)."""
        return self.action <= Action.TRANSFORM

    @computed_field  # type: ignore[prop-decorator]
    @property
    def flagged(self) -> list[Category]:
        """Categories of the entries that decided the action (empty when allowed untouched)."""
        seen: list[Category] = []
        for entry in self.decided_by:
            if entry.category is not None and entry.category not in seen:
                seen.append(entry.category)
        return seen

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reason(self) -> str:
        """A one-paragraph explanation of the action."""
        if not self.decided_by:
            return "allowed: no stage flagged this input"
        return f"{self.action}: " + "; ".join(e.explain() for e in self.decided_by)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def trace(self) -> list[TraceEntry]:
        """Every trace entry of every stage, in the order the stages ran."""
        return [entry for result in self.stages for entry in result.trace]

    def to_json(self, **kwargs: Any) -> str:
        return self.model_dump_json(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
