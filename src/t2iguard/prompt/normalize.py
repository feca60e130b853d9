"""Canonical forms of a prompt against obfuscation, with a map back to the original.

Attackers hide unsafe words from keyword filters with Unicode tricks and spelling games (the
character-level attacks of SneakyPrompt, Yang et al., IEEE S&P 2024, and the MMA-Diffusion and
Ring-A-Bell prompt sets). :class:`Normalizer` undoes them:

* Unicode NFKC (full-width forms, mathematical alphanumerics, ligatures, circled letters),
* homoglyph folding with the Unicode confusables table (Cyrillic ``а`` → ``a``),
* removal of zero-width, format, control and combining characters; diacritics stripped,
* leetspeak (``n4k3d``, ``k1ll``, ``$ex``) inside words that contain letters,
* separators inside words (``s u i c i d e``, ``n.a.k.e.d``, ``n-a-k-e-d``, ``n_a_k_e_d``),
* repeated letters (``naaaaked``), matched by run length so that ``as`` never matches ``ass``,
* typos (``nakde``, ``suicde``) in the classifiers' text only: a word outside the vocabulary is
  replaced by its spelling correction (:mod:`t2iguard.prompt.spelling`); keyword matching keeps
  its own fuzzy matching on the word as written.

The result keeps the original text for display, a canonical text for classifiers, and for every
word the index of each character in the original, so evidence can point at what the user wrote.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from typing import ClassVar

from t2iguard.core.decision import StageResult
from t2iguard.core.stage import ModelCache, PromptContext, PromptStage
from t2iguard.core.types import Phase
from t2iguard.prompt.spelling import SpellCorrector, typo_distance
from t2iguard.prompt.vocabulary import Vocabulary, extra_english_words

# Leetspeak: what a digit or symbol stands for inside a word that also has letters.
LEET: dict[str, str] = {
    "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g",
    "@": "a", "$": "s", "!": "i", "|": "i", "+": "t", "€": "e", "£": "l", "¢": "c",
}  # fmt: skip
# Characters that may stand for either of two letters; canonical decoding tries both.
LEET_AMBIGUOUS: dict[str, str] = {"1": "il", "|": "il", "!": "il", "£": "l"}
# In the matching skeleton, letters that obfuscation makes interchangeable share one symbol.
SKELETON_LETTERS: dict[str, str] = {"l": "i"}
# Symbols that can be part of a word anywhere ("$ex", "@ss") and only between letters ("k!ll").
_WORD_SYMBOLS = "@$€£¢"
_INNER_SYMBOLS = "!|+"
# Separators that may split a word ("n.a.k.e.d"); masks hide one letter ("p*rn").
SEPARATORS = frozenset(".-_*~·•/\\:;,'`^=\"#%&()[]{}<>")
MASKS = frozenset("*#%")
_MAX_JOIN_GAP = 3
_PHRASE_MARKS = frozenset('"`()[]{}<>')
_MAX_AMBIGUOUS = 4

_PIECE_RE = re.compile(
    rf"(?:[^\W_]|[{re.escape(_WORD_SYMBOLS)}]"
    rf"|(?<=[^\W_]|[{re.escape(_WORD_SYMBOLS)}])[{re.escape(_INNER_SYMBOLS)}](?=[^\W_]|[{re.escape(_WORD_SYMBOLS)}])"
    # "!" or "|" for a first "i"/"l" ("!tem$", "|amp"): read as a letter only when a word follows
    rf"|(?<![^\W_])[!|](?=[^\W_]{{2}}))+"
)
_RUN3_RE = re.compile(r"(.)\1{2,}")

# Letters with no Unicode decomposition that obfuscators use as letters.
_EXTRA_FOLDS: dict[str, str] = {}
for _i in range(26):
    _EXTRA_FOLDS[chr(0x1F1E6 + _i)] = chr(ord("a") + _i)  # regional indicators 🇦..🇿
    _EXTRA_FOLDS[chr(0x1F150 + _i)] = chr(ord("a") + _i)  # negative circled 🅐..🅩
    _EXTRA_FOLDS[chr(0x1F170 + _i)] = chr(ord("a") + _i)  # negative squared 🅰..🆉
_EXTRA_FOLDS.update({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ł": "l", "ı": "i"})
# Letters that look Latin but that Unicode's confusables table maps elsewhere (or not at all).
_LOOKALIKES: dict[str, str] = {
    # Greek
    "α": "a", "β": "b", "γ": "y", "δ": "d", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v",
    "ο": "o", "π": "n", "ρ": "p", "σ": "o", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c",
    # Cyrillic
    "в": "b", "г": "r", "д": "d", "и": "u", "к": "k", "л": "n", "м": "m", "н": "h", "п": "n", "т": "t",
    "ш": "w", "ь": "b", "ѵ": "v", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    # Latin small capitals and IPA letters
    "ɑ": "a", "ɡ": "g", "ʀ": "r", "ᴋ": "k", "ᴇ": "e", "ɴ": "n", "ᴍ": "m", "ᴛ": "t", "ᴜ": "u", "ʏ": "y",
}  # fmt: skip
# "LATIN LETTER SMALL CAPITAL N" (ɴ): small capitals have no decomposition to fold through.
_SMALL_CAPITAL_RE = re.compile(r"^(?:LATIN LETTER|MODIFIER LETTER) SMALL CAPITAL ([A-Z])$")
_PARENTHESIZED_RE = re.compile(r"^PARENTHESIZED LATIN SMALL LETTER ([A-Z])$")
_APOSTROPHES = ("'", "\u2019")
# a word of letters joined by hyphens or apostrophes ("stand-up", "woman's")
_COMPOUND_RE = re.compile(r"[^\W\d_]+(?:[-'\u2019][^\W\d_]+)+")
_COMPOUND_SPLIT_RE = re.compile(r"([-'\u2019])")
# Single letters spelled out with one symbol that is otherwise read as leetspeak ("n+u+d+e", "n|u|d|e").
_SPELLED_RE = re.compile(rf"^[^\W_](?P<sep>[{re.escape(_INNER_SYMBOLS)}])[^\W_](?:(?P=sep)[^\W_])+$")

_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Co", "Cn", "Cs"})
# Separators that split a word in obfuscation but never join two words in ordinary writing (unlike
# "-", "/", ".", "," or "'"): a word split by them is one word even when it is not in the list.
_IN_WORD_SEPARATORS = frozenset("_*~·•:^#%")
# "(word:1.3)", "(bare skin : -1.5)": the weight syntax of AUTOMATIC1111 and ComfyUI prompts
_WEIGHT_RE = re.compile(r"\(([^():]+):\s*([-\u2212]?\s*\d+(?:\.\d+)?|[-\u2212]?\s*\.\d+)\s*\)")
_MAX_WEIGHT = 5.0
_NUMBER_RE = re.compile(r"\d+(?:st|nd|rd|th|s|am|pm|k|p|mm|cm|m|km|kg|px|x|d|fps|hz|gb|mb)")
_INNER_SEPARATOR_RE = re.compile(r"(?<=[^\W\d_])[|+](?=[^\W\d_])")
# Leetspeak for a word the list lacks: a symbol that stands for a letter, or a digit between letters
# ("k4w4se"); digits only at an end ("covid19", "1080p", "h264") are part of the name.
_LEET_SYMBOL_RE = re.compile(r"[@$€£¢!|+]|[^\W\d_]\d+[^\W\d_]")
# where a prompt breaks into sentences for NormalizedText.segments: where . ! ? ; is followed by a space, and at |
# (normalized text has no line breaks; they count too where a text keeps them)
_SENTENCE_BREAK = re.compile(r"(?<=[.!?;])\s+|\s*[|\n\r]+\s*")
# the fewest words a part of NormalizedText.segments has (shorter sentences join a neighbour)
MIN_PART_WORDS = 3


def _clauses(words: list[str]) -> list[list[str]]:
    """``words`` cut after each word that ends with a comma."""
    out: list[list[str]] = [[]]
    for w in words:
        out[-1].append(w)
        if w.endswith(","):
            out.append([])
    return [c for c in out if c]


def _windows(words: list[str], size: int) -> list[str]:
    """Half-overlapping windows of ``size`` words, the last one ending with the text."""
    stride = max(1, size // 2)
    starts = list(range(0, len(words) - size + 1, stride))
    if starts[-1] + size < len(words):
        starts.append(len(words) - size)
    return [" ".join(words[s : s + size]) for s in starts]


def _read_weights(folded: str, src: list[int], plain: str, applied: set[str]) -> tuple[str, list[int], str]:
    """Read the prompt-weighting syntax of common UIs (``(word:1.3)``, AUTOMATIC1111/ComfyUI) as text:
    a weight emphasises, so ``(red:1.3)`` is "red"; a negative weight steers the image away from a
    concept, so ``(clothes:-1.5)`` is "without clothes". Concept arithmetic (Petsiuk & Saenko, ECCV
    2024) composes a forbidden image from such negated concepts. The inserted "without " maps to
    the opening parenthesis in the original prompt."""
    runs: list[tuple[str, str, list[int]]] = []  # (folded, plain, src) runs of the rewritten text

    def keep(start: int, end: int) -> None:
        runs.append((folded[start:end], plain[start:end], src[start:end]))

    last = 0
    for m in _WEIGHT_RE.finditer(folded):
        inner = m.group(1)
        weight = float(m.group(2).replace(" ", "").replace("\u2212", "-"))
        if not any(c.isalpha() for c in inner) or abs(weight) > _MAX_WEIGHT:
            continue  # "(16:9)", "(scene 2:30)": a ratio or a time, not a weight
        keep(last, m.start())
        if weight < 0:
            runs.append(("without ", "without ", [src[m.start()]] * len("without ")))
            applied.add("negative-weight")
        else:
            applied.add("weight")
        keep(m.start(1) + len(inner) - len(inner.lstrip()), m.end(1) - (len(inner) - len(inner.rstrip())))
        last = m.end()
    if not runs:
        return folded, src, plain
    keep(last, len(folded))
    return "".join(r[0] for r in runs), [i for r in runs for i in r[2]], "".join(r[1] for r in runs)


def _split_word(w: Word) -> bool:
    """Whether a joined word was split on purpose: by a symbol no word contains, or spelled out
    letter by letter (three letters or more), or cut by ``.``, ``/`` or ``,`` into fragments that are
    not all words of their own."""
    if any(c in _IN_WORD_SEPARATORS or c in _INNER_SYMBOLS for g in w.gaps for c in g):
        return True
    cuts = sorted(w.bounds)
    pieces = [w.text[a:b] for a, b in itertools.pairwise(cuts)]
    if len(pieces) >= 3 and all(len(p) == 1 for p in pieces):
        return True
    return any(g.strip() in (".", "/", ",") for g in w.gaps) and all(len(p) >= 2 for p in pieces)


def _leet_shaped(text: str) -> bool:
    """Whether a token could be a leetspeak word: five characters or more ("c3po", "r2d2" are short
    letter-digit names), at least half of them letters, nothing but letters and leetspeak."""
    letters = sum(c.isalpha() for c in text)
    return len(text) >= 5 and 2 * letters >= len(text) and all(c.isalpha() or c in LEET for c in text)


def _looks_leet(text: str) -> bool:
    """Whether an out-of-vocabulary token is leetspeak: leetspeak-shaped, with a letter-symbol or a
    letter-digit-letter mix."""
    return _leet_shaped(text) and _LEET_SYMBOL_RE.search(text) is not None


@lru_cache(maxsize=1)
def _confusables() -> dict[str, str]:
    """Non-ASCII character -> the ASCII letter/digit it looks like (Unicode confusables.txt,
    via the data file of the ``confusable_homoglyphs`` package)."""
    ref = resources.files("confusable_homoglyphs").joinpath("confusables.json")
    data: dict[str, list[dict[str, str]]] = json.loads(ref.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    # Letters first, so a glyph confusable with both "l" and "1" folds to the letter.
    keys = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    keys += [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    keys += [chr(c) for c in range(ord("0"), ord("9") + 1)]
    for key in keys:
        for entry in data.get(key, ()):
            glyph = entry.get("c", "")
            if len(glyph) == 1 and not glyph.isascii() and glyph not in out:
                out[glyph] = key.lower()
    return out


@dataclass(frozen=True)
class Word:
    """A word of the prompt after folding: pieces joined across in-word separators.

    ``text`` is lower-case and folded; ``skeleton`` additionally decodes leetspeak and merges
    interchangeable letters (the form the blocklist matches); ``src[i]`` is the index in the
    original prompt of ``text[i]``; ``bounds`` are the positions in ``text`` where one of the
    joined pieces starts or ends.
    """

    text: str
    skeleton: str
    src: tuple[int, ...]
    bounds: frozenset[int]
    canonical: str
    joined: bool = False
    masked: tuple[tuple[int, int], ...] = ()  # (position in text, number of mask characters)
    gaps: tuple[str, ...] = ()
    corrected: str | None = None  # spelling correction of ``canonical`` (a word outside the vocabulary)
    # a lower-case word of letters that is no word at all: outside the vocabulary, no known name,
    # no spelling correction (``xqvorlump``); see NormalizedText.obfuscation
    unknown: bool = False

    @property
    def soup(self) -> bool:
        """Whether this is a non-word of four letters or more: a piece of the sub-word soup that
        ``gibberish`` counts (NormalizedText.obfuscation)."""
        return self.unknown and len(self.canonical) >= 4

    @property
    def start(self) -> int:
        return self.src[0]

    @property
    def end(self) -> int:
        return self.src[-1] + 1


@dataclass(frozen=True)
class NormalizedText:
    """A prompt's canonical forms and how they map back to the original."""

    original: str
    text: str
    words: tuple[Word, ...]
    applied: frozenset[str] = field(default_factory=frozenset)

    def source(self, word_index: int, start: int = 0, end: int | None = None) -> tuple[int, int]:
        """Original (start, end) span of ``words[word_index].text[start:end]``."""
        w = self.words[word_index]
        stop = len(w.text) if end is None else end
        return w.src[start], w.src[stop - 1] + 1

    def excerpt(self, start: int, end: int) -> str:
        return self.original[start:end]

    @property
    def changed(self) -> bool:
        return bool(self.applied)

    def obfuscation(self, min_corrections: int = 2, min_gibberish: int = 3) -> dict[str, int]:
        """Evidence that the prompt was disguised, kind -> number of words (no kinds: none).

        Only forms that honest prompts rarely take count: letters swapped for look-alikes
        (``homoglyph``, ``fullwidth``) or hidden characters (``invisible``); ``leetspeak`` with a
        symbol or a digit between letters (``n4k3d``, ``$ex``; not ``4k`` or ``1950s``); a word of four
        letters or more split by ``separator`` characters (``n.a.k.e.d``, ``s u i c i d e``, ``shee•ran``,
        ``pa/inting``; not ``close-up``, ``U.S`` or ``they/them``); and ``misspelling`` when at least
        ``min_corrections`` words needed a spelling correction (one typo is common, a prompt full of
        them is not); and ``gibberish`` when at least ``min_gibberish`` lower-case words of four letters
        or more are no word at all (:attr:`Word.unknown`) and make up at least a sixth of the
        prompt's words: the sub-word soup that attacks optimised against a text encoder leave
        (MMA-Diffusion, Yang et al., CVPR 2024; Ring-A-Bell, Tsai et al., ICLR 2024), the
        word-level analogue of a perplexity filter (Jain et al., 2023, "Baseline defenses for
        adversarial attacks against aligned language models").
        """
        out: dict[str, int] = {k: 1 for k in ("homoglyph", "fullwidth", "invisible") if k in self.applied}
        leet = split = typos = 0
        for w in self.words:
            typos += w.corrected is not None
            letters = w.canonical.replace(" ", "")  # spelled-out letters may read as several words
            if not letters.isalpha():
                continue
            if letters != w.text and _LEET_SYMBOL_RE.search(w.text):
                leet += 1
            if w.joined and max(map(len, w.canonical.split())) >= 4 and _split_word(w):
                split += 1
        if leet:
            out["leetspeak"] = leet
        if split:
            out["separator"] = split
        if typos >= min_corrections:
            out["misspelling"] = typos
        words = [w for w in self.words if w.canonical.isalpha() and len(w.canonical) >= 2]
        soup = sum(w.soup for w in words)
        if soup >= min_gibberish and soup * 6 >= len(words):
            out["gibberish"] = soup
        return out

    def without_gibberish(self) -> str:
        """``text`` with its non-words (:attr:`Word.soup`) taken out: what the readable words of a
        prompt in gibberish disguise say. A mean-pooled sentence encoder dilutes a few unsafe words
        among many sub-word tokens (MMA-Diffusion, Yang et al., CVPR 2024), so a classifier may read
        this view as well as the whole text (``PromptClassifierStage``'s ``gibberish_view``)."""
        cuts: list[tuple[int, int]] = []
        cursor = 0
        for w in self.words:
            # each word's canonical form (or correction) stands in ``text`` in order, between non-letters
            m = re.compile(rf"(?<![^\W\d_]){re.escape(w.corrected or w.canonical)}(?![^\W\d_])").search(
                self.text, cursor
            )
            if m is None:
                continue
            cursor = m.end()
            if w.soup:
                cuts.append(m.span())
        if not cuts:
            return self.text
        kept: list[str] = []
        last = 0
        for start, end in cuts:
            kept.append(self.text[last:start])
            last = end
        kept.append(self.text[last:])
        return re.sub(r" ([,.;:!?])", r"\1", " ".join("".join(kept).split()))

    def segments(self, max_words: int) -> list[str]:
        """The parts of ``text`` a classifier may read on their own. A mean-pooled sentence embedding
        of a long prompt is dominated by its majority, so a few unsafe words padded with benign ones
        (a dilution attack) read as benign; each part alone does not.

        The parts are the sentences (split where ``. ! ? ;`` is followed by a space, and at ``|``);
        a sentence of fewer than :data:`MIN_PART_WORDS` words joins the one before it (or after it),
        and one without a letter is dropped. A sentence longer than ``max_words`` words is cut at its
        commas into runs of whole clauses of up to ``max_words`` words; a clause longer than that
        into half-overlapping windows of ``max_words`` words. Empty when the text is one part."""
        if max_words < MIN_PART_WORDS:
            raise ValueError(f"max_words must be at least {MIN_PART_WORDS}, got {max_words}")
        sentences: list[list[str]] = []
        for sentence in _SENTENCE_BREAK.split(self.text):
            words = sentence.split()
            if not any(ch.isalpha() for ch in sentence):
                continue
            if sentences and (len(words) < MIN_PART_WORDS or len(sentences[-1]) < MIN_PART_WORDS):
                sentences[-1].extend(words)  # a short sentence reads with its neighbour
            else:
                sentences.append(words)
        parts: list[str] = []
        for words in sentences:
            if len(words) <= max_words:
                parts.append(" ".join(words))
                continue
            run: list[str] = []
            for clause in _clauses(words):
                if run and len(run) + len(clause) > max_words:
                    parts.append(" ".join(run))
                    run = []
                if len(clause) > max_words:
                    parts.extend(_windows(clause, max_words))
                else:
                    run.extend(clause)
            if run:
                parts.append(" ".join(run))
        parts = list(dict.fromkeys(parts))
        return parts if len(parts) > 1 else []

    def readable(self) -> tuple[str, list[int]]:
        """The prompt with its obfuscations undone but its case kept, for a named-entity recogniser
        (which keys on capitals and reads "ho~rse stan,ding" as a name): each word that normalization
        changed is replaced by its canonical form (not the spelling correction: names are no typos),
        capitalised as the user wrote it; invisible characters between words are dropped.

        Returns (text, index in ``original`` of each character of the text)."""
        original = self.original
        if not self.applied and original.isascii() and original.isprintable():
            return original, list(range(len(original)))
        out: list[str] = []
        src: list[int] = []
        cursor = 0
        for w in self.words:
            _readable_gap(original, cursor, w.start, out, src)
            raw = original[w.start : w.end]
            plain_ascii = raw.isascii() and raw.isprintable()
            if plain_ascii and (
                raw.lower() == w.canonical
                # one natural in-word mark ("John's", "well-known") is punctuation, not obfuscation
                or (len(w.gaps) == 1 and w.gaps[0] in ("'", "-") and raw.lower().replace(w.gaps[0], "") == w.canonical)
            ):
                out.append(raw)
                src.extend(range(w.start, w.end))
            elif len(w.canonical.replace(" ", "")) == len(w.text):
                # letter for letter (decoded, joined, perhaps split into words): each letter takes
                # the case and the position of the character it came from
                k = 0
                letters = [c for c in raw if c.isalpha()]
                shout = len(letters) > 1 and all(c.isupper() for c in letters)  # "PH0T0"
                for ch in w.canonical:
                    i = w.src[min(k, len(w.src) - 1)]
                    if ch == " ":
                        out.append(" ")
                    else:
                        upper = original[i].isupper() if original[i].isalpha() else shout
                        out.append(ch.upper() if upper else ch)
                        k += 1
                    src.append(i)
            else:
                form = _recase(w.canonical, raw)
                n = len(form)
                out.append(form)
                src.extend(w.src[-1] if k == n - 1 else w.src[min(k, len(w.src) - 1)] for k in range(n))
            cursor = w.end
        _readable_gap(original, cursor, len(original), out, src)
        return "".join(out), src


class Normalizer:
    """Computes :class:`NormalizedText`. Stateless apart from caches; safe to share.

    ``vocabulary`` lets the canonical form decode leetspeak, join spelled-out letters and collapse
    repeats only where that yields a real word (so ``4k wallpaper`` stays as written).
    """

    def __init__(
        self,
        vocabulary: Vocabulary | None = None,
        extra_words: Iterable[str] = (),
        speller: SpellCorrector | None = None,
        keep: Iterable[str] = (),
    ) -> None:
        self.vocabulary = vocabulary.with_words(extra_words) if vocabulary else None
        self.speller = speller if vocabulary is not None else None
        self.keep = frozenset(w.lower() for w in keep)  # never spell-corrected (names)
        self._fold = lru_cache(maxsize=65536)(self._fold_char)

    # ---- character folding -------------------------------------------------------------
    @staticmethod
    def _fold_char(c: str) -> tuple[str, str, str]:
        """Fold one non-ASCII character.

        Returns (replacement, class applied or '', plain) where ``plain`` is the replacement
        without homoglyph folding (same length), used to keep genuine non-Latin words readable.
        """
        if c in _EXTRA_FOLDS:
            return _EXTRA_FOLDS[c], "homoglyph", _EXTRA_FOLDS[c]
        parenthesized = _PARENTHESIZED_RE.match(unicodedata.name(c, ""))
        if parenthesized:  # "⒩" is "(n)" under NFKC: the letter without its parentheses
            letter = parenthesized.group(1).lower()
            return letter, "nfkc", letter
        cat = unicodedata.category(c)
        if cat in _INVISIBLE_CATEGORIES:
            return "", "invisible", ""
        if cat in ("Mn", "Me"):
            return "", "combining", ""
        if cat.startswith("Z"):
            return " ", "whitespace", " "
        small_cap = _SMALL_CAPITAL_RE.match(unicodedata.name(c, ""))
        if small_cap:
            letter = small_cap.group(1).lower()
            return letter, "homoglyph", letter
        kind = ""
        n = unicodedata.normalize("NFKC", c)
        if n != c:
            kind = "fullwidth" if 0xFF00 <= ord(c) <= 0xFFEF else "nfkc"
        conf = _confusables()
        out: list[str] = []
        plain: list[str] = []
        homoglyph = False
        for ch in n:
            low = ch.lower()
            base = low
            if not low.isascii() and low not in _EXTRA_FOLDS:
                d = unicodedata.normalize("NFD", low)
                stripped = "".join(x for x in d if not unicodedata.combining(x))
                if stripped and stripped != low:
                    base = unicodedata.normalize("NFC", stripped)
            mapped = next(
                (m for m in (conf.get(ch), conf.get(low), _LOOKALIKES.get(low), conf.get(base), _LOOKALIKES.get(base))
                 if m is not None),
                None,
            )  # fmt: skip
            if mapped is not None and not low.isascii():
                out.append(mapped.lower())
                plain.append(base)
                homoglyph = True
                continue
            if low in _EXTRA_FOLDS:
                out.append(_EXTRA_FOLDS[low])
                plain.append(_EXTRA_FOLDS[low])
                kind = kind or "homoglyph"
                continue
            if base != low:
                kind = kind or "diacritic"
            out.append(base)
            plain.append(base)
        folded = "".join(out)
        plain_s = "".join(plain)
        if len(plain_s) != len(folded):
            plain_s = folded
            kind = kind or ("homoglyph" if homoglyph else "")
        # otherwise a homoglyph is reported per word, once it is known to be a disguise
        return folded, kind, plain_s

    def fold(self, text: str) -> tuple[str, list[int], set[str], str]:
        """Fold every character.

        Returns (folded text, original index per char, classes applied, plain text) where the
        plain text is the folded text without homoglyph folding (same length).
        """
        applied: set[str] = set()
        if text.isascii():
            folded = text.lower()
            if folded.isprintable():
                return folded, list(range(len(text))), applied, folded
            chars: list[str] = []
            src: list[int] = []
            for i, ch in enumerate(folded):
                if ch in "\t\n\r\x0b\x0c":
                    chars.append(" ")
                    src.append(i)
                elif ch.isprintable():
                    chars.append(ch)
                    src.append(i)
                else:
                    applied.add("invisible")
            joined = "".join(chars)
            return joined, src, applied, joined
        out: list[str] = []
        plain: list[str] = []
        src = []
        fold = self._fold
        for i, ch in enumerate(text):
            if ch.isascii():
                if ch.isprintable():
                    out.append(ch.lower())
                    plain.append(out[-1])
                    src.append(i)
                elif ch in "\t\n\r\x0b\x0c":
                    out.append(" ")
                    plain.append(" ")
                    src.append(i)
                else:
                    applied.add("invisible")
                continue
            rep, kind, rep_plain = fold(ch)
            if kind and kind != "whitespace":
                applied.add(kind)
            for r, q in zip(rep, rep_plain, strict=True):
                out.append(r)
                plain.append(q)
                src.append(i)
        return "".join(out), src, applied, "".join(plain)

    # ---- words -------------------------------------------------------------------------
    def normalize(self, text: str) -> NormalizedText:
        folded, src, applied, plain = self.fold(text)
        if "(" in folded:
            folded, src, plain = _read_weights(folded, src, plain, applied)
        pieces: list[tuple[int, int]] = []
        forced: set[int] = set()  # piece ends that must be joined with the next piece
        for m in _PIECE_RE.finditer(folded):
            if _SPELLED_RE.match(m.group(0)):
                # "n+u+d+e": the symbol separates letters spelled one by one
                pieces.extend((i, i + 1) for i in range(m.start(), m.end(), 2))
            elif self._symbol_separated(m.group(0)):
                # "b+ank", "ro|tting": the symbol is a separator, not leetspeak
                last = m.start()
                for k, ch in enumerate(m.group(0)):
                    if ch in _INNER_SYMBOLS:
                        pieces.append((last, m.start() + k))
                        forced.add(m.start() + k)
                        last = m.start() + k + 1
                pieces.append((last, m.end()))
            else:
                pieces.append((m.start(), m.end()))
        groups: list[list[tuple[int, int]]] = []
        gaps: list[list[str]] = []
        for start, end in pieces:
            if groups:
                pstart, pend = groups[-1][-1]
                gap = folded[pend:start]
                if pend in forced or self._joinable(gap, pend - pstart, end - start):
                    before = gaps[-1][-1] if gaps[-1] else None
                    possessive = gap.strip() in _APOSTROPHES and folded[start:end].lower() == "s"
                    if (
                        before is not None
                        and gap.isspace() != before.isspace()
                        and pend not in forced
                        and not possessive  # "w o m a n ' s": the apostrophe is no separator style
                    ):
                        # the separator style changes ("m_a_r_k z u c k e r b e r g f*l*o*a*t"): a space
                        # next to letters spelled with a symbol is the space between two words
                        if not gap.isspace() and len(groups[-1]) >= 2:
                            moved = groups[-1].pop()
                            gaps[-1].pop()
                            groups.append([moved, (start, end)])
                            gaps.append([gap])
                            continue
                        if gap.isspace():
                            groups.append([(start, end)])
                            gaps.append([])
                            continue
                    groups[-1].append((start, end))
                    gaps[-1].append(gap)
                    continue
            groups.append([(start, end)])
            gaps.append([])
        self._join_split_words(folded, groups, gaps)
        words = [
            self._word(folded, src, group, group_gaps, applied, plain)
            for group, group_gaps in zip(groups, gaps, strict=True)
        ]
        if self.speller is not None:
            headline = _headline(text)
            for i, word in enumerate(words):
                # a capitalised word inside a sentence is a name, not a typo ("by Berner"), and so is a
                # compound of capitalised parts anywhere ("Scooby-Doo", "Spider-Man")
                raw = text[word.start : word.end]
                if not headline and ((i and _title_case(raw)) or _capitalised_compound(raw)):
                    continue
                # the context that ranks candidates: the neighbours as read (corrected on the left)
                prev = (words[i - 1].corrected or words[i - 1].canonical) if i else None
                nxt = words[i + 1].canonical if i + 1 < len(words) else None
                corrected = self._correction(word, prev, nxt)
                if corrected is not None:
                    words[i] = replace(word, corrected=corrected)
                    applied.add("misspelling")
                elif self._unknown(word, raw):
                    words[i] = replace(word, unknown=True)
        out_parts: list[str] = []
        cursor = 0
        for word, group in zip(words, groups, strict=True):
            out_parts.append(folded[cursor : group[0][0]])
            out_parts.append(word.corrected or word.canonical)
            cursor = group[-1][1]
        out_parts.append(folded[cursor:])
        canonical = " ".join("".join(out_parts).split())
        return NormalizedText(original=text, text=canonical, words=tuple(words), applied=frozenset(applied))

    def _known(self, word: Word) -> bool:
        """Whether a word is in the vocabulary (decoded or as written) or a known name: never
        spell-corrected, never gibberish. Needs the vocabulary."""
        assert self.vocabulary is not None
        return word.canonical in self.vocabulary or word.text in self.vocabulary or word.canonical in self.keep

    def _unknown(self, word: Word, raw: str) -> bool:
        """Whether an uncorrected word is no word at all: letters only, written in lower case (a
        capital marks a name or a brand), and neither in the vocabulary nor a known name."""
        if self.vocabulary is None or not word.canonical.isalpha() or not raw[:1].islower():
            return False
        return not self._known(word)

    def _correction(self, word: Word, prev: str | None = None, nxt: str | None = None) -> str | None:
        """The spelling correction of a word outside the vocabulary (letters only), or None;
        ``prev`` and ``nxt`` are its neighbours, the context that ranks the candidates."""
        if self.speller is None or self.vocabulary is None:
            return None
        if self._known(word):
            return None
        c = word.canonical
        if c.isalpha():
            return self.speller.correct(c, prev, nxt)
        if _COMPOUND_RE.fullmatch(c):
            return self._compound_correction(c, prev, nxt)
        text = word.text
        if c != text or not _leet_shaped(text):
            return None
        # leetspeak whose decoding is a typo ("wr17713n" -> "writtien" -> "written")
        for cand in self._candidates(text, True, _RUN3_RE.search(text) is not None):
            if cand.isalpha():
                fixed = self.speller.correct(cand, prev, nxt)
                if fixed is not None:
                    return fixed
        return None

    def _compound_correction(self, c: str, prev: str | None, nxt: str | None) -> str | None:
        """Typos inside a hyphenated or possessive word ("stond-up", "weman's", "man'z"): each part
        corrected on its own, the separators kept; a lone "z" after an apostrophe is the "s"."""
        assert self.speller is not None and self.vocabulary is not None
        parts = _COMPOUND_SPLIT_RE.split(c)
        out = list(parts)
        for k in range(0, len(parts), 2):
            part = parts[k]
            if k and parts[k - 1] in _APOSTROPHES and part in ("z", "zz"):
                out[k] = "s"
            elif part.isalpha() and part not in self.vocabulary and part not in self.keep:
                left = prev if k == 0 else parts[k - 2]
                right = nxt if k == len(parts) - 1 else parts[k + 2]
                fixed = self.speller.correct(part, left, right)
                # one edit only inside a compound: its parts are often names and coinages
                if fixed is not None and typo_distance(part, fixed, 1.0) <= 1.0:
                    out[k] = fixed
        fixed = "".join(out)
        if len(out) == 3 and out[1] in _APOSTROPHES and out[2] == "s" and out[0] + "s" in self.vocabulary:
            fixed = out[0] + "s"  # as the canonical form writes "man's": "mans"
        return fixed if fixed != c else None

    def _symbol_separated(self, piece: str) -> bool:
        """True when the ``!|+`` inside ``piece`` separate the parts of a word rather than stand for
        letters: read as leetspeak it is no word, without them it is one."""
        if self.vocabulary is None or not any(c in _INNER_SYMBOLS for c in piece):
            return False
        stripped = "".join(c for c in piece if c not in _INNER_SYMBOLS)
        if len(stripped) < 3 or stripped not in self.vocabulary:
            return False
        return not any(c in self.vocabulary for c in self._candidates(piece, True, False))

    def _join_split_words(self, folded: str, groups: list[list[tuple[int, int]]], gaps: list[list[str]]) -> None:
        """Join a word split by one space into fragments that are not both words ("sho t",
        "nak ed", "dr ug"), when the joined form is a word of at least four letters."""
        vocab = self.vocabulary
        if vocab is None:
            return
        i = 0
        while i + 1 < len(groups):
            a, b = groups[i], groups[i + 1]
            if (
                len(a) == 2
                and all(e - s == 1 for s, e in a)
                and len(b) == 1
                and gaps[i] == [" "]
                and folded[a[1][1] : b[0][0]] == " "
            ):
                # two letters, then a word: "a m ove", "A t ubby" is an article and a word split after
                # its first letter, not the word "am" or "at"
                joined = folded[a[1][0] : a[1][1]] + folded[b[0][0] : b[0][1]]
                if joined.isalpha() and joined in vocab and len(joined) >= 4:
                    groups[i : i + 2] = [[a[0]], [a[1], b[0]]]
                    gaps[i : i + 2] = [[], [" "]]
                    i += 2
                    continue
            if len(a) == 1 and len(b) == 1 and folded[a[0][1] : b[0][0]] == " ":
                left, right = folded[a[0][0] : a[0][1]], folded[b[0][0] : b[0][1]]
                joined = left + right
                if (
                    left.isalpha()
                    and right.isalpha()
                    and len(joined) >= 4
                    and joined in vocab
                    and not (_is_word(left, vocab) and _is_word(right, vocab))
                ):
                    groups[i] = [a[0], b[0]]
                    gaps[i] = [" "]
                    del groups[i + 1]
                    del gaps[i + 1]
            i += 1

    @staticmethod
    def _joinable(gap: str, left_len: int, right_len: int) -> bool:
        if not gap or len(gap) > _MAX_JOIN_GAP:
            return False
        has_space = False
        for ch in gap:
            if ch == " ":
                has_space = True
            elif ch not in SEPARATORS and not (ch in _INNER_SYMBOLS and left_len == 1 and right_len == 1):
                return False
        if has_space:
            # "s u i c i d e": spaces only join letters spelled out one by one, so that
            # "the pen is red" never becomes "penis"; a quote or bracket next to a space opens or
            # closes a phrase (A "5-Star" hotel), it does not spell a word
            return left_len == 1 and right_len == 1 and not any(ch in _PHRASE_MARKS for ch in gap)
        return True

    def _word(
        self,
        folded: str,
        src: list[int],
        group: list[tuple[int, int]],
        gaps: list[str],
        applied: set[str],
        plain: str,
    ) -> Word:
        if len(group) == 1:
            s0, e0 = group[0]
            text = folded[s0:e0]
            if text.isalpha() and text.isascii() and plain[s0:e0] == text and _RUN3_RE.search(text) is None:
                # the common case: one plain ASCII word, nothing to decode or join
                return Word(
                    text=text,
                    skeleton=text.replace("l", "i"),
                    src=tuple(src[s0:e0]),
                    bounds=frozenset((0, e0 - s0)),
                    canonical=text,
                )
        text_parts = [folded[s:e] for s, e in group]
        text = "".join(text_parts)
        wsrc: list[int] = []
        bounds = {0}
        spaced: set[int] = set()  # piece boundaries where the prompt had whitespace
        masked: list[tuple[int, int]] = []
        pos = 0
        for i, (s, e) in enumerate(group):
            wsrc.extend(src[s:e])
            pos += e - s
            bounds.add(pos)
            if i < len(gaps) and any(c.isspace() for c in gaps[i]):
                spaced.add(pos)
            if i < len(gaps):
                n_masks = sum(c in MASKS for c in gaps[i])
                if n_masks:
                    masked.append((pos, n_masks))
        has_alpha = any(c.isalpha() for c in text)
        leet = has_alpha and any(c in LEET and not c.isalpha() for c in text)
        if has_alpha:
            skeleton = "".join(SKELETON_LETTERS.get(c, LEET.get(c, c)) for c in text)
        else:
            skeleton = "".join(SKELETON_LETTERS.get(c, c) for c in text)
        joined = len(group) > 1
        repeated = _RUN3_RE.search(text) is not None
        canonical = self._canonical(
            folded, group, text, has_alpha, leet, joined, repeated, frozenset(bounds), frozenset(spaced)
        )
        plain_text = "".join(plain[s:e] for s, e in group)
        if plain_text != text and not self._fold_homoglyphs(plain_text, canonical):
            # a genuine Greek/Cyrillic word, not a disguise: keep it readable for classifiers
            canonical = plain[group[0][0] : group[-1][1]]
        elif plain_text != text:
            applied.add("homoglyph")
        if canonical != folded[group[0][0] : group[-1][1]]:
            if leet and canonical != text:
                applied.add("leetspeak")
            if joined:
                applied.add("separator")
            if repeated and len(canonical) < len(text):
                applied.add("repeat")
        return Word(
            text=text,
            skeleton=skeleton,
            src=tuple(wsrc),
            bounds=frozenset(bounds),
            canonical=canonical,
            joined=joined,
            masked=tuple(masked),
            gaps=tuple(gaps),
        )

    def _fold_homoglyphs(self, plain_text: str, canonical: str) -> bool:
        """Whether a word with homoglyphs is a disguise: it mixes Latin with other scripts, or its
        folded form is a real word (an all-Cyrillic "ѕех")."""
        if any(c.isascii() and c.isalpha() for c in plain_text):
            return True
        return self.vocabulary is not None and canonical in self.vocabulary

    def _canonical(
        self,
        folded: str,
        group: list[tuple[int, int]],
        text: str,
        has_alpha: bool,
        leet: bool,
        joined: bool,
        repeated: bool,
        cuts: frozenset[int] = frozenset(),
        spaced: frozenset[int] = frozenset(),
    ) -> str:
        as_written = folded[group[0][0] : group[-1][1]]
        if not has_alpha or not (leet or joined or repeated) or self.vocabulary is None:
            return as_written
        if len(group) == 1 and _NUMBER_RE.fullmatch(text):
            return as_written  # "16th", "1950s", "35mm": a number, not leetspeak
        if len(group) > 2 and folded[group[-1][0] : group[-1][1]].lower() == "s":
            # a possessive spelled out with the word ("w o m a n ' s", "w|o|m|a|n|'|s"): the stem, then
            # "s" where that makes a word ("nurses", as for "nurse's" written plainly), else "'s"
            stem_group = group[:-1]
            if folded[group[-2][0] : group[-2][1]] in _APOSTROPHES:
                stem_group = group[:-2]
            elif not any(c in _APOSTROPHES for c in folded[group[-2][1] : group[-1][0]]):
                stem_group = []
            if len(stem_group) > 1:
                stem_text = "".join(folded[s:e] for s, e in stem_group)
                stem = self._canonical(folded, stem_group, stem_text, has_alpha, leet, True, repeated, cuts, spaced)
                last = stem.rsplit(" ", 1)[-1]
                return stem + ("s" if last + "s" in self.vocabulary else "'s")
        vocab = self.vocabulary
        for cand in self._candidates(text, leet, repeated):
            if cand in vocab:
                return cand
        if len(group) > 1 and (leet or repeated):
            # pieces that are words of their own once decoded ("chi1d's", "fre3-rang3")
            per_piece = self._decode_pieces(folded, group)
            if per_piece is not None:
                return per_piece
        if joined and not repeated and any(e - s == 1 for s, e in group):
            # pieces joined across separators that span several words ("a l:e:w:d", "e/y/e/s c:o:l:d"):
            # read them as the fewest vocabulary words cut at piece boundaries, for the classifiers
            for cand in self._candidates(text, leet, False):
                words = self._segment(cand, cuts, spaced)
                if words:
                    return " ".join(words)
        if (
            joined
            and len(group) >= 3
            and all(e - s == 1 for s, e in group)
            and 2 * sum(folded[s].isalpha() for s, _ in group) >= len(group)  # not "f/1.4"
        ):
            # letters spelled out one by one are meant as one word even if it is not in the list
            return next(iter(self._candidates(text, leet, False)))
        if joined and not repeated and self._split_inside_word(folded, group):
            # a word outside the list split by a symbol no word contains ("shee•ran", "kaw~ase"):
            # the word, so that the classifiers read the name or coinage as written before the split
            return next(iter(self._candidates(text, leet, False)))
        if len(group) == 1 and leet and _looks_leet(text):
            # leetspeak for a word outside the list ("k4w4se", "$heeran", "9!9ach@d"): its most likely
            # letters, a "|" or "+" between letters read as a separator ("ba|rlowe")
            return next(iter(self._candidates(_INNER_SEPARATOR_RE.sub("", text), True, False)))
        return as_written

    def _split_inside_word(self, folded: str, group: list[tuple[int, int]]) -> bool:
        """Whether the pieces of ``group`` are one word split by symbols that never join words in
        ordinary writing (not ``-``, ``/``, ``.``, ``,`` or ``'``), and not simply words of their own
        (``unreal_engine``)."""
        vocab = self.vocabulary
        assert vocab is not None
        gaps = [folded[a[1] : b[0]] for a, b in itertools.pairwise(group)]
        if not all(len(g) == 1 and g in _IN_WORD_SEPARATORS for g in gaps):
            return False
        pieces = [folded[s:e] for s, e in group]
        return not all(_is_word(p, vocab) for p in pieces)

    def _decode_pieces(self, folded: str, group: list[tuple[int, int]]) -> str | None:
        """Each piece of a joined word decoded on its own (a leetspeak ``s`` after an apostrophe is
        the possessive), the separators kept; None when no piece decodes to a word."""
        vocab = self.vocabulary
        assert vocab is not None
        out: list[str] = []
        changed = False
        for i, (s, e) in enumerate(group):
            piece = folded[s:e]
            gap = folded[group[i - 1][1] : s] if i else ""
            p_alpha = any(c.isalpha() for c in piece)
            p_leet = p_alpha and any(c in LEET and not c.isalpha() for c in piece)
            p_rep = _RUN3_RE.search(piece) is not None
            decoded = piece
            if piece in ("5", "$") and gap in ("'", "’") and changed:
                decoded = "s"
            elif p_leet or p_rep:
                decoded = next((c for c in self._candidates(piece, p_leet, p_rep) if c in vocab), piece)
            changed = changed or decoded != piece
            out.append(gap)
            out.append(decoded)
        return "".join(out) if changed else None

    def _segment(self, text: str, cuts: frozenset[int], spaced: frozenset[int] = frozenset()) -> list[str] | None:
        """The fewest words of the vocabulary (two letters or more, or "a"/"i") that ``text`` splits
        into at the positions ``cuts`` (ties: the split with most cuts where the prompt had
        whitespace); None when there is no such split."""
        vocab = self.vocabulary
        if vocab is None or len(text) > 64:
            return None
        points = sorted(c for c in cuts | {0, len(text)} if 0 <= c <= len(text))
        best: dict[int, tuple[int, int, list[str]]] = {0: (0, 0, [])}  # end -> (words, -spaced cuts, words)
        for i, start in enumerate(points):
            if start not in best:
                continue
            n, neg_spaced, words = best[start]
            for end in points[i + 1 :]:
                piece = text[start:end]
                if (len(piece) >= 2 and piece in vocab) or piece in ("a", "i"):
                    cand = (n + 1, neg_spaced - (end in spaced), [*words, piece])
                    if end not in best or cand[:2] < best[end][:2]:
                        best[end] = cand
        out = best.get(len(text))
        return out[2] if out and len(out[2]) > 1 else None

    @staticmethod
    def _candidates(text: str, leet: bool, repeated: bool) -> Iterable[str]:
        forms = [text]
        if leet:
            ambiguous = [i for i, c in enumerate(text) if c in LEET_AMBIGUOUS][:_MAX_AMBIGUOUS]
            base = [LEET.get(c, c) if not c.isalpha() else c for c in text]
            forms = []
            for choice in itertools.product(*(LEET_AMBIGUOUS[text[i]] for i in ambiguous)):
                chars = list(base)
                for i, letter in zip(ambiguous, choice, strict=True):
                    chars[i] = letter
                forms.append("".join(chars))
        seen: set[str] = set()
        for form in forms:
            variants = [form]
            if repeated:
                # each run of 3+ letters stands for one or two of them ("kiiiilll" -> "kill")
                runs = list(_RUN3_RE.finditer(form))[:_MAX_AMBIGUOUS]
                for lengths in itertools.product((1, 2), repeat=len(runs)):
                    parts, last = [], 0
                    for m, n in zip(runs, lengths, strict=True):
                        parts.append(form[last : m.start()])
                        parts.append(m.group(1) * n)
                        last = m.end()
                    parts.append(form[last:])
                    variants.append("".join(parts))
            for v in variants:
                if v not in seen:
                    seen.add(v)
                    yield v


def _readable_gap(text: str, start: int, end: int, out: list[str], src: list[int]) -> None:
    """Copy ``text[start:end]`` (what lies between words) without invisible characters, with
    full-width punctuation folded."""
    for i in range(start, end):
        ch = text[i]
        if not ch.isascii():
            if unicodedata.category(ch) in _INVISIBLE_CATEGORIES:
                continue
            folded = unicodedata.normalize("NFKC", ch)
            if len(folded) == 1:
                ch = folded
        out.append(ch)
        src.append(i)


def _title_case(raw: str) -> bool:
    letters = [c for c in raw if c.isalpha()]
    return len(letters) > 1 and letters[0].isupper() and not any(c.isupper() for c in letters[1:])


def _capitalised_compound(raw: str) -> bool:
    """A hyphenated word whose every part starts with a capital ("Scooby-Doo"): a name."""
    parts = raw.split("-")
    return len(parts) > 1 and all(p[:1].isupper() for p in parts)


def _headline(text: str) -> bool:
    """Most words capitalised ("Portrait Of A Knight"): capitals then say nothing about names."""
    words = re.findall(r"[^\W\d_]{2,}", text)
    return len(words) >= 3 and sum(w[0].isupper() for w in words) > 0.6 * len(words)


def _recase(word: str, raw: str) -> str:
    """``word`` (lower case) capitalised like ``raw``: all capitals, a capital first letter, or none."""
    letters = [c for c in raw if c.isalpha()]
    if not letters or not letters[0].isupper():
        return word
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return word.upper()
    return word[:1].upper() + word[1:]


def _is_word(fragment: str, vocab: Vocabulary) -> bool:
    """A fragment that stands as a word on its own (single letters only as "a" and "i")."""
    return fragment in ("a", "i") if len(fragment) == 1 else fragment in vocab


def english_vocabulary(models: ModelCache) -> Vocabulary:
    """The wide English vocabulary (:meth:`Vocabulary.english_wide`), loaded once per :class:`ModelCache`."""
    return models.get(("vocabulary", "english_wide"), Vocabulary.english_wide)


def builtin_lexicon_words(models: ModelCache) -> frozenset[str]:
    """Every word of the built-in lexicon's terms, read once per :class:`ModelCache` (the normalizer's
    vocabulary and the spelling corrector both need them)."""
    from t2iguard.prompt.lexicon import Lexicon

    return models.get(("lexicon-words", "builtin"), lambda: frozenset(Lexicon.builtin().words()))


def spell_corrector(models: ModelCache) -> SpellCorrector:
    """The spelling corrector over the bundled dictionary, the wide vocabulary's extra words and
    the built-in lexicon's words (so a typo of a term the dictionary lacks, "libtardz", reads as
    the term for the classifiers)."""

    def build() -> SpellCorrector:
        lexicon_words = sorted(w for w in builtin_lexicon_words(models) if len(w) > 3)
        return SpellCorrector(extra_words=(*extra_english_words(), *lexicon_words))

    return models.get(("speller", "english"), build)


def default_normalizer(models: ModelCache) -> Normalizer:
    """The normalizer shared by the prompt stages: English words plus the built-in lexicon's."""
    from t2iguard.prompt.gazetteer import name_words
    from t2iguard.prompt.people import given_names

    def build() -> Normalizer:
        return Normalizer(
            english_vocabulary(models),
            builtin_lexicon_words(models),
            speller=spell_corrector(models),
            keep=name_words() | given_names(),
        )

    return models.get(("normalizer", "default"), build)


class NormalizeStage(PromptStage):
    """Normalizes the prompt for the stages after it; reports which obfuscations it undid."""

    phases: ClassVar[tuple[Phase, ...]] = (Phase.PROMPT_CHECK,)

    def _normalizer(self) -> Normalizer:
        return default_normalizer(self.models)

    def warmup(self) -> None:
        normalizer = self._normalizer()
        if normalizer.speller is not None:
            normalizer.speller.load()

    def scan(self, ctx: PromptContext) -> StageResult:
        normalized = self._normalizer().normalize(ctx.text)
        if normalized.applied:
            msg = f"undid {', '.join(sorted(normalized.applied))}: {normalized.text!r}"
        else:
            msg = "no obfuscation found"
        result = self.result([], message=msg, artifacts={"normalized": normalized})
        result.trace[0].evidence.update({"applied": sorted(normalized.applied), "normalized": normalized.text})
        return result
