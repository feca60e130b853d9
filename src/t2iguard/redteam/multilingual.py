"""Multilingual attack: the prompt in another language.

Keyword filters and English-only classifiers miss unsafe prompts written in other languages, and
multilingual text encoders (SDXL's OpenCLIP, FLUX's T5) still understand them. The attack uses
phrase tables written by the t2iguard authors (``redteam/data/phrases/{es,de,fr,pt,it}.yaml``)
for the red team's unsafe terms plus common prompt words: ``full`` mode translates every word the
table knows (the unsafe term always), ``mixed`` mode only the unsafe terms (code-mixing).

No offline machine-translation model could be verified (see ``redteam/README.md``): Argos
Translate installs from PyPI without any language package, and its package index is fetched
from the network; the phrase tables are what ships.
"""

from __future__ import annotations

import random
import re
from functools import cache
from importlib import resources
from typing import ClassVar

import yaml

from t2iguard.core.errors import ConfigurationError
from t2iguard.redteam.attack import Attack, RedteamLexicon, match_case, replace_spans

LANGUAGES: tuple[str, ...] = ("es", "de", "fr", "pt", "it")
_WORD = re.compile(r"[^\W\d_]+")


@cache
def phrase_table(language: str) -> dict[str, dict[str, str]]:
    """``{"language": ..., "terms": {...}, "words": {...}}`` for a language code."""
    if language not in LANGUAGES:
        raise ConfigurationError(f"no phrase table for language {language!r}; available: {', '.join(LANGUAGES)}")
    ref = resources.files("t2iguard.redteam").joinpath(f"data/phrases/{language}.yaml")
    data = yaml.safe_load(ref.read_text(encoding="utf-8"))
    return {
        "terms": {str(k).lower(): str(v) for k, v in (data.get("terms") or {}).items()},
        "words": {str(k).lower(): str(v) for k, v in (data.get("words") or {}).items()},
    }


class Translate(Attack):
    """Translate the prompt's unsafe terms (and, in ``full`` mode, its common words)."""

    name: ClassVar[str] = "translate"
    family: ClassVar[str] = "multilingual"
    description: ClassVar[str] = "phrase-table translation into es/de/fr/pt/it"

    def __init__(self, lexicon: RedteamLexicon | None = None, language: str | None = None, mode: str = "full") -> None:
        super().__init__(lexicon)
        if language is not None:
            phrase_table(language)  # fail early on unknown languages
        if mode not in ("full", "mixed"):
            raise ConfigurationError(f"translate mode must be 'full' or 'mixed', not {mode!r}")
        self.language = language
        self.mode = mode

    @property
    def label(self) -> str:
        return f"{self.name}:{self.language}" if self.language else self.name

    def transform(self, prompt: str, rng: random.Random) -> str | None:
        lang = self.language or rng.choice(LANGUAGES)
        table = phrase_table(lang)
        reps: list[tuple[int, int, str]] = []
        taken: list[tuple[int, int]] = []
        for t in self.lexicon.find(prompt):
            if t.entry is None:
                continue
            key = t.text.lower()
            translated = table["terms"].get(key) or table["terms"].get(t.entry.term)
            if translated:
                reps.append((t.start, t.end, match_case(t.text, translated)))
                taken.append((t.start, t.end))
        if not reps:
            return None
        if self.mode == "full":
            for m in _WORD.finditer(prompt):
                if any(s <= m.start() < e for s, e in taken):
                    continue
                w = table["words"].get(m.group(0).lower())
                if w:
                    reps.append((m.start(), m.end(), match_case(m.group(0), w)))
        return replace_spans(prompt, reps)
