"""The small typed interfaces stages implement, one per lifecycle stage.

Like llm-guard's scanners, each check is one class in one file with one method:

* :class:`PromptStage` — ``scan(ctx: PromptContext) -> StageResult`` (checks and transforms)
* :class:`ImageStage` — ``scan_batch(items, ctx) -> list[StageResult]`` (input and output images)
* :class:`EditStage` — ``scan(ctx: EditContext) -> StageResult`` (input + mask + prompt + output)
* :class:`ProvenanceStage` — ``apply(items, ctx) -> list[ProvenanceOutput]`` (watermark, C2PA)

A stage reports :class:`~t2iguard.core.decision.Finding` objects and calls :meth:`Stage.result`,
which applies the policy (threshold and action per category) so that every stage explains its
verdict the same way. Stages never catch their own failures: the pipeline times them, catches
what they raise and fails closed.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from t2iguard.core.decision import Change, Finding, StageResult, TraceEntry
from t2iguard.core.types import Action, Category, Phase

if TYPE_CHECKING:
    from PIL import Image

    from t2iguard.core.inputs import ImageItem
    from t2iguard.core.policy import StagePolicy
    from t2iguard.prompt.normalize import NormalizedText

T = TypeVar("T")


class NoParams(BaseModel):
    """Parameters of a stage that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelCache:
    """Heavy models loaded once per process and shared by every stage and stack that uses them.

    One instance is owned by whoever builds stacks (the CLI, the service); nothing is global.
    """

    def __init__(self) -> None:
        self._items: dict[Any, Any] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Any, loader: Callable[[], T]) -> T:
        with self._guard:
            if key in self._items:
                return cast(T, self._items[key])
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                if key in self._items:
                    return cast(T, self._items[key])
            value = loader()
            with self._guard:
                self._items[key] = value
            return value

    def __contains__(self, key: Any) -> bool:
        with self._guard:
            return key in self._items

    def __len__(self) -> int:
        with self._guard:
            return len(self._items)


@dataclass
class PromptContext:
    """The prompt as it moves through the prompt stages."""

    original: str
    text: str
    source: str | None = None
    normalized: NormalizedText | None = None
    results: list[StageResult] = field(default_factory=list)
    user: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def proposed(self) -> Action:
        """The most severe action proposed so far by the stages that already ran."""
        return Action.most_severe(r.action for r in self.results)

    def flagged_categories(self) -> dict[Category, Action]:
        out: dict[Category, Action] = {}
        for r in self.results:
            for e in r.trace:
                if e.category is not None and e.action > Action.ALLOW:
                    out[e.category] = max(out.get(e.category, Action.ALLOW), e.action)
        return out


@dataclass
class ImageContext:
    """What image stages may know besides the pixels."""

    phase: Phase
    prompt: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class EditContext:
    """An edit request seen whole: input image, optional mask, instruction, and output."""

    input: ImageItem
    output: ImageItem
    prompt: str
    mask: ImageItem | None = None
    prompt_results: list[StageResult] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProvenanceOutput:
    """An image after a provenance stage: new bytes/pixels plus what was embedded."""

    image: Image.Image
    payload: str | None = None
    encoded: bytes | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Stage(ABC):
    """Base class of every stage.

    Subclasses set ``phases`` (the phases the stage may run in, the first being its default),
    ``covers`` (the categories it can score) and optionally ``Params`` (a pydantic model of its
    ``params`` in the policy file; unknown keys are errors).
    """

    phases: ClassVar[tuple[Phase, ...]]
    covers: ClassVar[frozenset[Category]] = frozenset()
    Params: ClassVar[type[BaseModel]] = NoParams
    cost: ClassVar[str] = "cheap"

    def __init__(self, policy: StagePolicy, params: BaseModel, models: ModelCache) -> None:
        self.policy = policy
        self.params = params
        self.models = models

    @property
    def name(self) -> str:
        return self.policy.name

    @classmethod
    def covers_for(cls, params: BaseModel) -> frozenset[Category]:
        """The categories an instance with ``params`` scores (``covers`` unless the stage's
        categories are configurable, as for a judge)."""
        return cls.covers

    def warmup(self) -> None:  # noqa: B027 - optional hook, most stages have nothing to load
        """Load models now rather than on first use (services call this at start-up)."""

    def result(
        self,
        findings: Iterable[Finding],
        *,
        phase: Phase | None = None,
        prompt: str | None = None,
        changes: Sequence[Change] = (),
        message: str | None = None,
        artifacts: dict[str, Any] | None = None,
        threshold_scale: float = 1.0,
    ) -> StageResult:
        """Turn findings into a :class:`StageResult` by applying this stage's policy slice
        (its thresholds times ``threshold_scale``, see :meth:`StagePolicy.judge`)."""
        ph = phase or self.policy.phase
        trace: list[TraceEntry] = []
        for f in findings:
            entry = self.policy.judge(f, threshold_scale)
            if entry.phase != ph:
                entry = entry.model_copy(update={"phase": ph})
            trace.append(entry)
        if changes:
            trace.append(
                TraceEntry(
                    stage=self.name,
                    phase=ph,
                    action=Action.TRANSFORM,
                    message=message or "; ".join(c.reason for c in changes),
                    evidence={"changes": [c.model_dump(mode="json") for c in changes]},
                )
            )
        if not trace:
            trace.append(TraceEntry(stage=self.name, phase=ph, message=message or "no findings"))
        scores: dict[Category, float] = {}
        for e in trace:
            if e.category is not None and e.score is not None:
                scores[e.category] = max(scores.get(e.category, 0.0), e.score)
        return StageResult(
            stage=self.name,
            phase=ph,
            scores=scores,
            action=Action.most_severe(e.action for e in trace),
            trace=trace,
            prompt=prompt,
            changes=list(changes),
            artifacts=artifacts or {},
        )


class PromptStage(Stage):
    """A check or transform of the prompt text."""

    phases: ClassVar[tuple[Phase, ...]] = (Phase.PROMPT_CHECK,)

    @abstractmethod
    def scan(self, ctx: PromptContext) -> StageResult:
        """Score ``ctx.text``. A transform returns the rewritten prompt in ``result.prompt``."""

    def scan_batch(self, ctxs: Sequence[PromptContext]) -> list[StageResult]:
        """Score many prompts; stages whose models want batches override this."""
        return [self.scan(c) for c in ctxs]


class PromptTransform(PromptStage):
    """A stage that rewrites the prompt (anonymization, augmentation, rewriting).

    ``optional``: the rewrite is an augmentation the policy does not need for safety (diversity).
    When the re-check of the rewritten prompt flags, at review or worse, a prompt that was not
    flagged as written, the stack never refuses the request for words it added itself: it drops
    the optional rewrites (and re-runs the required ones), or, when the transform is also
    ``closed_vocabulary`` (it only inserts words from a vocabulary the policy configures, such as
    demographic descriptors), keeps the rewrite and records the re-check's verdict without acting
    on it. Dropping would skew the augmentation toward the groups a biased classifier does not flag.
    """

    phases: ClassVar[tuple[Phase, ...]] = (Phase.PROMPT_TRANSFORM,)
    optional: ClassVar[bool] = False
    closed_vocabulary: ClassVar[bool] = False


class ImageStage(Stage):
    """A classifier of images, run on uploads (input_image) and outputs (output_image)."""

    phases: ClassVar[tuple[Phase, ...]] = (Phase.OUTPUT_IMAGE, Phase.INPUT_IMAGE)
    cost: ClassVar[str] = "model"

    @abstractmethod
    def scan_batch(self, items: Sequence[ImageItem], ctx: ImageContext) -> list[StageResult]:
        """Score each image; return one result per item, in order."""


class EditStage(Stage):
    """A multimodal check of an edit: input image + mask + prompt + output image."""

    phases: ClassVar[tuple[Phase, ...]] = (Phase.EDIT_CHECK,)
    cost: ClassVar[str] = "model"

    @abstractmethod
    def scan(self, ctx: EditContext) -> StageResult: ...


class ProvenanceStage(Stage):
    """Marks outgoing images (invisible watermark, signed manifest)."""

    phases: ClassVar[tuple[Phase, ...]] = (Phase.PROVENANCE,)

    @abstractmethod
    def apply(self, items: Sequence[ImageItem], payload: str, ctx: ImageContext) -> list[ProvenanceOutput]: ...


STAGE_KINDS: tuple[type[Stage], ...] = (PromptStage, ImageStage, EditStage, ProvenanceStage)
