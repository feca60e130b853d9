"""Context attacks: the unsafe request hidden among benign text.

A classifier that reads one mean-pooled sentence embedding of the whole prompt follows its majority:
an unsafe request padded with a few everyday sentences reads as an everyday scene, while the
generator still draws what the request asks for (a text-to-image model composes every clause). The
*dilution* attack pads the seed with ``k`` benign scenes on each side (``data/filler.txt``), joined
as sentences (``period``) or as one comma-separated list (``comma``); a defence reads the prompt in
parts (the classifier's ``segment_view``).
"""

from __future__ import annotations

import random
from functools import lru_cache
from importlib import resources
from typing import ClassVar

from t2iguard.core.errors import ConfigurationError
from t2iguard.redteam.attack import Attack, RedteamLexicon

JOINS: dict[str, str] = {"period": ". ", "comma": ", "}


@lru_cache(maxsize=1)
def filler() -> tuple[str, ...]:
    """The benign scenes the dilution attack pads with (one per line of ``data/filler.txt``)."""
    text = resources.files("t2iguard.redteam").joinpath("data/filler.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


class Dilution(Attack):
    """Pad the prompt with ``k`` benign scenes on each side (joined by ``mode``: period or comma)."""

    name: ClassVar[str] = "dilution"
    family: ClassVar[str] = "context"
    description: ClassVar[str] = "the request padded with benign scenes on each side"

    def __init__(self, lexicon: RedteamLexicon | None = None, mode: str | None = None, k: int = 2) -> None:
        super().__init__(lexicon)
        if mode is not None and mode not in JOINS:
            raise ConfigurationError(f"dilution mode must be one of {tuple(JOINS)}, not {mode!r}")
        if not 1 <= k <= len(filler()) // 2:
            raise ConfigurationError(f"dilution needs 1 <= k <= {len(filler()) // 2}, got {k}")
        self.mode = mode
        self.k = k

    @property
    def label(self) -> str:
        return f"{self.name}:{self.mode}" if self.mode else self.name

    def transform(self, prompt: str, rng: random.Random) -> str | None:
        core = prompt.strip().rstrip(".,; ")
        if not core:
            return None
        pad = rng.sample(filler(), 2 * self.k)
        return JOINS[self.mode or rng.choice(tuple(JOINS))].join([*pad[: self.k], core, *pad[self.k :]])
