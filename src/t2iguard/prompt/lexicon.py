"""Lexicons: per-category term lists, allow phrases, patterns and escalation rules.

The built-in lexicons live in ``t2iguard/prompt/lexicons/*.yaml`` (English) and
``t2iguard/prompt/lexicons/multilingual/<language>/*.yaml`` (other languages; see the README there);
operators add their own files in the same format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from t2iguard.core.errors import ConfigurationError
from t2iguard.core.types import Category

STRONG = 1.0
WEAK = 0.5


@dataclass(frozen=True)
class Term:
    category: Category | None  # None: an allow phrase for every category
    phrase: str
    weight: float
    kind: str  # "strong" | "weak" | "allow"
    source: str = "builtin"
    fuzzy: bool = True  # False: exact (leetspeak/homoglyph-aware) matches only, no typo or mask matches

    @property
    def builtin(self) -> bool:
        return self.source.startswith("builtin")


@dataclass(frozen=True)
class PatternRule:
    category: Category
    name: str
    regex: re.Pattern[str]
    score: float


@dataclass(frozen=True)
class Escalation:
    category: Category
    with_category: Category
    min: float
    score: float


@dataclass
class Lexicon:
    """Terms, allow phrases, patterns and escalation rules of one or more categories."""

    terms: list[Term] = field(default_factory=list)
    patterns: list[PatternRule] = field(default_factory=list)
    escalations: list[Escalation] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def extend(self, other: Lexicon) -> None:
        self.terms += other.terms
        self.patterns += other.patterns
        self.escalations += other.escalations
        self.sources += other.sources

    def words(self) -> set[str]:
        """Every single word appearing in a term (to extend the normalizer's vocabulary)."""
        out: set[str] = set()
        for t in self.terms:
            out.update(re.findall(r"[^\W\d_]+", t.phrase.lower()))
        return out

    @classmethod
    def from_mapping(cls, data: Any, source: str) -> Lexicon:
        if not isinstance(data, dict) or "category" not in data:
            raise ConfigurationError(f"lexicon {source}: expected a mapping with a 'category' key")
        known = {"category", "description", "strong", "weak", "allow", "patterns", "escalate", "source", "fuzzy"}
        unknown = set(data) - known
        if unknown:
            raise ConfigurationError(f"lexicon {source}: unknown keys {sorted(unknown)}")
        fuzzy = data.get("fuzzy", True)
        if not isinstance(fuzzy, bool):
            raise ConfigurationError(f"lexicon {source}: 'fuzzy' must be true or false, not {fuzzy!r}")
        if data["category"] == "any":
            extra = [k for k in ("strong", "weak", "patterns", "escalate") if data.get(k)]
            if extra:
                raise ConfigurationError(f"lexicon {source}: category 'any' may only hold 'allow' phrases")
            lex = cls(sources=[source])
            for item in data.get("allow") or []:
                phrase = str(item).strip().lower()
                if phrase:
                    lex.terms.append(Term(None, phrase, 0.0, "allow", source, fuzzy))
            return lex
        try:
            category = Category(data["category"])
        except ValueError:
            raise ConfigurationError(
                f"lexicon {source}: unknown category {data['category']!r}; "
                f"known: {', '.join(c.value for c in Category)}"
            ) from None
        lex = cls(sources=[source])
        for kind, weight in (("strong", STRONG), ("weak", WEAK), ("allow", 0.0)):
            items = data.get(kind) or []
            if not isinstance(items, list):
                raise ConfigurationError(f"lexicon {source}: '{kind}' must be a list")
            for item in items:
                phrase = str(item).strip().lower()  # YAML reads "1488" as a number
                if phrase:
                    lex.terms.append(Term(category, phrase, weight, kind, source, fuzzy))
        for p in data.get("patterns") or []:
            try:
                rx = re.compile(str(p["regex"]), re.IGNORECASE)
            except (KeyError, TypeError, re.error) as exc:
                raise ConfigurationError(f"lexicon {source}: bad pattern {p!r}: {exc}") from None
            lex.patterns.append(PatternRule(category, str(p.get("name", p["regex"])), rx, float(p.get("score", WEAK))))
        for e in data.get("escalate") or []:
            try:
                lex.escalations.append(
                    Escalation(category, Category(e["with"]), float(e.get("min", WEAK)), float(e["score"]))
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigurationError(f"lexicon {source}: bad escalate rule {e!r}: {exc}") from None
        return lex

    @classmethod
    def load(cls, path: str | Path, *, source: str | None = None) -> Lexicon:
        """Load a lexicon file, or every ``*.yaml`` file of a directory."""
        p = Path(path)
        if p.is_dir():
            lex = cls()
            files = sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml"))
            if not files:
                raise ConfigurationError(f"lexicon directory {p} has no .yaml files")
            for f in files:
                lex.extend(cls.load(f, source=f"{source}:{f.stem}" if source else None))
            return lex
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"lexicon file not found: {p}") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"cannot read lexicon {p}: {exc}") from None
        return cls.from_mapping(data, source or str(p))

    @classmethod
    def builtin(cls) -> Lexicon:
        """The lexicons shipped with t2iguard (``t2iguard/prompt/lexicons``)."""
        return cls.load(Path(str(resources.files("t2iguard.prompt").joinpath("lexicons"))), source="builtin")

    @classmethod
    def multilingual(cls, languages: Iterable[str] | None = None) -> Lexicon:
        """The shipped lexicons of other languages (``t2iguard/prompt/lexicons/multilingual/<code>``),
        all of them or those of ``languages`` (ISO 639-1 codes). Their words stay out of the
        normalizer's English vocabulary and spelling corrector."""
        shipped = multilingual_languages()
        wanted = list(shipped) if languages is None else list(languages)
        unknown = [code for code in wanted if code not in shipped]
        if unknown:
            raise ConfigurationError(
                f"no built-in lexicon for language(s) {', '.join(unknown)}; shipped: {', '.join(shipped)}"
            )
        lex = cls()
        for code in wanted:
            lex.extend(cls.load(_multilingual_root() / code, source=f"multilingual:{code}"))
        return lex


def _multilingual_root() -> Path:
    return Path(str(resources.files("t2iguard.prompt").joinpath("lexicons", "multilingual")))


def multilingual_languages() -> tuple[str, ...]:
    """The language codes of the shipped non-English lexicons."""
    root = _multilingual_root()
    return tuple(sorted(p.name for p in root.iterdir() if p.is_dir())) if root.is_dir() else ()
