"""The vocabulary every stage shares: harm categories, actions and lifecycle phases."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Category(StrEnum):
    """Harm categories of the t2iguard taxonomy.

    The set follows the union of the I2P categories (Schramowski et al., *Safe Latent Diffusion*,
    CVPR 2023) and the privacy/public-figure categories of the DALL·E 3 system card.
    """

    SEXUAL = "sexual"
    MINORS = "minors"
    VIOLENCE = "violence"
    SELF_HARM = "self_harm"
    HATE = "hate"
    HARASSMENT = "harassment"
    ILLEGAL = "illegal"
    SHOCKING = "shocking"
    PUBLIC_FIGURE = "public_figure"
    PRIVATE_INDIVIDUAL = "private_individual"
    POLITICAL_MISINFORMATION = "political_misinformation"


class Action(StrEnum):
    """What the stack does with a request, ordered by severity (``allow`` < ... < ``block``)."""

    ALLOW = "allow"
    TRANSFORM = "transform"
    REGENERATE = "regenerate"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return self.severity < other.severity

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return self.severity <= other.severity

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return self.severity > other.severity

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return self.severity >= other.severity

    @classmethod
    def most_severe(cls, actions: Iterable[Action]) -> Action:
        """The most severe of ``actions``; ``allow`` for none."""
        return max(actions, key=lambda a: a.severity, default=cls.ALLOW)


_SEVERITY = {a: i for i, a in enumerate(Action)}


class Phase(StrEnum):
    """Lifecycle phases, in the order the pipeline runs them."""

    PROMPT_CHECK = "prompt_check"
    PROMPT_TRANSFORM = "prompt_transform"
    INPUT_IMAGE = "input_image"
    GENERATE = "generate"
    OUTPUT_IMAGE = "output_image"
    EDIT_CHECK = "edit_check"
    REGENERATE = "regenerate"
    PROVENANCE = "provenance"
    AUDIT = "audit"
    PIPELINE = "pipeline"

    @property
    def order(self) -> int:
        return _PHASE_ORDER[self]


_PHASE_ORDER = {p: i for i, p in enumerate(Phase)}
