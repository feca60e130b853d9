"""A shipped, editable gazetteer of public figures with fuzzy name matching.

The list (``data/public_figures.csv``) is written by hand for t2iguard — heads of state and
government, politicians, royalty, actors, musicians, media figures, athletes, business leaders,
religious leaders, historical figures, visual artists and directors, across countries (about 2,500
since 2026-12-05) — plus a ``fictional`` kind for characters that NER tags as people but that are
nobody's likeness. It is not derived from any evaluation data set. Users extend it with their own CSV/YAML files.

Matching, in order of confidence:

1. exact match of the folded name or an alias (case, diacritics, punctuation and spacing ignored,
   so ``XI JINPING``, ``Xi Jin-ping`` and ``Beyoncé`` match);
2. the same after ASCII transliteration (``Владимира Путина`` → ``vladimira putina``);
3. fuzzy match with bounded edit distance: Damerau-Levenshtein (OSA) distance 1 for keys of 5 to 9
   characters, and an indel similarity of at least ``fuzzy_cutoff`` (default 88 / 100) for longer
   ones (``Barak Obama``, ``Angela Merkle``, ``Volodimir Zelenskiy``).

Run ``python -m t2iguard.prompt.gazetteer validate FILE`` after editing a list.
"""

from __future__ import annotations

import csv
import io
import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from t2iguard.core.errors import ConfigurationError

KINDS: dict[str, str] = {
    "head_of_state": "a head of state",
    "head_of_government": "a head of government",
    "politician": "a politician",
    "royalty": "a royal",
    "actor": "an actor",
    "musician": "a musician",
    "media": "a media personality",
    "athlete": "an athlete",
    "business": "a business leader",
    "religious": "a religious leader",
    "historical": "a historical figure",
    "artist": "an artist",
    "fictional": "a fictional character",
}
"""Kinds of entries, with the neutral description used when a public figure is anonymized."""

POLITICAL_KINDS = frozenset({"head_of_state", "head_of_government", "politician", "royalty"})

_TITLES = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "miss",
        "mx",
        "dr",
        "prof",
        "sir",
        "dame",
        "lady",
        "lord",
        "president",
        "prime",
        "minister",
        "pm",
        "chancellor",
        "senator",
        "governor",
        "king",
        "queen",
        "prince",
        "princess",
        "emperor",
        "pope",
        "saint",
        "st",
        "sheikh",
        "ayatollah",
        "chairman",
        "general",
    ]
)
_SPLIT = re.compile(r"[\s\-‐‑–—_/]+")
_DROP = re.compile(r"[.'’`\"“”,()]")


def fold_name(text: str) -> str:
    """Lower-case, strip diacritics and punctuation, collapse spacing: the key names are matched on."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = "".join(c for c in unicodedata.normalize("NFD", t) if not unicodedata.combining(c))
    t = _DROP.sub("", t)
    t = re.sub(r"(\w)'s\b", r"\1", t)
    return " ".join(p for p in _SPLIT.split(t) if p)


_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv"})


def strip_titles(key: str) -> str:
    """Drop leading honorifics and a trailing possessive/suffix from a folded name."""
    parts = key.split()
    while len(parts) > 1 and parts[0] in _TITLES:
        parts = parts[1:]
    while len(parts) > 2 and parts[-1] in _SUFFIXES:
        parts = parts[:-1]  # "George W. Bush Jr": a generational suffix is no part of the key
    return " ".join(parts)


@lru_cache(maxsize=4096)
def transliterate(text: str) -> str:
    """ASCII transliteration (anyascii), with CJK syllables separated by spaces."""
    if text.isascii():
        return text
    from anyascii import anyascii

    out = []
    for ch in text:
        t = anyascii(ch)
        # CJK characters come back as capitalised syllables ("Xi", "Jin"): keep them apart
        if t and not ch.isascii() and unicodedata.category(ch) == "Lo" and len(t) > 0 and t[0].isupper():
            out.append(" " + t)
        else:
            out.append(t)
    return "".join(out)


@dataclass(frozen=True)
class PublicFigure:
    name: str
    kind: str
    country: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        return KINDS.get(self.kind, "a public figure")

    @property
    def real(self) -> bool:
        return self.kind != "fictional"


@dataclass(frozen=True)
class FigureMatch:
    """A name matched to a gazetteer entry: ``how`` is exact, alias, translit or fuzzy."""

    figure: PublicFigure
    matched: str
    how: str
    score: float
    distance: int = 0


@dataclass
class Gazetteer:
    """Public figures indexed by folded name and alias."""

    figures: list[PublicFigure] = field(default_factory=list)
    fuzzy_cutoff: float = 88.0

    def __post_init__(self) -> None:
        self._index: dict[str, tuple[PublicFigure, bool]] = {}
        self._squashed: dict[str, str] = {}
        for fig in self.figures:
            self._add(fig.name, fig, False)
            for a in fig.aliases:
                self._add(a, fig, True)
        self._keys = [k for k in self._index if k.isascii()]
        self._single = frozenset(k for k in self._index if " " not in k)
        self.max_tokens = max((len(k.split()) for k in self._index), default=1)
        self._first_last: dict[tuple[str, str], list[str]] = {}
        for k, (_fig, alias) in self._index.items():
            w = k.split()
            if len(w) >= 3 and not alias:
                self._first_last.setdefault((w[0], w[-1]), []).append(k)

    def _add(self, name: str, fig: PublicFigure, alias: bool) -> None:
        key = fold_name(name)
        if not key:
            return
        prev = self._index.get(key)
        if prev is not None and prev[0] is not fig:
            # an alias never shadows another entry's full name; two aliases collide -> drop both
            if alias and not prev[1]:
                return
            if not alias and prev[1]:
                self._index[key] = (fig, alias)
                return
        self._index[key] = (fig, alias)
        self._squashed.setdefault(key.replace(" ", ""), key)

    def __len__(self) -> int:
        return len(self.figures)

    def __contains__(self, key: str) -> bool:
        return fold_name(key) in self._index

    def exact(self, key: str, *, squashed: bool = True) -> tuple[PublicFigure, bool] | None:
        """Entry for an already-folded key (name or alias); with ``squashed``, also written with other
        spacing ("Xi Jin-ping" for "Xi Jinping")."""
        hit = self._index.get(key)
        if hit is None and squashed:
            spaced = self._squashed.get(key.replace(" ", ""))
            hit = self._index.get(spaced) if spaced else None
        return hit

    def match(self, name: str, *, fuzzy: bool = True) -> FigureMatch | None:
        """Match a person name (as written in the prompt) to an entry."""
        full = fold_name(name)
        key = strip_titles(full)
        if not key:
            return None
        hit = self.exact(full) or self.exact(key)  # "Lady Gaga", "Pope Francis" before "Mr. Trump"
        if hit is not None:
            return FigureMatch(hit[0], key, "alias" if hit[1] else "exact", 1.0)
        ascii_key = key
        if not key.isascii():
            ascii_key = strip_titles(fold_name(transliterate(name)))
            hit = self.exact(ascii_key)
            if hit is not None:
                return FigureMatch(hit[0], ascii_key, "translit", 0.97)
        parts = ascii_key.split()
        if len(parts) == 2:
            # first and last name of a longer entry ("Recep Erdogan" for "Recep Tayyip Erdogan")
            for k in self._first_last.get((parts[0], parts[1]), ()):
                return FigureMatch(self._index[k][0], k, "first_last", 0.95)
        if not fuzzy:
            return None
        found = self._fuzzy(ascii_key, transliterated=ascii_key != key)
        if found is None and full != key and full.isascii():
            found = self._fuzzy(full, transliterated=False)  # "Queen Elizbeth": the title is part of the alias
        if found is None and len(parts) >= 3:
            # a middle name the entry lacks, misspelled or not ("Barrack Hussein Obama")
            found = self.match(f"{parts[0]} {parts[-1]}")
        return found

    def _fuzzy(self, key: str, *, transliterated: bool) -> FigureMatch | None:
        n = len(key.replace(" ", ""))
        if n < 5:
            return None
        if n < 10 and " " not in key:
            # short single words: one edit (incl. a transposition) at most, same first letter
            best: tuple[str, int] | None = None
            for k in self._single:
                if abs(len(k) - len(key)) > 1 or k[0] != key[0] or len(k) < 5:
                    continue
                d = OSA.distance(key, k, score_cutoff=1)
                if d <= 1 and (best is None or d < best[1]):
                    best = (k, d)
            if best is None:
                return None
            fig = self._index[best[0]][0]
            return FigureMatch(fig, best[0], "fuzzy", 0.9, distance=best[1])
        # longer names tolerate one more edit: 85 for 16+ letters with the default cutoff of 88
        cutoff = self.fuzzy_cutoff - (3.0 if n >= 16 else 0.0) - (3.0 if transliterated else 0.0)
        found = process.extractOne(key, self._keys, scorer=fuzz.ratio, score_cutoff=cutoff)
        if found is None:
            return None
        k, score, _ = found
        # multi-word names must agree on the number of words and on each word's first letter
        kw, qw = k.split(), key.split()
        mismatch = len(kw) != len(qw) or any(a[0] != b[0] for a, b in zip(kw, qw, strict=True))
        if mismatch and not transliterated:
            return None
        fig = self._index[k][0]
        return FigureMatch(fig, k, "fuzzy", round(score / 100.0, 4), distance=int(OSA.distance(key, k)))

    def is_single_key(self, key: str) -> bool:
        return key in self._single

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def builtin(cls) -> Gazetteer:
        return cls(load_figures(builtin_path()))

    @classmethod
    def load(cls, sources: Iterable[str], *, fuzzy_cutoff: float = 88.0) -> Gazetteer:
        figures: list[PublicFigure] = []
        for src in sources:
            figures += load_figures(builtin_path() if src == "builtin" else Path(src))
        return cls(figures, fuzzy_cutoff=fuzzy_cutoff)


def name_words(figures: Iterable[PublicFigure] | None = None) -> frozenset[str]:
    """Every word of the figures' names and aliases, folded ("cena", "rutkowski"): words that a
    spelling corrector must leave alone."""
    figs = load_figures(builtin_path()) if figures is None else figures
    out: set[str] = set()
    for f in figs:
        for n in (f.name, *f.aliases):
            out.update(w for w in fold_name(n).split() if w.isalpha())
    return frozenset(out)


def builtin_path() -> Path:
    return Path(str(resources.files("t2iguard.prompt").joinpath("data/public_figures.csv")))


def _split_aliases(raw: str | Sequence[str] | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return tuple(a.strip() for a in raw.split(";") if a.strip())
    return tuple(str(a).strip() for a in raw if str(a).strip())


def load_figures(path: Path) -> list[PublicFigure]:
    """Read a gazetteer file: CSV (name,kind,country,aliases; '#' comments) or YAML (a list of
    mappings with the same keys)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read gazetteer {path}: {exc}") from None
    rows: list[dict[str, object]]
    if path.suffix.lower() in (".yaml", ".yml"):
        data = yaml.safe_load(text) or []
        if isinstance(data, dict):
            data = data.get("figures", [])
        if not isinstance(data, list):
            raise ConfigurationError(f"gazetteer {path}: expected a list of entries")
        rows = [r for r in data if isinstance(r, dict)]
    else:
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    out: list[PublicFigure] = []
    for i, row in enumerate(rows):
        name = str(row.get("name") or "").strip()
        kind = str(row.get("kind") or "").strip()
        if not name or kind not in KINDS:
            raise ConfigurationError(
                f"gazetteer {path}: entry {i + 1} ({name!r}) needs a name and a kind in {sorted(KINDS)}"
            )
        aliases = row.get("aliases")
        out.append(
            PublicFigure(
                name=name,
                kind=kind,
                country=str(row.get("country") or "").strip(),
                aliases=_split_aliases(aliases if isinstance(aliases, str | list) else None),
            )
        )
    return out


def validate(path: Path) -> list[str]:
    """Problems in a gazetteer file: duplicate names, aliases shared by two people, aliases too
    short to match safely, empty names."""
    problems: list[str] = []
    figures = load_figures(path)
    seen: dict[str, str] = {}
    for fig in figures:
        for label, raw in [("name", fig.name), *(("alias", a) for a in fig.aliases)]:
            key = fold_name(raw)
            if len(key.replace(" ", "")) < 2:
                problems.append(f"{fig.name}: {label} {raw!r} is too short to match safely")
                continue
            other = seen.get(key)
            if other is not None and other != fig.name:
                problems.append(f"{fig.name}: {label} {raw!r} is also used by {other}")
            seen.setdefault(key, fig.name)
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 1 or args[0] != "validate":
        print("usage: python -m t2iguard.prompt.gazetteer validate [FILE ...]", file=sys.stderr)
        return 2
    paths = [Path(a) for a in args[1:]] or [builtin_path()]
    bad = 0
    for p in paths:
        figures = load_figures(p)
        problems = validate(p)
        kinds: dict[str, int] = {}
        for f in figures:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        print(f"{p}: {len(figures)} entries; " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        for prob in problems:
            print(f"  - {prob}")
        bad += len(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
