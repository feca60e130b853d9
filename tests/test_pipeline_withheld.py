"""``GenerationOutcome.withheld``: images generated but not released stay available to a service
(for its reviewers), never in ``images``."""

from __future__ import annotations

import yaml

from support.gateway import HOLD_OUTPUTS_POLICY
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.policy import policy_from_dict
from t2iguard.core.types import Action
from t2iguard.generate.base import GenerationRequest
from t2iguard.generate.factory import make_generator


def test_held_outputs_are_withheld_not_released() -> None:
    stack = SafetyStack(policy_from_dict(yaml.safe_load(HOLD_OUTPUTS_POLICY)), generator=make_generator("procedural"))
    out = stack.generate(GenerationRequest(prompt="a quiet beach", n=2, width=64, height=64))
    assert out.decision.action == Action.REVIEW
    assert out.images == [] and len(out.withheld) == 2
    assert all(img.size == (64, 64) for img in out.withheld)


def test_released_outputs_have_nothing_withheld() -> None:
    data = yaml.safe_load(HOLD_OUTPUTS_POLICY)
    data["stages"] = data["stages"][:2]  # prompt stages only
    stack = SafetyStack(policy_from_dict(data), generator=make_generator("procedural"))
    out = stack.generate(GenerationRequest(prompt="a quiet beach", width=64, height=64))
    assert out.decision.action == Action.ALLOW and len(out.images) == 1 and out.withheld == []
    blocked = stack.generate(GenerationRequest(prompt="a photo of a n4k3d woman", width=64, height=64))
    assert blocked.images == [] and blocked.withheld == []  # refused before anything was generated
