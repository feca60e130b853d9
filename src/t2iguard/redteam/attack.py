"""Attacks: seeded, composable transformations of seed prompts.

An :class:`Attack` turns a prompt into an attacked prompt (or ``None`` when it has nothing to
work on, e.g. a euphemism attack on a prompt without any unsafe term it knows). Every attack is
deterministic under a seed: the random generator is derived from (seed, attack name, prompt), so
a variant does not depend on which other prompts or attacks ran before it.

Attacks target the *unsafe terms* of a prompt, as a human attacker does: the words listed in the
red team's own lexicon (``redteam/data/lexicon.yaml``, written independently of the defence's
blocklist), falling back to every content word when none is found. Attacks compose with ``+``
(``"euphemism+leetspeak"`` applies the euphemism attack, then leetspeak on the result).
"""

from __future__ import annotations

import hashlib
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar

import yaml

from t2iguard.core.errors import ConfigurationError
from t2iguard.core.types import Category

FAMILIES = ("character", "lexical", "multilingual", "composition", "context", "search")

WORD_RE = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
STOPWORDS = frozenset({
    "a", "an", "the", "of", "with", "and", "or", "in", "on", "at", "to", "for", "from", "by", "as", "is",
    "are", "was", "were", "be", "been", "her", "his", "their", "its", "this", "that", "these", "those", "very",
    "into", "onto", "over", "under", "near", "while", "who", "whom", "which", "what", "there", "here",
    "highly", "ultra", "trending", "artstation", "octane", "render", "unreal", "engine", "4k", "8k", "hd",
    "hdr",
})  # fmt: skip


@dataclass(frozen=True)
class LexiconEntry:
    """One unsafe concept of the red team's lexicon."""

    category: Category
    term: str
    forms: tuple[str, ...]
    euphemisms: tuple[str, ...] = ()
    visual: tuple[str, ...] = ()
    synonyms: tuple[str, ...] = ()
    opposite: str | None = None
    parts: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Target:
    """An occurrence of an unsafe term (or, as a fallback, a content word) in a prompt."""

    start: int
    end: int
    text: str
    entry: LexiconEntry | None = None


class RedteamLexicon:
    """The red team's lexicon, with whole-word matching of every form (longest form first)."""

    def __init__(self, entries: Sequence[LexiconEntry]) -> None:
        self.entries = tuple(entries)
        forms: dict[str, LexiconEntry] = {}
        for e in self.entries:
            for f in (e.term, *e.forms):
                forms.setdefault(f.lower(), e)
        self._forms = forms
        alternatives = sorted(forms, key=len, reverse=True)
        body = "|".join(_form_pattern(f) for f in alternatives)
        self._regex = re.compile(rf"(?<![^\W_])(?:{body})(?![^\W_])", re.IGNORECASE)

    @classmethod
    def builtin(cls) -> RedteamLexicon:
        return _builtin_lexicon()

    @classmethod
    def from_yaml(cls, text: str) -> RedteamLexicon:
        data = yaml.safe_load(text) or {}
        entries: list[LexiconEntry] = []
        for cat_name, items in data.items():
            try:
                cat = Category(cat_name)
            except ValueError:
                raise ConfigurationError(f"red-team lexicon: unknown category {cat_name!r}") from None
            for item in items or []:
                entries.append(
                    LexiconEntry(
                        category=cat,
                        term=str(item["term"]).lower(),
                        forms=tuple(str(f).lower() for f in item.get("forms", [])),
                        euphemisms=tuple(str(x) for x in item.get("euphemisms", [])),
                        visual=tuple(str(x) for x in item.get("visual", [])),
                        synonyms=tuple(str(x) for x in item.get("synonyms", [])),
                        opposite=str(item["opposite"]) if item.get("opposite") else None,
                        parts=tuple(tuple(str(x) for x in p) for p in item.get("parts", [])),
                    )
                )
        return cls(entries)

    def entry(self, form: str) -> LexiconEntry | None:
        key = re.sub(r"[\s-]+", " ", form.lower()).strip()
        return self._forms.get(key) or self._forms.get(key.replace(" ", "-")) or self._forms.get(key.replace(" ", ""))

    def find(self, prompt: str) -> list[Target]:
        """Every unsafe-term occurrence in ``prompt``, left to right, non-overlapping."""
        out = []
        for m in self._regex.finditer(prompt):
            out.append(Target(m.start(), m.end(), m.group(0), self.entry(m.group(0))))
        return out


def _form_pattern(form: str) -> str:
    """Regex for a term form: words joined by spaces or hyphens ("self harm", "self-harm")."""
    words = [w for w in re.split(r"[\s-]+", form) if w]
    return r"[\s-]?".join(re.escape(w) for w in words) if "-" in form else r"[\s-]+".join(re.escape(w) for w in words)


@lru_cache(maxsize=1)
def _builtin_lexicon() -> RedteamLexicon:
    text = resources.files("t2iguard.redteam").joinpath("data/lexicon.yaml").read_text(encoding="utf-8")
    return RedteamLexicon.from_yaml(text)


def content_words(prompt: str, min_len: int = 4) -> list[Target]:
    """Words of at least ``min_len`` letters that are not stop words (the fallback targets)."""
    return [
        Target(m.start(), m.end(), m.group(0))
        for m in WORD_RE.finditer(prompt)
        if len(m.group(0)) >= min_len and m.group(0).lower() not in STOPWORDS
    ]


def replace_spans(prompt: str, replacements: Iterable[tuple[int, int, str]]) -> str:
    """Replace non-overlapping ``(start, end, text)`` spans of ``prompt``."""
    out, last = [], 0
    for start, end, text in sorted(replacements):
        if start < last:
            continue
        out.append(prompt[last:start])
        out.append(text)
        last = end
    out.append(prompt[last:])
    return "".join(out)


def match_case(source: str, replacement: str) -> str:
    """Give ``replacement`` the capitalisation style of ``source``."""
    if source.isupper() and len(source) > 1:
        return replacement.upper()
    if source[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def derive_rng(seed: int, *parts: str) -> random.Random:
    """A generator that depends only on ``seed`` and ``parts`` (stable across runs and processes)."""
    digest = hashlib.sha256("\x00".join([str(seed), *parts]).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class Variant:
    """An attacked prompt."""

    attack: str
    family: str
    seed_prompt: str
    prompt: str
    applied: bool
    details: dict[str, Any] = field(default_factory=dict)


class Attack(ABC):
    """A transformation of prompts. Subclasses set ``name``, ``family`` and implement
    :meth:`transform`; parameters are constructor keyword arguments."""

    name: ClassVar[str]
    family: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, lexicon: RedteamLexicon | None = None) -> None:
        self.lexicon = lexicon or RedteamLexicon.builtin()

    @property
    def label(self) -> str:
        return self.name

    def targets(self, prompt: str) -> list[Target]:
        """The unsafe terms of ``prompt``; every content word when the lexicon finds none."""
        return self.lexicon.find(prompt) or content_words(prompt)

    @abstractmethod
    def transform(self, prompt: str, rng: random.Random) -> str | None:
        """The attacked prompt, or ``None`` when the attack does not apply to ``prompt``."""

    def variant(self, prompt: str, seed: int = 0, index: int = 0) -> Variant:
        """The ``index``-th attacked form of ``prompt`` under ``seed`` (deterministic)."""
        rng = derive_rng(seed, self.label, str(index), prompt)
        out = self.transform(prompt, rng)
        applied = out is not None and out != prompt
        return Variant(self.label, self.family, prompt, out if out is not None else prompt, applied)

    def variants(self, prompt: str, seed: int = 0, n: int = 1) -> list[Variant]:
        return [self.variant(prompt, seed, i) for i in range(n)]


class Chain(Attack):
    """Attacks applied one after the other (``"euphemism+leetspeak"``)."""

    name: ClassVar[str] = "chain"
    family: ClassVar[str] = "composite"

    def __init__(self, attacks: Sequence[Attack]) -> None:
        if not attacks:
            raise ConfigurationError("a chain needs at least one attack")
        super().__init__(attacks[0].lexicon)
        self.attacks = list(attacks)

    @property
    def label(self) -> str:
        return "+".join(a.label for a in self.attacks)

    @property
    def chain_family(self) -> str:
        families = {a.family for a in self.attacks}
        return families.pop() if len(families) == 1 else "composite"

    def transform(self, prompt: str, rng: random.Random) -> str | None:
        current = prompt
        changed = False
        for attack in self.attacks:
            out = attack.transform(current, rng)
            if out is not None and out != current:
                current = out
                changed = True
        return current if changed else None

    def variant(self, prompt: str, seed: int = 0, index: int = 0) -> Variant:
        v = super().variant(prompt, seed, index)
        return Variant(v.attack, self.chain_family, v.seed_prompt, v.prompt, v.applied, v.details)
