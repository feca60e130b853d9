"""The pipeline: ordering, short-circuit, fail-closed behaviour, transforms, regeneration, JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict

from t2iguard import Action, Category, Decision, SafetyStack, StageRegistry
from t2iguard.core.decision import Change, Finding, StageResult
from t2iguard.core.inputs import ImageItem
from t2iguard.core.policy import policy_from_dict
from t2iguard.core.registry import BUILTIN_STAGES
from t2iguard.core.stage import ImageContext, ImageStage, PromptContext, PromptStage, PromptTransform
from t2iguard.core.types import Phase
from t2iguard.generate.base import GenerationRequest, GenerationResult
from t2iguard.generate.procedural import ProceduralGenerator
from t2iguard.service.audit import JsonlAuditSink, MemoryAuditSink


class Explodes(PromptStage):
    def scan(self, ctx: PromptContext) -> StageResult:
        raise RuntimeError("model file corrupted")


class Sleeps(PromptStage):
    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        seconds: float = 2.0

    def scan(self, ctx: PromptContext) -> StageResult:
        time.sleep(self.params.seconds)  # type: ignore[attr-defined]
        return self.result([])


class WrongLength(PromptStage):
    def scan_batch(self, ctxs: Sequence[PromptContext]) -> list[StageResult]:
        return []

    def scan(self, ctx: PromptContext) -> StageResult:  # pragma: no cover - never called
        raise AssertionError


class Counts(PromptStage):
    """Records every prompt it sees; flags 'sexual' for prompts containing 'flag-me'."""

    seen: ClassVar[list[str]] = []

    def scan(self, ctx: PromptContext) -> StageResult:
        Counts.seen.append(ctx.text)
        score = 1.0 if "flag-me" in ctx.text else 0.0
        return self.result([Finding(category=Category.SEXUAL, score=score)])


class Rewrites(PromptTransform):
    """Replaces 'flag-me' with 'a calm lake' when an earlier check flagged the prompt."""

    def scan(self, ctx: PromptContext) -> StageResult:
        if "flag-me" not in ctx.text or not ctx.flagged_categories():
            return self.result([])
        new = ctx.text.replace("flag-me", "a calm lake")
        change = Change(stage=self.name, kind="rewrite", before=ctx.text, after=new, reason="reframed")
        return self.result([], prompt=new, changes=[change])


class RedIsViolent(ImageStage):
    """Flags mostly-red images (violence)."""

    def scan_batch(self, items: Sequence[ImageItem], ctx: ImageContext) -> list[StageResult]:
        out = []
        for it in items:
            r, g, b = it.array().reshape(-1, 3).mean(axis=0)
            score = 1.0 if r > 150 and g < 80 and b < 80 else 0.0
            out.append(self.result([Finding(category=Category.VIOLENCE, score=score)], phase=ctx.phase))
        return out


def registry() -> StageRegistry:
    reg = StageRegistry(load_entry_points=False)
    for name, cls in {
        "explodes": Explodes,
        "sleeps": Sleeps,
        "wrong_length": WrongLength,
        "counts": Counts,
        "rewrites": Rewrites,
        "red_is_violent": RedIsViolent,
    }.items():
        reg.register(name, cls)
    return reg


def stack(stages: list[dict[str, Any]], **policy: Any) -> SafetyStack:
    return SafetyStack(policy_from_dict({"name": "test", "stages": stages, **policy}), registry=registry())


def test_builtin_registry_resolves_every_entry() -> None:
    reg = StageRegistry()
    for name in BUILTIN_STAGES:
        assert reg.get(name).phases


def test_a_stage_that_raises_fails_closed_with_the_error_in_the_trace() -> None:
    d = stack([{"stage": "explodes"}]).check_prompt("a calm lake")
    assert d.action == Action.BLOCK and not d.allowed
    (entry,) = d.decided_by
    assert entry.stage == "explodes" and "RuntimeError: model file corrupted" in (entry.error or "")
    assert d.errors == ["explodes: RuntimeError: model file corrupted"]


def test_policy_can_send_errors_to_review() -> None:
    d = stack([{"stage": "explodes", "on_error": "review"}]).check_prompt("x")
    assert d.action == Action.REVIEW
    d = stack([{"stage": "explodes"}], on_error="review").check_prompt("x")
    assert d.action == Action.REVIEW


def test_a_stage_that_times_out_fails_closed() -> None:
    d = stack([{"stage": "sleeps", "timeout_s": 0.2, "params": {"seconds": 2}}]).check_prompt("x")
    assert d.action == Action.BLOCK
    assert "timed out after 0.2s" in (d.decided_by[0].error or "")


def test_a_stage_returning_the_wrong_number_of_results_fails_closed() -> None:
    d = stack([{"stage": "wrong_length"}]).check_prompt("x")
    assert d.action == Action.BLOCK and "for 1 inputs" in (d.decided_by[0].error or "")


def test_block_short_circuits_later_stages() -> None:
    Counts.seen.clear()
    s = stack([{"stage": "explodes"}, {"stage": "counts"}])
    s.check_prompt("first")
    assert Counts.seen == []
    s2 = stack([{"stage": "explodes"}, {"stage": "counts"}], short_circuit=False)
    s2.check_prompt("second")
    assert Counts.seen == ["second"]


def test_cheap_stages_run_before_model_stages_and_keep_policy_order() -> None:
    s = SafetyStack(
        policy_from_dict({"name": "t", "stages": [{"stage": "nsfw"}, {"stage": "normalize"}, {"stage": "blocklist"}]})
    )
    assert [st.name for st in s.stages(Phase.PROMPT_CHECK)] == ["normalize", "blocklist"]
    assert [st.name for st in s.stages(Phase.OUTPUT_IMAGE)] == ["nsfw"]


def test_transform_rewrites_then_rechecks() -> None:
    Counts.seen.clear()
    s = stack(
        [{"stage": "counts"}, {"stage": "rewrites"}],
        categories={"sexual": {"action": "transform", "threshold": 0.5}},
    )
    d = s.check_prompt("a photo of flag-me")
    assert d.action == Action.TRANSFORM and d.allowed
    assert d.prompt == "a photo of a calm lake" and d.original_prompt == "a photo of flag-me"
    assert [c.kind for c in d.changes] == ["rewrite"]
    assert Counts.seen == ["a photo of flag-me", "a photo of a calm lake"]  # re-checked
    recheck = [e for e in d.trace if e.evidence.get("recheck")]
    assert recheck and all(e.action == Action.ALLOW for e in recheck)


def test_unresolved_transform_fails_closed() -> None:
    s = stack([{"stage": "counts"}], categories={"sexual": {"action": "transform"}})
    d = s.check_prompt("flag-me please")
    assert d.action == Action.BLOCK
    assert d.decided_by[0].stage == "pipeline" and "no transform stage" in (d.decided_by[0].message or "")


def test_rewrite_that_is_still_flagged_is_blocked() -> None:
    class BadRewrite(PromptTransform):
        def scan(self, ctx: PromptContext) -> StageResult:
            new = ctx.text + " and more"
            return self.result(
                [], prompt=new, changes=[Change(stage=self.name, kind="x", before=ctx.text, after=new, reason="r")]
            )

    reg = registry()
    reg.register("bad_rewrite", BadRewrite)
    pol = policy_from_dict(
        {
            "name": "t",
            "categories": {"sexual": {"action": "transform"}},
            "stages": [{"stage": "counts"}, {"stage": "bad_rewrite"}],
        }
    )
    d = SafetyStack(pol, registry=reg).check_prompt("flag-me")
    assert d.action == Action.BLOCK and "still flagged" in (d.decided_by[0].message or "")


class AddsFlag(PromptTransform):
    """An augmentation that (wrongly) adds words the checks flag."""

    optional: ClassVar[bool] = True

    def scan(self, ctx: PromptContext) -> StageResult:
        new = ctx.text + " flag-me"
        return self.result(
            [], prompt=new, changes=[Change(stage=self.name, kind="augment", before=ctx.text, after=new, reason="a")]
        )


class AddsWords(PromptTransform):
    """A required rewrite that appends harmless words."""

    def scan(self, ctx: PromptContext) -> StageResult:
        new = ctx.text + ", calm"
        return self.result(
            [], prompt=new, changes=[Change(stage=self.name, kind="rewrite", before=ctx.text, after=new, reason="r")]
        )


def test_optional_rewrite_flagged_on_recheck_is_dropped_not_refused() -> None:
    reg = registry()
    reg.register("adds_flag", AddsFlag)
    reg.register("adds_words", AddsWords)
    pol = policy_from_dict(
        {
            "name": "t",
            "categories": {"sexual": {"action": "block", "threshold": 0.5}},
            "stages": [{"stage": "counts"}, {"stage": "adds_flag"}, {"stage": "adds_words"}],
        }
    )
    s = SafetyStack(pol, registry=reg)
    d = s.check_prompt("a lake at dawn")
    # the augmentation is dropped, the required rewrite is kept and re-checked
    assert d.allowed and d.prompt == "a lake at dawn, calm"
    assert [c.stage for c in d.changes] == ["adds_words"]
    dropped = [e for e in d.trace if e.stage == "pipeline" and e.evidence.get("dropped") == ["adds_flag"]]
    assert dropped and "sexual" in (dropped[0].message or "")
    # a prompt that is flagged as written is still refused
    assert s.check_prompt("flag-me at dawn").action == Action.BLOCK
    # a required rewrite that is flagged on re-check still blocks
    AddsFlag.optional = False
    try:
        assert SafetyStack(pol, registry=reg).check_prompt("a lake at dawn").action == Action.BLOCK
    finally:
        AddsFlag.optional = True


def test_closed_vocabulary_augmentation_flagged_on_recheck_is_kept_and_recorded() -> None:
    class AddsDescriptor(AddsFlag):
        closed_vocabulary: ClassVar[bool] = True

    reg = registry()
    reg.register("adds_descriptor", AddsDescriptor)
    pol = policy_from_dict(
        {
            "name": "t",
            "categories": {"sexual": {"action": "block", "threshold": 0.5}},
            "stages": [{"stage": "counts"}, {"stage": "adds_descriptor"}],
        }
    )
    d = SafetyStack(pol, registry=reg).check_prompt("a lake at dawn")
    # kept, not dropped (dropping would skew the augmentation away from what a biased check flags)
    assert d.allowed and d.prompt == "a lake at dawn flag-me"
    kept = [e for e in d.trace if e.stage == "pipeline" and e.evidence.get("kept") == ["adds_descriptor"]]
    assert kept and kept[0].evidence["recheck_flagged"][0]["category"] == "sexual"
    assert not [e for e in d.trace if e.evidence.get("recheck") and e.action >= Action.REVIEW]


def test_optional_rewrite_whose_recheck_asks_for_a_transform_is_dropped_not_blocked() -> None:
    """A re-check verdict of 'transform' would end in a block ('still flagged after rewriting'): when an
    optional rewrite made it, the rewrite is dropped, even a closed-vocabulary one, and the prompt as
    written goes on; a required rewrite that makes it still blocks."""

    class AddsDescriptor(AddsFlag):
        closed_vocabulary: ClassVar[bool] = True

    reg = registry()
    reg.register("adds_flag", AddsFlag)
    reg.register("adds_descriptor", AddsDescriptor)
    for augmentation in ("adds_flag", "adds_descriptor"):
        pol = policy_from_dict(
            {
                "name": "t",
                "categories": {"sexual": {"action": "transform", "threshold": 0.5}},
                "stages": [{"stage": "counts"}, {"stage": augmentation}],
            }
        )
        d = SafetyStack(pol, registry=reg).check_prompt("a lake at dawn")
        assert d.action == Action.ALLOW and d.prompt == "a lake at dawn", augmentation
        dropped = [e for e in d.trace if e.stage == "pipeline" and e.evidence.get("dropped") == [augmentation]]
        assert dropped and dropped[0].evidence["recheck_flagged"][0]["action"] == "transform"
        assert not [e for e in d.trace if e.stage == "pipeline" and "still flagged" in (e.message or "")]
    AddsFlag.optional = False
    try:
        d = SafetyStack(pol, registry=reg).check_prompt("a lake at dawn")
        assert d.action == Action.BLOCK and "still flagged" in (d.decided_by[0].message or "")
    finally:
        AddsFlag.optional = True


def test_batch_keeps_order_and_reports_bad_inputs_in_place() -> None:
    s = SafetyStack()
    out = s.check_prompts(["a calm lake", "", 42, "a n4k3d man", "x" * 5000, b"\xff\xfe"])
    kinds = [type(o).__name__ for o in out]
    assert kinds == ["Decision", "InputError", "InputError", "Decision", "InputError", "InputError"]
    assert out[0].action == Action.ALLOW and out[3].action == Action.BLOCK  # type: ignore[union-attr]
    assert "empty" in str(out[1]) and "must be a string" in str(out[2])
    assert "5,000 characters; the limit is 4,000" in str(out[4]) and "not valid UTF-8" in str(out[5])


def test_decision_json_shape() -> None:
    d = SafetyStack().check_prompt("a photo of a n4k3d woman")
    data = json.loads(d.to_json())
    for key in (
        "id",
        "action",
        "categories",
        "prompt",
        "original_prompt",
        "trace",
        "decided_by",
        "reason",
        "policy",
        "stages",
        "allowed",
        "flagged",
        "latency_ms",
        "input",
    ):
        assert key in data
    assert data["action"] == "block" and data["categories"]["sexual"] == 1.0 and data["allowed"] is False
    assert data["flagged"] == ["sexual"]
    hit = data["decided_by"][0]
    assert {k: hit[k] for k in ("stage", "category", "score", "threshold", "action")} == {
        "stage": "blocklist",
        "category": "sexual",
        "score": 1.0,
        "threshold": 0.9,
        "action": "block",
    }
    assert hit["evidence"]["matched"] == "n4k3d" and hit["evidence"]["term"] == "naked"
    assert all("latency_ms" in e for e in data["trace"])
    assert data["policy"]["name"] == "t2iguard-default" and len(data["policy"]["sha256"]) == 64
    assert "blocklist: sexual 1.00 >= 0.90" in data["reason"]
    again = Decision.model_validate_json(d.to_json())
    assert again.action == d.action and again.trace == d.trace


# ---- generation -------------------------------------------------------------------------


class RedThenBlue:
    """Red (flagged) images until safety guidance is requested, then blue."""

    name = "red-then-blue"

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        color = (200, 20, 20) if request.safety is None or request.safety.strength == "medium" else (20, 20, 200)
        return GenerationResult(images=[Image.new("RGB", (64, 64), color)], seed=request.seed)


class Broken:
    name = "broken"

    def generate(self, request: GenerationRequest) -> GenerationResult:
        raise ConnectionError("backend unreachable")


def gen_stack(generator: Any, action: str = "regenerate", **regeneration: Any) -> SafetyStack:
    pol = policy_from_dict(
        {
            "name": "gen",
            "categories": {"violence": {"action": action}},
            "regeneration": {"max_attempts": 3, "strengths": ["medium", "strong", "max"], **regeneration},
            "stages": [{"stage": "normalize"}, {"stage": "blocklist", "threshold": 0.9}, {"stage": "red_is_violent"}],
        }
    )
    return SafetyStack(pol, registry=registry(), generator=generator, audit=MemoryAuditSink())


def test_regeneration_escalates_guidance_and_records_every_attempt() -> None:
    gen = RedThenBlue()
    s = gen_stack(gen)
    out = s.generate(GenerationRequest(prompt="a calm lake", width=64, height=64, seed=7))
    d = out.decision
    assert d.action == Action.ALLOW and len(out.images) == 1
    assert np.asarray(out.images[0])[0, 0].tolist() == [20, 20, 200]
    assert [a.action for a in d.attempts] == [Action.REGENERATE, Action.REGENERATE, Action.ALLOW]
    assert [r.safety.strength if r.safety else None for r in gen.requests] == [None, "medium", "strong"]
    assert gen.requests[1].safety.categories == (Category.VIOLENCE,)  # type: ignore[union-attr]
    assert len({r.seed for r in gen.requests}) == 3  # new seed each attempt
    assert all(a.trace for a in d.attempts)
    assert s.audit.decisions == [d]  # type: ignore[union-attr]


def test_regeneration_falls_back_when_no_attempt_is_clean() -> None:
    gen = RedThenBlue()
    s = gen_stack(gen, strengths=["medium"])  # never escalates past medium: always red
    out = s.generate(GenerationRequest(prompt="a calm lake", width=64, height=64))
    assert out.decision.action == Action.BLOCK and out.images == []
    assert len(out.decision.attempts) == 3
    assert "falling back to block" in out.decision.reason


def test_generator_failure_fails_closed() -> None:
    out = gen_stack(Broken()).generate(GenerationRequest(prompt="a calm lake", width=64, height=64))
    assert out.decision.action == Action.BLOCK and out.images == []
    assert "ConnectionError: backend unreachable" in out.decision.reason


def test_blocked_prompt_never_reaches_the_generator() -> None:
    gen = RedThenBlue()
    out = gen_stack(gen).generate(GenerationRequest(prompt="a n4k3d man", width=64, height=64))
    assert out.decision.action == Action.BLOCK and gen.requests == []


def test_audit_failure_withholds_images(tmp_path: Any) -> None:
    class FailingSink:
        def record(self, decision: Decision) -> None:
            raise OSError("disk full")

    s = SafetyStack(generator=ProceduralGenerator(), audit=FailingSink())
    out = s.generate(GenerationRequest(prompt="a lighthouse", width=64, height=64))
    assert out.decision.action == Action.BLOCK and out.images == []
    assert any("audit sink failed" in e for e in out.decision.errors)


def test_jsonl_audit_sink_appends_durably(tmp_path: Any) -> None:
    sink = JsonlAuditSink(tmp_path / "audit" / "log.jsonl")
    s = SafetyStack(generator=ProceduralGenerator(), audit=sink)
    ids = [s.generate(GenerationRequest(prompt=p, width=32, height=32)).decision.id for p in ("a lake", "a n4k3d man")]
    lines = (tmp_path / "audit" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ids
