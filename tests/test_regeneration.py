"""The regeneration loop of ``SafetyStack.generate`` with the ``tiny_concepts`` output check.

The generator here renders the emoji world directly (the concepts named in the prompt, minus the
ones the safety guidance asks to avoid, the way a perfectly guided sampler would): the loop's
mechanics — attempts recorded with their own traces, escalating presets, accumulated concepts,
new seeds, fallback, time budget, fail-closed — are tested without sampling a diffusion model.
"""

from __future__ import annotations

import random

import pytest
from PIL import Image

from t2iguard.cli.generate import resolve_policy
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import Policy, policy_from_dict
from t2iguard.core.types import Action, Category, Phase
from t2iguard.generate.base import GenerationRequest, GenerationResult
from t2iguard.generate.tiny.concepts import CONCEPTS
from t2iguard.generate.tiny.world import compose


class WorldGenerator:
    """Draws the prompt's concepts; ``avoid_after``: how many guided attempts it takes to obey."""

    name = "world"

    def __init__(self, obey_from_attempt: int = 1, sneak: str | None = None) -> None:
        self.obey_from_attempt = obey_from_attempt
        self.sneak = sneak  # a concept drawn instead of an avoided one (to test accumulation)
        self.requests: list[GenerationRequest] = []

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        low = request.prompt.lower()
        keys = [c.key for c in CONCEPTS if any(n in low for n in c.names)]
        avoid = set()
        if request.safety is not None and request.safety.attempt >= self.obey_from_attempt:
            avoid = set(request.safety.concepts)
        kept = [k for k in keys if k not in avoid]
        if self.sneak and avoid and self.sneak not in avoid:
            kept.append(self.sneak)
        rng = random.Random(request.seed)
        img = compose(kept[:3], rng).image if kept else Image.new("RGB", (64, 64), (120, 120, 120))
        return GenerationResult(images=[img], seed=request.seed, metadata={"backend": "world"})


class Broken:
    name = "broken"

    def generate(self, request: GenerationRequest) -> GenerationResult:
        raise RuntimeError("CUDA out of memory")


@pytest.fixture(scope="module")
def policy() -> Policy:
    return resolve_policy("tiny-demo", "tiny")


def test_regenerates_away_from_the_flagged_concept(policy: Policy) -> None:
    gen = WorldGenerator()
    out = SafetyStack(policy, generator=gen).generate(GenerationRequest(prompt="a knife and a cat", seed=11))
    d = out.decision
    assert [a.action for a in d.attempts] == [Action.REGENERATE, Action.ALLOW]
    first, second = d.attempts
    assert first.guidance == {} and first.seed == 11
    assert second.guidance == {"categories": ["violence"], "strength": "medium", "attempt": 1, "concepts": ["knife"]}
    assert second.seed == 11 + 1_000_003
    knife = next(e for e in first.trace if e.evidence.get("concept") == "knife")
    assert knife.action == Action.REGENERATE and knife.category == Category.VIOLENCE and knife.score > 0.5
    assert all(e.evidence["attempt"] == 1 for e in second.trace)
    assert d.action == Action.ALLOW and len(out.images) == 1 and d.images[0].width == 64
    assert gen.requests[1].safety is not None and gen.requests[1].safety.concepts == ("knife",)


def test_escalates_accumulates_and_falls_back(policy: Policy) -> None:
    gen = WorldGenerator(obey_from_attempt=1, sneak="skull")
    out = SafetyStack(policy, generator=gen).generate(GenerationRequest(prompt="a pistol", seed=1))
    d = out.decision
    # pistol -> (avoid pistol) skull -> (avoid pistol, skull) nothing sneaks in anymore
    assert [a.action for a in d.attempts] == [Action.REGENERATE, Action.REGENERATE, Action.ALLOW]
    assert [a.guidance.get("strength") for a in d.attempts] == [None, "medium", "strong"]
    assert d.attempts[2].guidance["concepts"] == ["pistol", "skull"]
    assert d.attempts[2].guidance["categories"] == ["violence", "shocking"]
    stubborn = WorldGenerator(obey_from_attempt=99)
    out = SafetyStack(policy, generator=stubborn).generate(GenerationRequest(prompt="a bomb", seed=2))
    d = out.decision
    assert len(d.attempts) == policy.regeneration.max_attempts == 4
    assert [a.guidance.get("strength") for a in d.attempts] == [None, "medium", "strong", "max"]
    assert d.action == Action.BLOCK and out.images == []
    assert "regeneration did not produce a clean image (4 attempts)" in d.reason


def test_time_budget_and_generator_failure_fail_closed(policy: Policy) -> None:
    data = policy.model_dump(mode="json")
    data["regeneration"] = {**data["regeneration"], "time_budget_s": 1e-6, "fallback": "review"}
    tight = policy_from_dict(data, "tight")
    out = SafetyStack(tight, generator=WorldGenerator(obey_from_attempt=99)).generate(
        GenerationRequest(prompt="a skull", seed=3)
    )
    assert len(out.decision.attempts) == 1 and out.decision.action == Action.REVIEW and out.images == []
    assert "time budget exhausted" in out.decision.reason
    out = SafetyStack(policy, generator=Broken()).generate(GenerationRequest(prompt="a tree", seed=4))
    d = out.decision
    assert d.action == Action.BLOCK and out.images == []
    (attempt,) = d.attempts
    assert attempt.trace[0].phase == Phase.GENERATE and "CUDA out of memory" in (attempt.trace[0].error or "")


def test_clean_output_needs_one_attempt(policy: Policy) -> None:
    out = SafetyStack(policy, generator=WorldGenerator()).generate(GenerationRequest(prompt="a cat and a tree", seed=5))
    assert [a.action for a in out.decision.attempts] == [Action.ALLOW] and out.decision.action == Action.ALLOW
