"""A small prompt transform for gateway tests (the real anonymizer lives on another branch)."""

from __future__ import annotations

from t2iguard.core.decision import Change, StageResult
from t2iguard.core.stage import PromptContext, PromptTransform
from t2iguard.core.types import Category


class ReplaceNameTransform(PromptTransform):
    """Replaces the private name 'Jane Doe' by 'a person'."""

    covers = frozenset({Category.PRIVATE_INDIVIDUAL})

    def scan(self, ctx: PromptContext) -> StageResult:
        if "Jane Doe" not in ctx.text:
            return self.result([])
        new = ctx.text.replace("Jane Doe", "a person")
        change = Change(
            stage=self.name,
            kind="anonymize",
            before="Jane Doe",
            after="a person",
            reason="private individual anonymized",
            category=Category.PRIVATE_INDIVIDUAL,
        )
        return self.result([], prompt=new, changes=[change])
