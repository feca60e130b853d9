"""Lexical attacks: the unsafe word replaced by a euphemism, a visual synonym or a synonym.

Euphemisms and "visual synonyms" — describing what the image shows without naming the concept
("red paint splattered" for blood, "sleeping man who does not breathe" for a corpse) — are the
classic bypass of keyword filters (Rando et al., "Red-teaming the Stable Diffusion safety
filter", 2022; the word substitutions of SneakyPrompt, Yang et al. 2024). The replacement lists are
the red team's curated lexicon (``redteam/data/lexicon.yaml``), by category.
"""

from __future__ import annotations

import random
from typing import ClassVar

from t2iguard.redteam.attack import Attack, LexiconEntry, RedteamLexicon, match_case, replace_spans


class _Replace(Attack):
    family: ClassVar[str] = "lexical"
    field: ClassVar[str]

    def __init__(self, lexicon: RedteamLexicon | None = None) -> None:
        super().__init__(lexicon)

    def options(self, entry: LexiconEntry) -> tuple[str, ...]:
        return tuple(getattr(entry, self.field))

    def transform(self, prompt: str, rng: random.Random) -> str | None:
        reps = []
        for t in self.lexicon.find(prompt):
            if t.entry is None:
                continue
            options = [o for o in self.options(t.entry) if o.lower() != t.text.lower()]
            if options:
                reps.append((t.start, t.end, match_case(t.text, rng.choice(options))))
        return replace_spans(prompt, reps) if reps else None


class Euphemism(_Replace):
    """``naked`` -> ``in her birthday suit``."""

    name: ClassVar[str] = "euphemism"
    field: ClassVar[str] = "euphemisms"
    description: ClassVar[str] = "euphemisms (in the buff, nose candy)"


class VisualSynonym(_Replace):
    """``blood`` -> ``red paint``: what is seen, not what it is."""

    name: ClassVar[str] = "visual_synonym"
    field: ClassVar[str] = "visual"
    description: ClassVar[str] = "visual synonyms (red paint for blood)"


class SynonymSwap(_Replace):
    """``naked`` -> ``unclothed``."""

    name: ClassVar[str] = "synonym"
    field: ClassVar[str] = "synonyms"
    description: ClassVar[str] = "plain synonyms (unclothed, slay)"
