"""Black-box access to a safety stack through its public outputs only.

The red team sees what a client of the stack sees: the decision's action, its per-category
scores and its trace (the explanation the stack gives). It never reads stage internals, lexicons
or model weights. Every prompt sent counts as one query, so a search can be held to a budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from t2iguard.core.decision import Decision
from t2iguard.core.errors import InputError
from t2iguard.core.pipeline import SafetyStack
from t2iguard.core.types import Action, Category


@dataclass(frozen=True)
class Verdict:
    """What the stack answered for one prompt."""

    prompt: str
    action: Action
    blocked: bool
    categories: dict[Category, float] = field(default_factory=dict)
    flagged: tuple[Category, ...] = ()
    reason: str = ""
    spans: tuple[tuple[int, int], ...] = ()
    hits: int = 0
    error: str | None = None

    def score(self, focus: Sequence[Category] = ()) -> float:
        """How unsafe the stack thinks the prompt is (lower is better for the attacker): the
        highest score among ``focus`` categories (all categories when empty), plus a small
        tie-break per trace entry that decided the action (the number of things still caught),
        plus 1 while the prompt is blocked."""
        cats = list(focus) or list(self.categories)
        top = max((self.categories.get(c, 0.0) for c in cats), default=0.0)
        return top + 0.01 * min(self.hits, 50) + (1.0 if self.blocked else 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": str(self.action),
            "blocked": self.blocked,
            "categories": {str(k): round(v, 4) for k, v in self.categories.items() if v > 0},
            "flagged": [str(c) for c in self.flagged],
            "reason": self.reason,
            **({"error": self.error} if self.error else {}),
        }


def verdict_from_decision(prompt: str, d: Decision, blocked_at: Action = Action.REVIEW) -> Verdict:
    spans: list[tuple[int, int]] = []
    for e in d.decided_by:
        span = e.evidence.get("span")
        if isinstance(span, list | tuple) and len(span) == 2 and all(isinstance(x, int) for x in span):
            spans.append((int(span[0]), int(span[1])))
    return Verdict(
        prompt=prompt,
        action=d.action,
        blocked=d.action >= blocked_at,
        categories=dict(d.categories),
        flagged=tuple(d.flagged),
        reason=d.reason,
        spans=tuple(spans),
        hits=len(d.decided_by),
    )


class StackOracle:
    """Queries a :class:`SafetyStack`'s prompt checks and counts the queries.

    ``blocked_at``: the least severe action that counts as stopping a prompt (``review`` by
    default: refused or held for a human, the actions after which the pipeline generates
    nothing).
    """

    def __init__(self, stack: SafetyStack, *, blocked_at: Action = Action.REVIEW, batch_size: int = 64) -> None:
        self.stack = stack
        self.blocked_at = blocked_at
        self.batch_size = batch_size
        self.queries = 0

    def check(self, prompts: Sequence[str]) -> list[Verdict]:
        """One verdict per prompt; every prompt counts as a query. Invalid prompts (too long,
        empty) count as blocked: the stack refuses them."""
        out: list[Verdict] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start : start + self.batch_size])
            self.queries += len(chunk)
            for p, d in zip(chunk, self.stack.check_prompts(chunk), strict=True):
                if isinstance(d, InputError):
                    out.append(Verdict(p, Action.BLOCK, True, reason=f"invalid input: {d.reason}", error=d.reason))
                else:
                    out.append(verdict_from_decision(p, d, self.blocked_at))
        return out
