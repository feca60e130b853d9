"""``SafetyStack``: the one pipeline that composes every stage in lifecycle order.

prompt checks → prompt transforms (→ re-check of a rewritten prompt) → input-image checks →
generation → output-image checks → multimodal edit check → regeneration policy →
provenance → audit.

Cheap stages run before model stages within a phase, and a ``block`` short-circuits the rest.
Every stage call is timed and guarded: an exception or a timeout becomes a fail-closed result
(``block``, or ``review`` where the policy says so) with the error in the trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from t2iguard.core.decision import (
    Attempt,
    Change,
    Decision,
    ImageRecord,
    InputRef,
    StageResult,
    TraceEntry,
)
from t2iguard.core.errors import InputError
from t2iguard.core.inputs import ImageItem, ImageSource, load_image, validate_prompt
from t2iguard.core.policy import Policy, StageConfig, default_policy, load_policy
from t2iguard.core.registry import StageRegistry
from t2iguard.core.stage import (
    EditContext,
    EditStage,
    ImageContext,
    ImageStage,
    ModelCache,
    PromptContext,
    PromptStage,
    ProvenanceStage,
    Stage,
)
from t2iguard.core.types import Action, Category, Phase
from t2iguard.generate.base import GUIDANCE_STRENGTHS, GenerationRequest, Generator, SafetyGuidance
from t2iguard.service.audit import AuditSink

T = TypeVar("T")
_COST_RANK = {"cheap": 0, "model": 1, "remote": 2}
PIPELINE = "pipeline"


@dataclass
class _Planned:
    stage: Stage
    config: StageConfig
    phases: tuple[Phase, ...]


@dataclass
class GenerationOutcome:
    """The decision of a generation request and the images that may be returned."""

    decision: Decision
    images: list[Image.Image] = field(default_factory=list)
    encoded: list[bytes | None] = field(default_factory=list)
    withheld: list[Image.Image] = field(default_factory=list)
    """Images of the last attempt that were generated but not released (e.g. held for review), so
    that a service can store them for its reviewers. Never return these to the requester."""


@dataclass
class _PromptState:
    ctx: PromptContext
    results: list[StageResult] = field(default_factory=list)
    stopped: bool = False
    changes: list[Change] = field(default_factory=list)
    rechecked: bool = False


class SafetyStack:
    """Composes the stages a policy configures. Build one per policy; reuse it across requests
    (it is thread-safe: stages are stateless apart from lazily loaded models)."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        registry: StageRegistry | None = None,
        models: ModelCache | None = None,
        generator: Generator | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.policy = policy or default_policy()
        self.registry = registry or StageRegistry()
        self.models = models or ModelCache()
        self.generator = generator
        self.audit = audit
        self.warnings = self.registry.validate(self.policy)
        self._plan: list[_Planned] = []
        for cfg in self.policy.stages:
            if not cfg.enabled:
                continue
            stage = self.registry.build(cfg, self.policy, self.models)
            self._plan.append(_Planned(stage, cfg, self.registry.phases_of(cfg)))
        self._plan.sort(key=lambda p: _COST_RANK.get(p.stage.cost, 1))  # stable: keeps policy order
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> SafetyStack:
        return cls(load_policy(path), **kwargs)

    def stages(self, phase: Phase) -> list[Stage]:
        return [p.stage for p in self._plan if phase in p.phases]

    def _config(self, stage: Stage) -> StageConfig:
        for p in self._plan:
            if p.stage is stage:
                return p.config
        raise KeyError(stage.name)

    def warmup(self) -> None:
        """Load every stage's models now (services call this before accepting traffic)."""
        for p in self._plan:
            p.stage.warmup()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # ---- guarded stage calls ------------------------------------------------------------
    def _call(self, stage: Stage, phase: Phase, n: int, fn: Callable[[], T]) -> T | str:
        """Run ``fn`` with the stage's timeout. Returns the value, or an error message."""
        timeout = self._config(stage).timeout_s
        try:
            if timeout is None:
                return fn()
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="t2iguard-stage")
            future = self._executor.submit(fn)
            try:
                return future.result(timeout=timeout * max(1, n))
            except FutureTimeout:
                future.cancel()
                return f"timed out after {timeout * max(1, n):g}s"
        except Exception as exc:  # noqa: BLE001 - any stage failure fails closed
            return f"{type(exc).__name__}: {exc}"

    def _error_result(self, stage: Stage, phase: Phase, message: str) -> StageResult:
        action = stage.policy.on_error
        entry = TraceEntry(
            stage=stage.name,
            phase=phase,
            action=action,
            error=message,
            message=f"stage failed; failing closed ({action})",
        )
        return StageResult(stage=stage.name, phase=phase, action=action, trace=[entry], error=message)

    def _run_batch(self, stage: Stage, phase: Phase, n: int, fn: Callable[[], list[StageResult]]) -> list[StageResult]:
        t0 = time.perf_counter()
        out = self._call(stage, phase, n, fn)
        elapsed = (time.perf_counter() - t0) * 1000.0
        if isinstance(out, str):
            results = [self._error_result(stage, phase, out) for _ in range(n)]
        elif not isinstance(out, list) or len(out) != n or not all(isinstance(r, StageResult) for r in out):
            msg = f"returned {type(out).__name__} of length {len(out) if isinstance(out, list) else '?'} for {n} inputs"
            results = [self._error_result(stage, phase, msg) for _ in range(n)]
        else:
            results = out
        per_item = elapsed / max(1, n)
        for r in results:
            r.latency_ms = per_item
            r.phase = phase
            for e in r.trace:
                e.latency_ms = per_item
                e.phase = phase
        return results

    # ---- prompts -------------------------------------------------------------------------
    def check_prompt(self, text: Any, *, source: str | None = None, user: str | None = None) -> Decision:
        """Check one prompt. Raises :class:`InputError` for malformed input."""
        out = self.check_prompts([text], sources=[source] if source else None, user=user)[0]
        if isinstance(out, InputError):
            raise out
        return out

    def check_prompts(
        self,
        texts: Sequence[Any],
        *,
        sources: Sequence[str] | None = None,
        user: str | None = None,
    ) -> list[Decision | InputError]:
        """Check many prompts, batched stage by stage. Bad inputs come back as
        :class:`InputError` in their slot; the others are still checked."""
        t0 = time.perf_counter()
        out: list[Decision | InputError | None] = []
        states: list[_PromptState] = []
        slots: list[int] = []
        for i, text in enumerate(texts):
            src = sources[i] if sources else f"<prompt {i}>"
            try:
                clean = validate_prompt(text, self.policy.limits, source=src)
            except InputError as err:
                out.append(err)
                continue
            out.append(None)  # filled below
            slots.append(i)
            states.append(_PromptState(PromptContext(original=clean, text=clean, source=src, user=user)))
        self._prompt_phases(states)
        elapsed = (time.perf_counter() - t0) * 1000.0
        for slot, st in zip(slots, states, strict=True):
            decision = self._prompt_decision(st)
            decision.latency_ms = elapsed / max(1, len(states))
            out[slot] = decision
        return [o for o in out if o is not None]

    def _prompt_phases(self, states: list[_PromptState]) -> None:
        checks = [s for s in self.stages(Phase.PROMPT_CHECK) if isinstance(s, PromptStage)]
        transforms = [s for s in self.stages(Phase.PROMPT_TRANSFORM) if isinstance(s, PromptStage)]
        self._run_prompt_stages(checks, Phase.PROMPT_CHECK, states)
        active = [s for s in states if not s.stopped and s.ctx.proposed < Action.REVIEW]
        if not transforms or not active:
            return
        snapshots = {id(s): (len(s.results), len(s.ctx.results), len(s.changes), s.ctx.normalized) for s in active}
        self._transform_and_recheck(checks, transforms, active)
        # A re-check that flags only because of an optional rewrite (diversity) never refuses the
        # request: a closed-vocabulary augmentation is kept and the verdict recorded, any other
        # optional rewrite is dropped and the required transforms run again. A re-check that asks for
        # a transform (a name, read in "elderly man Apprehended" after diversity rewrote "Individual")
        # would end in a block (_prompt_decision): the optional rewrite is then always dropped, since
        # that re-check is also what shows the required anonymization worked.
        optional = {t.name for t in transforms if getattr(t, "optional", False)}
        closed = {t.name for t in transforms if t.name in optional and getattr(t, "closed_vocabulary", False)}
        required = [t for t in transforms if t.name not in optional]
        redo: list[_PromptState] = []
        for s in active:
            n_results, n_ctx, n_changes, normalized = snapshots[id(s)]
            added = {c.stage for c in s.changes[n_changes:]}
            if not (s.rechecked and added & optional):
                continue
            flagged = [
                e
                for r in s.results[n_results:]
                for e in r.trace
                if e.evidence.get("recheck") and (e.action >= Action.REVIEW or e.action == Action.TRANSFORM)
            ]
            transform_asked = any(e.action == Action.TRANSFORM for e in flagged)
            if not (s.ctx.proposed >= Action.REVIEW or transform_asked):
                continue
            why = "; ".join(
                f"{e.stage}: {e.category} {e.score:.2f} >= {e.threshold:.2f}"
                if e.score is not None and e.threshold is not None
                else f"{e.stage}: {e.category}"
                for e in flagged
            )
            evidence: dict[str, Any] = {"recheck_flagged": [e.model_dump(mode="json") for e in flagged]}
            if added <= closed and not transform_asked:
                # keep the rewrite; drop the re-check's results, whose verdicts only the added
                # descriptors changed (they stay in the evidence for reviewers)
                keep = n_results + sum(1 for r in s.results[n_results:] if r.phase == Phase.PROMPT_TRANSFORM)
                keep_ctx = n_ctx + (keep - n_results)
                del s.results[keep:]
                del s.ctx.results[keep_ctx:]
                s.stopped = False
                names = ", ".join(sorted(added))
                message = (
                    f"kept the rewrite of {names}: it only adds descriptors from the policy's vocabulary to a "
                    f"prompt that passed as written; its re-check ({why}) is not acted on"
                )
                evidence["kept"] = sorted(added)
            else:
                dropped = sorted(added & optional)
                del s.results[n_results:]
                del s.ctx.results[n_ctx:]
                del s.changes[n_changes:]
                s.ctx.text = s.ctx.original
                s.ctx.normalized = normalized
                s.stopped = False
                s.rechecked = False
                redo.append(s)
                message = (
                    f"dropped the optional rewrite of {', '.join(dropped)}: its re-check flagged what the "
                    f"prompt as written was not ({why})"
                )
                evidence["dropped"] = dropped
            entry = TraceEntry(
                stage=PIPELINE, phase=Phase.PIPELINE, action=Action.ALLOW, message=message, evidence=evidence
            )
            s.results.append(StageResult(stage=PIPELINE, phase=Phase.PIPELINE, action=Action.ALLOW, trace=[entry]))
        if redo and required:
            self._transform_and_recheck(checks, required, redo)

    def _transform_and_recheck(
        self, checks: list[PromptStage], transforms: list[PromptStage], states: list[_PromptState]
    ) -> None:
        self._run_prompt_stages(transforms, Phase.PROMPT_TRANSFORM, states, transform=True)
        changed = [s for s in states if not s.stopped and s.ctx.text != s.ctx.original]
        for s in changed:
            s.rechecked = True
        if changed:
            self._run_prompt_stages(checks, Phase.PROMPT_CHECK, changed, recheck=True)

    def _run_prompt_stages(
        self,
        stages: Sequence[PromptStage],
        phase: Phase,
        states: list[_PromptState],
        *,
        transform: bool = False,
        recheck: bool = False,
    ) -> None:
        for stage in stages:
            active = [s for s in states if not s.stopped]
            if not active:
                return
            ctxs = [s.ctx for s in active]
            results = self._run_batch(stage, phase, len(ctxs), partial(stage.scan_batch, ctxs))
            for st, r in zip(active, results, strict=True):
                if recheck:
                    for e in r.trace:
                        e.evidence = {**e.evidence, "recheck": True}
                        e.message = ("re-check of the rewritten prompt; " + (e.message or "")).rstrip("; ")
                normalized = r.artifacts.get("normalized")
                if normalized is not None:
                    st.ctx.normalized = normalized
                if transform and r.prompt is not None and r.prompt != st.ctx.text and r.error is None:
                    st.ctx.text = r.prompt
                    st.ctx.normalized = None
                    st.changes.extend(r.changes)
                st.results.append(r)
                st.ctx.results.append(r)
                if self.policy.short_circuit and r.action == Action.BLOCK:
                    st.stopped = True

    def _prompt_decision(self, st: _PromptState) -> Decision:
        ctx = st.ctx
        results = list(st.results)
        changed = ctx.text != ctx.original
        pipeline_entries: list[TraceEntry] = []
        first_pass_transform: set[Category] = set()
        recheck_flagged: list[TraceEntry] = []
        for r in results:
            for e in r.trace:
                if e.evidence.get("recheck"):
                    if e.action > Action.ALLOW:
                        recheck_flagged.append(e)
                elif r.phase == Phase.PROMPT_CHECK and e.action == Action.TRANSFORM and e.category:
                    first_pass_transform.add(e.category)
        # a transform stage that examined a category and found nothing to change clears it (the
        # anonymizer when no name or personal data is there): its first-pass "transform" verdicts
        # neither fail closed nor make the prompt a transformed one
        cleared: set[Category] = set()
        for r in results:
            if r.phase == Phase.PROMPT_TRANSFORM and not r.error:
                cleared.update(Category(c) for c in r.artifacts.get("cleared", ()))
        first_pass_transform -= cleared
        if first_pass_transform and not changed and not any(r.action == Action.BLOCK for r in results):
            for cat in sorted(first_pass_transform):
                pipeline_entries.append(
                    TraceEntry(
                        stage=PIPELINE,
                        phase=Phase.PIPELINE,
                        category=cat,
                        action=Action.BLOCK,
                        message=f"the policy asks to transform '{cat}' prompts but no transform stage "
                        "changed the prompt; failing closed",
                    )
                )
        for e in recheck_flagged:
            if e.action in (Action.TRANSFORM,):
                pipeline_entries.append(
                    TraceEntry(
                        stage=PIPELINE,
                        phase=Phase.PIPELINE,
                        category=e.category,
                        score=e.score,
                        threshold=e.threshold,
                        action=Action.BLOCK,
                        message=f"still flagged by {e.stage} after rewriting; blocking",
                        evidence=e.evidence,
                    )
                )
        if pipeline_entries:
            results.append(
                StageResult(
                    stage=PIPELINE,
                    phase=Phase.PIPELINE,
                    action=Action.most_severe(e.action for e in pipeline_entries),
                    trace=pipeline_entries,
                )
            )
        resolved = changed  # a rewrite resolves first-pass "transform" verdicts
        decision = self._decision(
            InputRef(kind="prompt", source=ctx.source),
            results,
            prompt=ctx.text,
            original_prompt=ctx.original,
            changes=st.changes,
            transform_resolved=resolved,
            cleared=cleared,
        )
        return decision

    # ---- decisions -----------------------------------------------------------------------
    def _decision(
        self,
        ref: InputRef,
        results: list[StageResult],
        *,
        prompt: str | None = None,
        original_prompt: str | None = None,
        changes: Sequence[Change] = (),
        transform_resolved: bool = False,
        cleared: set[Category] | frozenset[Category] = frozenset(),
    ) -> Decision:
        entries = [e for r in results for e in r.trace]
        # first-pass "transform" verdicts on a category a transform stage cleared do not act
        acting = [e for e in entries if not (e.action == Action.TRANSFORM and e.category in cleared)]
        action = Action.most_severe(e.action for e in acting)
        if changes and action < Action.TRANSFORM:
            action = Action.TRANSFORM
        decided_by = [e for e in acting if e.action == action and action > Action.ALLOW]
        if action == Action.TRANSFORM and not transform_resolved and not changes:
            decided_by = [e for e in acting if e.action == Action.TRANSFORM]
        categories: dict[Category, float] = {}
        for r in results:
            for cat, score in r.scores.items():
                categories[cat] = max(categories.get(cat, 0.0), score)
        errors = [f"{r.stage}: {r.error}" for r in results if r.error]
        return Decision(
            input=ref,
            action=action,
            categories=categories,
            prompt=prompt,
            original_prompt=original_prompt,
            changes=list(changes),
            decided_by=decided_by,
            stages=results,
            policy=self.policy.ref,
            errors=errors,
        )

    # ---- images --------------------------------------------------------------------------
    def check_image(
        self,
        image: ImageSource,
        *,
        phase: Phase = Phase.OUTPUT_IMAGE,
        prompt: str | None = None,
        source: str | None = None,
    ) -> Decision:
        """Check one image. Raises :class:`InputError` for unreadable or oversized images."""
        out = self.check_images([image], phase=phase, prompt=prompt, sources=[source] if source else None)[0]
        if isinstance(out, InputError):
            raise out
        return out

    def check_images(
        self,
        images: Sequence[ImageSource],
        *,
        phase: Phase = Phase.OUTPUT_IMAGE,
        prompt: str | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[Decision | InputError]:
        """Check images with the stages configured for ``phase`` (output or input images)."""
        if phase not in (Phase.OUTPUT_IMAGE, Phase.INPUT_IMAGE):
            raise ValueError(f"images are checked in the input_image or output_image phase, not {phase}")
        t0 = time.perf_counter()
        out: list[Decision | InputError | None] = []
        items: list[ImageItem] = []
        slots: list[int] = []
        for i, img in enumerate(images):
            src = sources[i] if sources else (str(img) if isinstance(img, str | Path) else f"<image {i}>")
            try:
                item = load_image(img, limits=self.policy.limits, source=src)
            except InputError as err:
                out.append(err)
                continue
            out.append(None)  # filled below
            items.append(item)
            slots.append(i)
        originals = list(items)
        per_image = self._image_results(items, phase, prompt)  # a `transform` replaces items[i]
        elapsed = (time.perf_counter() - t0) * 1000.0
        for slot, orig, item, results in zip(slots, originals, items, per_image, strict=True):
            d = self._decision(InputRef(kind="image", source=orig.source, sha256=orig.sha256, size=orig.size), results)
            d.images = [ImageRecord(index=0, sha256=item.sha256, width=item.width, height=item.height, action=d.action)]
            d.latency_ms = elapsed / max(1, len(items))
            out[slot] = d
        return [o for o in out if o is not None]

    def _image_results(self, items: list[ImageItem], phase: Phase, prompt: str | None) -> list[list[StageResult]]:
        """Run the image stages of ``phase``. A stage that proposes ``transform`` and returns a
        censored image (``artifacts["image"]``) replaces ``items[i]`` in place: later stages
        check, and the caller returns, the censored image. A ``transform`` without an image
        cannot be carried out and fails closed."""
        per_image: list[list[StageResult]] = [[] for _ in items]
        stopped = [False] * len(items)
        ctx = ImageContext(phase=phase, prompt=prompt)
        for stage in self.stages(phase):
            if not isinstance(stage, ImageStage):
                continue
            idx = [i for i in range(len(items)) if not stopped[i]]
            if not idx:
                break
            batch = [items[i] for i in idx]
            results = self._run_batch(stage, phase, len(batch), partial(stage.scan_batch, batch, ctx))
            for i, r in zip(idx, results, strict=True):
                per_image[i].append(r)
                if r.action == Action.TRANSFORM and r.error is None:
                    fixed = self._apply_image_transform(items[i], r, phase)
                    if isinstance(fixed, StageResult):
                        per_image[i].append(fixed)
                        r = fixed
                    else:
                        items[i] = fixed
                if self.policy.short_circuit and r.action == Action.BLOCK:
                    stopped[i] = True
        return per_image

    def _apply_image_transform(self, item: ImageItem, r: StageResult, phase: Phase) -> ImageItem | StageResult:
        image = r.artifacts.get("image")
        if image is not None:
            try:
                new = load_image(image, limits=self.policy.limits, source=f"{item.source} ({r.stage})")
            except InputError as err:
                return self._pipeline_error(phase, f"{r.stage} returned an unusable transformed image: {err}")
            r.artifacts["image_before"] = item.sha256
            for e in r.trace:
                if e.action == Action.TRANSFORM and e.category is None:
                    e.evidence = {**e.evidence, "image_before": item.sha256, "image_after": new.sha256}
            return new
        cats = sorted({str(e.category) for e in r.trace if e.action == Action.TRANSFORM and e.category})
        entry = TraceEntry(
            stage=PIPELINE,
            phase=phase,
            category=Category(cats[0]) if cats else None,
            action=Action.BLOCK,
            message=f"the policy asks to transform ({', '.join(cats) or 'image'}) but stage {r.stage} "
            "returned no transformed image; failing closed",
        )
        return StageResult(stage=PIPELINE, phase=phase, action=Action.BLOCK, trace=[entry])

    @staticmethod
    def transformed_image(decision: Decision) -> Image.Image | None:
        """The censored image a ``transform`` decision of :meth:`check_images` returns, if any
        (``generate`` returns it directly)."""
        for r in reversed(decision.stages):
            image = r.artifacts.get("image")
            if image is not None and r.action == Action.TRANSFORM:
                return image if isinstance(image, Image.Image) else None
        return None

    # ---- edits produced elsewhere --------------------------------------------------------
    def check_edit(
        self,
        input_image: ImageSource,
        output_image: ImageSource,
        prompt: str,
        *,
        mask: ImageSource | None = None,
        user: str | None = None,
    ) -> Decision:
        """Check an edit made by a generator outside the stack: the instruction (prompt
        stages), the upload (input-image stages), the result (output-image stages) and the pair
        (edit stages), as :meth:`generate` would. Raises :class:`InputError` for bad inputs."""
        t0 = time.perf_counter()
        before = load_image(input_image, limits=self.policy.limits, source="<edit input>")
        after = load_image(output_image, limits=self.policy.limits, source="<edit output>")
        mask_item = load_image(mask, limits=self.policy.limits, source="<edit mask>") if mask is not None else None
        prompt_out = self.check_prompt(prompt, source="<edit instruction>", user=user)
        results: list[StageResult] = list(prompt_out.stages)
        final_prompt = prompt_out.prompt or prompt
        if prompt_out.action < Action.REVIEW:
            inputs = [before]
            results += self._image_results(inputs, Phase.INPUT_IMAGE, final_prompt)[0]
            if Action.most_severe(r.action for r in results) < Action.REVIEW:
                outputs = [after]
                results += self._image_results(outputs, Phase.OUTPUT_IMAGE, final_prompt)[0]
                request = GenerationRequest(prompt=final_prompt, image=inputs[0], mask=mask_item, user=user)
                results += self._edit_results(request, outputs, final_prompt, prompt_out.stages)
        d = self._decision(
            InputRef(kind="edit", source=user, sha256=before.sha256, size=before.size),
            results,
            prompt=final_prompt,
            original_prompt=prompt,
            changes=prompt_out.changes,
            transform_resolved=True,
        )
        d.images = [ImageRecord(index=0, sha256=after.sha256, width=after.width, height=after.height, action=d.action)]
        d.latency_ms = (time.perf_counter() - t0) * 1000.0
        return d

    # ---- generation ----------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> GenerationOutcome:
        """Run the whole stack around the configured generator.

        Returns the decision and the images that may be returned to the user (none when the
        action is ``review`` or ``block``). Regeneration with safety guidance is attempted when
        an output check proposes ``regenerate``.
        """
        if self.generator is None:
            raise ValueError("this SafetyStack has no generator; pass generator=... to generate images")
        t0 = time.perf_counter()
        prompt_out = self.check_prompts([request.prompt], sources=["<request>"], user=request.user)[0]
        if isinstance(prompt_out, InputError):
            raise prompt_out
        results: list[StageResult] = list(prompt_out.stages)
        kind = "edit" if request.is_edit else "generation"
        ref = InputRef(kind=kind, source=request.user, sha256=request.image.sha256 if request.image else None)
        final_prompt = prompt_out.prompt or request.prompt

        produced: list[Image.Image] = []

        def finish(decision: Decision, images: list[Image.Image], encoded: list[bytes | None]) -> GenerationOutcome:
            decision.latency_ms = (time.perf_counter() - t0) * 1000.0
            if self.audit is not None:
                self._audit(decision)
            if decision.action >= Action.REVIEW:  # e.g. the audit record could not be written
                images, encoded = [], []
            withheld = [] if images else list(produced)
            return GenerationOutcome(decision=decision, images=images, encoded=encoded, withheld=withheld)

        def build(extra: list[StageResult], attempts: list[Attempt] | None = None) -> Decision:
            d = self._decision(
                ref,
                results + extra,
                prompt=final_prompt,
                original_prompt=request.prompt,
                changes=prompt_out.changes,
                transform_resolved=True,
            )
            d.attempts = attempts or []
            return d

        if prompt_out.action >= Action.REVIEW:
            return finish(build([]), [], [])
        # uploads are checked before anything is generated
        if request.image is not None:
            inputs = [request.image]
            input_results = self._image_results(inputs, Phase.INPUT_IMAGE, final_prompt)[0]
            results.extend(input_results)
            if Action.most_severe(r.action for r in input_results) >= Action.REVIEW:
                return finish(build([]), [], [])
            if inputs[0] is not request.image:  # a `transform` censored the upload: edit that
                request = request.with_changes(image=inputs[0])
        guidance: SafetyGuidance | None = None
        flagged_prompt = [
            e.category for e in prompt_out.trace if e.action == Action.REGENERATE and e.category is not None
        ]
        if flagged_prompt:
            guidance = SafetyGuidance(tuple(dict.fromkeys(flagged_prompt)), strength=self._strength(0))
        regen = self.policy.regeneration
        attempts: list[Attempt] = []
        seed = request.seed
        final_images: list[Image.Image] = []
        extra: list[StageResult] = []
        for attempt in range(regen.max_attempts):
            gen_req = request.with_changes(prompt=final_prompt, safety=guidance, seed=seed)
            ta = time.perf_counter()
            gen_out = self._generate_guarded(gen_req)
            if isinstance(gen_out, StageResult):
                extra = [gen_out]
                attempts.append(
                    Attempt(
                        attempt=attempt,
                        seed=seed,
                        action=gen_out.action,
                        trace=list(gen_out.trace),
                        latency_ms=(time.perf_counter() - ta) * 1000.0,
                    )
                )
                final_images = []
                break
            items: list[ImageItem] = []
            load_errors: list[StageResult] = []
            for j, img in enumerate(gen_out.images):
                try:
                    items.append(load_image(img, limits=self.policy.limits, source=f"<output {attempt}.{j}>"))
                except InputError as err:
                    load_errors.append(self._pipeline_error(Phase.OUTPUT_IMAGE, f"generator output unusable: {err}"))
            produced[:] = [it.image for it in items]
            per_image = self._image_results(items, Phase.OUTPUT_IMAGE, final_prompt)
            attempt_results = [r for rs in per_image for r in rs] + load_errors
            if request.image is not None and items:
                attempt_results += self._edit_results(request, items, final_prompt, prompt_out.stages)
            worst = Action.most_severe(r.action for r in attempt_results)
            for r in attempt_results:
                for e in r.trace:
                    e.evidence = {**e.evidence, "attempt": attempt}
            attempts.append(
                Attempt(
                    attempt=attempt,
                    seed=gen_out.seed if gen_out.seed is not None else seed,
                    guidance=_guidance_dict(guidance),
                    generation=_jsonable(gen_out.metadata),
                    action=worst,
                    latency_ms=(time.perf_counter() - ta) * 1000.0,
                    trace=[e for r in attempt_results for e in r.trace],
                )
            )
            extra = attempt_results
            final_images = [it.image for it in items] if worst < Action.REGENERATE else []
            if worst != Action.REGENERATE:
                break
            out_of_time = time.perf_counter() - t0 > regen.time_budget_s
            if attempt + 1 >= regen.max_attempts or out_of_time:
                why = "time budget exhausted" if out_of_time else f"{regen.max_attempts} attempts"
                extra.append(
                    StageResult(
                        stage=PIPELINE,
                        phase=Phase.REGENERATE,
                        action=regen.fallback,
                        trace=[
                            TraceEntry(
                                stage=PIPELINE,
                                phase=Phase.REGENERATE,
                                action=regen.fallback,
                                message=f"regeneration did not produce a clean image ({why}); "
                                f"falling back to {regen.fallback}",
                            )
                        ],
                    )
                )
                break
            # regenerate: guidance away from what was flagged, escalating strength, new seed
            # (steer away from everything flagged so far: categories, and the concepts that the
            # checks named in their evidence, e.g. {"concept": "knife"})
            flagged = [
                e for r in attempt_results for e in r.trace if e.action == Action.REGENERATE and e.category is not None
            ]
            cats = [*(guidance.categories if guidance else ()), *(e.category for e in flagged if e.category)]
            concepts = [
                *(guidance.concepts if guidance else ()),
                *(str(e.evidence["concept"]) for e in flagged if isinstance(e.evidence.get("concept"), str)),
            ]
            guidance = SafetyGuidance(
                tuple(dict.fromkeys(cats)),
                strength=self._strength(attempt),
                concepts=tuple(dict.fromkeys(concepts)),
                attempt=attempt + 1,
            )
            if regen.new_seed:
                base = gen_out.seed if gen_out.seed is not None else (seed or 0)
                seed = (base + 1_000_003) % (2**31)
        decision = build(extra, attempts)
        if decision.action >= Action.REVIEW:
            final_images = []
        encoded: list[bytes | None] = [None] * len(final_images)
        if final_images:
            final_images, encoded, records = self._provenance(final_images, decision, final_prompt)
            decision.images = records
        return finish(decision, final_images, encoded)

    def _strength(self, attempt: int) -> str:
        strengths = [s for s in self.policy.regeneration.strengths if s in GUIDANCE_STRENGTHS] or ["medium"]
        return strengths[min(attempt, len(strengths) - 1)]

    def _pipeline_error(self, phase: Phase, message: str) -> StageResult:
        action = self.policy.on_error
        entry = TraceEntry(
            stage=PIPELINE, phase=phase, action=action, error=message, message=f"failing closed ({action})"
        )
        return StageResult(stage=PIPELINE, phase=phase, action=action, trace=[entry], error=message)

    def _generate_guarded(self, req: GenerationRequest) -> Any:
        assert self.generator is not None
        t0 = time.perf_counter()
        try:
            out = self.generator.generate(req)
            if not out.images:
                raise RuntimeError("generator returned no images")
            return out
        except Exception as exc:  # noqa: BLE001 - generator failure fails closed
            r = self._pipeline_error(
                Phase.GENERATE, f"generator {getattr(self.generator, 'name', '?')} failed: {type(exc).__name__}: {exc}"
            )
            r.stage = f"generator:{getattr(self.generator, 'name', '?')}"
            for e in r.trace:
                e.stage = r.stage
            r.latency_ms = (time.perf_counter() - t0) * 1000.0
            return r

    def _edit_results(
        self, request: GenerationRequest, outputs: list[ImageItem], prompt: str, prompt_results: list[StageResult]
    ) -> list[StageResult]:
        assert request.image is not None
        out: list[StageResult] = []
        for stage in self.stages(Phase.EDIT_CHECK):
            if not isinstance(stage, EditStage):
                continue
            for item in outputs:
                ctx = EditContext(
                    input=request.image, output=item, prompt=prompt, mask=request.mask, prompt_results=prompt_results
                )
                out += self._run_batch(stage, Phase.EDIT_CHECK, 1, partial(_scan_one, stage, ctx))
        return out

    def _provenance(
        self, images: list[Image.Image], decision: Decision, prompt: str
    ) -> tuple[list[Image.Image], list[bytes | None], list[ImageRecord]]:
        items = [load_image(img, limits=self.policy.limits, source=f"<final {i}>") for i, img in enumerate(images)]
        encoded: list[bytes | None] = [None] * len(items)
        payloads: list[str | None] = [None] * len(items)
        meta: dict[str, Any] = {"decision_id": decision.id}
        if self.generator is not None:
            meta["generator"] = getattr(self.generator, "name", None)
        ctx = ImageContext(phase=Phase.PROVENANCE, prompt=prompt, metadata=meta)
        for stage in self.stages(Phase.PROVENANCE):
            if not isinstance(stage, ProvenanceStage):
                continue
            t0 = time.perf_counter()
            res = self._call(stage, Phase.PROVENANCE, len(items), partial(stage.apply, items, decision.id, ctx))
            elapsed = (time.perf_counter() - t0) * 1000.0
            if isinstance(res, str) or not isinstance(res, list) or len(res) != len(items):
                err = res if isinstance(res, str) else "returned the wrong number of images"
                r = self._error_result(stage, Phase.PROVENANCE, err)
                r.latency_ms = elapsed
                decision.stages.append(r)
                decision.errors.append(f"{stage.name}: {err}")
                if r.action > decision.action:
                    decision.action = r.action
                    decision.decided_by = list(r.trace)
                return [], [], []
            new_items = []
            for i, po in enumerate(res):
                new_items.append(load_image(po.image, limits=self.policy.limits, source=f"<final {i}>"))
                encoded[i] = po.encoded
                payloads[i] = po.payload or payloads[i]
            items = new_items
            decision.stages.append(
                StageResult(
                    stage=stage.name,
                    phase=Phase.PROVENANCE,
                    latency_ms=elapsed,
                    trace=[
                        TraceEntry(
                            stage=stage.name,
                            phase=Phase.PROVENANCE,
                            latency_ms=elapsed,
                            message="marked",
                            evidence={"payloads": payloads},
                        )
                    ],
                )
            )
        records = [
            ImageRecord(
                index=i,
                sha256=it.sha256,
                width=it.width,
                height=it.height,
                action=decision.action,
                watermark=payloads[i],
            )
            for i, it in enumerate(items)
        ]
        return [it.image for it in items], encoded, records

    def _audit(self, decision: Decision) -> None:
        assert self.audit is not None
        t0 = time.perf_counter()
        try:
            self.audit.record(decision)
        except Exception as exc:  # noqa: BLE001 - an unrecorded decision must not release content
            msg = f"audit sink failed: {type(exc).__name__}: {exc}"
            decision.errors.append(msg)
            entry = TraceEntry(
                stage="audit",
                phase=Phase.AUDIT,
                action=self.policy.on_error,
                error=msg,
                latency_ms=(time.perf_counter() - t0) * 1000.0,
            )
            decision.stages.append(
                StageResult(stage="audit", phase=Phase.AUDIT, action=entry.action, trace=[entry], error=msg)
            )
            if entry.action > decision.action:
                decision.action = entry.action
                decision.decided_by = [entry]


def _scan_one(stage: EditStage, ctx: EditContext) -> list[StageResult]:
    return [stage.scan(ctx)]


def _jsonable(meta: dict[str, Any]) -> dict[str, Any]:
    """Backend metadata as plain JSON values (anything else becomes its ``str``)."""
    import json

    return dict(json.loads(json.dumps(meta, default=str)))


def _guidance_dict(g: SafetyGuidance | None) -> dict[str, Any]:
    if g is None:
        return {}
    out: dict[str, Any] = {"categories": [str(c) for c in g.categories], "strength": g.strength, "attempt": g.attempt}
    if g.concepts:
        out["concepts"] = list(g.concepts)
    return out
