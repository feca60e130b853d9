"""t2iguard: an open, end-to-end safety stack for text-to-image generation.

Quick start::

    from t2iguard import SafetyStack

    stack = SafetyStack()                       # the built-in default policy
    decision = stack.check_prompt("a n4k3d woman")
    decision.action                             # Action.BLOCK
    decision.reason                             # "block: blocklist: sexual 1.00 >= 0.90 ..."
"""

from __future__ import annotations

from t2iguard.core.decision import Decision, Finding, StageResult, TraceEntry
from t2iguard.core.errors import ConfigurationError, InputError, PolicyError, T2IGuardError
from t2iguard.core.pipeline import GenerationOutcome, SafetyStack
from t2iguard.core.policy import Policy, default_policy, load_policy
from t2iguard.core.registry import StageRegistry
from t2iguard.core.stage import ModelCache
from t2iguard.core.types import Action, Category, Phase

__version__ = "0.1.0"

__all__ = [
    "Action",
    "Category",
    "ConfigurationError",
    "Decision",
    "Finding",
    "GenerationOutcome",
    "InputError",
    "ModelCache",
    "Phase",
    "Policy",
    "PolicyError",
    "SafetyStack",
    "StageRegistry",
    "StageResult",
    "T2IGuardError",
    "TraceEntry",
    "__version__",
    "default_policy",
    "load_policy",
]
