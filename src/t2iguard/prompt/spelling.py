"""Spelling correction of out-of-vocabulary words, for the classifiers' view of a prompt.

Typos are the cheapest character-level attack ("nakde", "pornografy", "suicde"): a keyword list
misses them and a sentence encoder drifts on them. The corrector maps a word that is not in the
vocabulary to a vocabulary word within a small Damerau-Levenshtein distance. Candidates come from
the symmetric-delete lookup of SymSpell (Garbe, 2012; the ``symspellpy`` package and its bundled
unigram and bigram frequency dictionaries). They are ranked with the noisy-channel model of
spelling correction (Kernighan, Church & Gale, COLING 1990; Church & Gale, 1991): the prior is the
word's frequency in its context, a bigram model of the neighbouring words interpolated with the
unigram frequency (Jelinek & Mercer, 1980), and each edit costs a constant factor. So "a womon"
becomes "a woman", not the more frequent "women", and "nxet to" becomes "next to". It never
touches a word that is in the vocabulary, so "baked" stays "baked".

A candidate that sounds like the typo (the same Metaphone key, as Aspell's "sounds-like"
suggestions) gets a bonus, so "payn" reads "pain" rather than "pay".

Limits that keep it from rewriting names and jargon: words of four letters or more (the caller
keeps names out); distance 1 below seven letters and 2 from seven on (from five letters for a
candidate that sounds the same); letters only. The constants were set on typos of training
prompts only (``training/prompt_classifier/NOTES.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from threading import Lock

from t2iguard.core.errors import ConfigurationError

_DICT_FILE = "frequency_dictionary_en_82_765.txt"
_BIGRAM_FILE = "frequency_bigramdictionary_en_243_342.txt"
# words added to the dictionary without a count of their own (WordPiece words, the supplement):
# a middling frequency, so that they win over rare words and lose to common ones
EXTRA_WORD_COUNT = 1_000_000
# the channel model: each edit multiplies a candidate's probability by this (Kernighan et al. 1990
# estimate per-edit probabilities of this order); the context model: the bigram estimate's weight
EDIT_COST = 1e-3
CONTEXT_WEIGHT = 0.5
FIRST_LETTER_COST = 0.1
# the weight of the commonest typos (a wrong vowel, a neighbouring key, a doubled letter, a swap)
CHEAP_EDIT = 0.7
# a candidate that sounds like the typo (same Metaphone key, Philips 1990) costs this much less
SOUND_COST = 0.1


class SpellCorrector:
    """Corrects one word at a time. Thread-safe; the dictionary is built on first use."""

    def __init__(
        self,
        dictionary: str | Path | None = None,
        extra_words: Iterable[str] = (),
        *,
        bigrams: str | Path | bool | None = True,
        min_length: int = 4,
        long_word: int = 7,
        edit_cost: float = EDIT_COST,
        context_weight: float = CONTEXT_WEIGHT,
        first_letter_cost: float = FIRST_LETTER_COST,
        sound_cost: float = SOUND_COST,
        phonetic_length: int = 5,
        context_length: int = 4,
        cheap_edit: float = CHEAP_EDIT,
    ) -> None:
        """``dictionary``: a SymSpell unigram file (``word count`` per line; default: the bundled
        English one). ``bigrams``: a bigram file (``word word count``), ``True`` for the bundled
        one, ``None``/``False`` to rank by unigram frequency alone. ``min_length``: shortest word
        corrected; ``long_word``: from this length on, two edits are allowed (one below);
        ``phonetic_length``: from this length on, two edits to a candidate that sounds the same.
        ``edit_cost``: the channel model's probability factor per (weighted) edit; ``cheap_edit``:
        the weight of the commonest typos (see :func:`typo_distance`; 1 for plain edit counts);
        ``first_letter_cost`` and ``sound_cost``: factors for a changed first letter and for
        sounding alike; ``context_weight``: the bigram model's share in the interpolated context
        probabilities. A word shorter than ``context_length``, and two edits that change the
        sound, are corrected only where a bigram with a neighbour vouches for the candidate."""
        if min_length < 2 or long_word < min_length or phonetic_length < 2:
            raise ConfigurationError(f"spelling: need 2 <= min_length <= long_word, got {min_length}, {long_word}")
        if not 0.0 < edit_cost < 1.0 or not 0.0 <= context_weight < 1.0:
            raise ConfigurationError("spelling: edit_cost must be in (0, 1) and context_weight in [0, 1)")
        if not (0.0 < cheap_edit <= 1.0 and 0.0 < first_letter_cost <= 1.0 and 0.0 < sound_cost <= 1.0):
            raise ConfigurationError("spelling: cheap_edit, first_letter_cost and sound_cost must be in (0, 1]")
        self._dictionary = Path(dictionary) if dictionary else None
        self._bigrams: Path | bool = Path(bigrams) if isinstance(bigrams, (str, Path)) else bool(bigrams)
        self._extra = tuple(dict.fromkeys(w.lower() for w in extra_words))
        self.min_length = min_length
        self.long_word = long_word
        self.edit_cost = edit_cost
        self.context_weight = context_weight
        self.first_letter_cost = first_letter_cost
        self.sound_cost = sound_cost
        self.phonetic_length = phonetic_length
        self.context_length = context_length
        self.cheap_edit = cheap_edit
        self._symspell: object | None = None
        self._model: _Model | None = None
        self._lock = Lock()
        self._cache: dict[tuple[str, str | None, str | None], str | None] = {}

    def _path(self) -> Path:
        if self._dictionary is not None:
            if not self._dictionary.is_file():
                raise ConfigurationError(f"spelling dictionary not found: {self._dictionary}")
            return self._dictionary
        return _bundled(_DICT_FILE)

    def _bigram_path(self) -> str | None:
        if isinstance(self._bigrams, Path):
            if not self._bigrams.is_file():
                raise ConfigurationError(f"bigram dictionary not found: {self._bigrams}")
            return str(self._bigrams)
        return str(_bundled(_BIGRAM_FILE)) if self._bigrams else None

    def load(self) -> None:
        """Build the lookup tables now (about 3 s and 150 MB for the bundled dictionary)."""
        self._engine()

    def _engine(self) -> tuple[object, _Model]:
        with self._lock:
            if self._symspell is None or self._model is None:
                self._symspell = _symspell(str(self._path()), self._extra)
                self._model = _language_model(str(self._path()), self._extra, self._bigram_path())
            return self._symspell, self._model

    def correct(self, word: str, prev: str | None = None, next: str | None = None) -> str | None:
        """The correction of a lower-case ``word`` that is not in the vocabulary, or ``None``.

        ``prev`` and ``next`` are the neighbouring words (lower case, as the reader will see them),
        the context that ranks the candidates; without them the most frequent candidate at the
        smallest distance wins."""
        if len(word) < self.min_length or not word.isascii() or not word.isalpha():
            return None
        prev = prev if prev and prev.isalpha() else None
        next = next if next and next.isalpha() else None
        key = (word, prev, next)
        hit = self._cache.get(key, "")
        if hit != "":
            return hit
        from symspellpy import Verbosity

        sym, model = self._engine()
        # two edits for long words; below ``long_word``, two only where the word sounds the same
        max_d = 1 if len(word) < self.phonetic_length else 2
        found = sym.lookup(word, Verbosity.ALL, max_edit_distance=max_d)  # type: ignore[attr-defined]
        out: str | None = None
        if found and found[0].distance > 0:  # distance 0: a dictionary word after all
            sound = _sound(word)
            scored = []
            for s in found:
                same = _sound(s.term) == sound
                if s.distance > 1 and len(word) < self.long_word and not same:
                    continue
                # two edits that change the sound (or a word below ``context_length``) need the context
                # to vouch for the candidate, else names and jargon are rewritten ("tatooine" -> "tattooing")
                if (len(word) < self.context_length or (s.distance > 1 and not same)) and not (
                    model.seen(prev, s.term) or model.seen(s.term, next)
                ):
                    continue
                scored.append((self._score(model, word, s.term, s.distance, prev, next, same), s.term))
            if scored:
                out = max(scored)[1]
        if len(self._cache) < 200_000:
            self._cache[key] = out
        return out

    def _score(
        self, model: _Model, word: str, cand: str, distance: int, prev: str | None, next: str | None, same_sound: bool
    ) -> float:
        """log P(typo | cand) + log P(prev cand next) up to terms that are the same for every candidate."""
        lam = self.context_weight
        p_cand = model.unigram(cand)
        edits = typo_distance(word, cand, self.cheap_edit) if self.cheap_edit < 1.0 else float(distance)
        score = edits * math.log(self.edit_cost) + math.log(p_cand)
        if same_sound:  # a respelling that sounds the same ("payn", "bathrum") is a likely typo
            score -= math.log(self.sound_cost)
        if cand[0] != word[0]:  # typos rarely change the first letter (Yannakoudakis & Fawthrop, 1983)
            score += math.log(self.first_letter_cost)
        if prev is not None and lam > 0.0:  # P(cand | prev) / P(cand)
            score += math.log((lam * model.follows(prev, cand) + (1.0 - lam) * p_cand) / p_cand)
        if next is not None and lam > 0.0:  # P(next | cand) / P(next)
            p_next = model.unigram(next)
            score += math.log((lam * model.follows(cand, next) + (1.0 - lam) * p_next) / p_next)
        return score


class _Model:
    """Unigram and bigram relative frequencies (read-only once built)."""

    def __init__(self, unigrams: dict[str, int], bigrams: dict[str, dict[str, int]]) -> None:
        self._uni = unigrams
        self._total = float(sum(unigrams.values()))
        self._floor = 0.5 / self._total  # words the dictionary lacks: half a count
        self._bi = bigrams
        self._bi_total = {w: float(sum(nxt.values())) for w, nxt in bigrams.items()}

    def unigram(self, word: str) -> float:
        count = self._uni.get(word)
        return count / self._total if count else self._floor

    def seen(self, first: str | None, second: str | None) -> bool:
        """Whether the bigram ``first second`` is in the bigram counts."""
        if first is None or second is None:
            return False
        return second in self._bi.get(first, ())

    def follows(self, prev: str, word: str) -> float:
        """P(word | prev) from the bigram counts alone (0 when ``prev`` starts no known bigram)."""
        nxt = self._bi.get(prev)
        if not nxt:
            return 0.0
        return nxt.get(word, 0) / self._bi_total[prev]


_QWERTY = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_KEY_POS = {ch: (r, c) for r, row in enumerate(_QWERTY) for c, ch in enumerate(row)}
_VOWELS = frozenset("aeiouy")


def _near_keys(a: str, b: str) -> bool:
    pa, pb = _KEY_POS.get(a), _KEY_POS.get(b)
    return pa is not None and pb is not None and abs(pa[0] - pb[0]) <= 1 and abs(pa[1] - pb[1]) <= 1


def _substitution_cost(a: str, b: str, cheap: float) -> float:
    if a in _VOWELS and b in _VOWELS:  # a wrong vowel: the commonest substitution
        return cheap
    if _near_keys(a, b):  # a neighbouring key
        return cheap
    return 1.0


def typo_distance(typo: str, word: str, cheap: float = CHEAP_EDIT) -> float:
    """A weighted Damerau-Levenshtein (optimal string alignment) distance from ``word`` to the
    ``typo``: the edits people make most, a wrong vowel, a neighbouring key, a doubled or undoubled
    letter, two swapped letters, cost ``cheap``; any other edit costs 1 (the confusion statistics of
    Kernighan, Church & Gale, 1990, in their coarsest form)."""
    n, m = len(typo), len(word)
    prev2: list[float] = []
    prev = [float(j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [float(i)] + [0.0] * m
        for j in range(1, m + 1):
            t, w = typo[i - 1], word[j - 1]
            # a letter the typo has and the word lacks: cheap when it doubles its neighbour
            ins = cheap if (i > 1 and typo[i - 2] == t) or (i < n and typo[i] == t) else 1.0
            # a letter the word has and the typo lacks: cheap when the word has it doubled
            dele = cheap if (j > 1 and word[j - 2] == w) or (j < m and word[j] == w) else 1.0
            sub = 0.0 if t == w else _substitution_cost(t, w, cheap)
            best = min(prev[j] + ins, cur[j - 1] + dele, prev[j - 1] + sub)
            if i > 1 and j > 1 and t == word[j - 2] and typo[i - 2] == w and t != w:
                best = min(best, prev2[j - 2] + cheap)
            cur[j] = best
        prev2, prev = prev, cur
    return prev[m]


@lru_cache(maxsize=65536)
def _sound(word: str) -> str:
    """The Metaphone key of ``word`` (Philips, *Hanging on the Metaphone*, 1990), as Aspell's
    "sounds-like" suggestions use it."""
    import jellyfish

    return str(jellyfish.metaphone(word))


def _bundled(name: str) -> Path:
    try:
        ref = resources.files("symspellpy").joinpath(name)
    except ModuleNotFoundError:
        raise ConfigurationError("spelling correction needs the 'symspellpy' package") from None
    return Path(str(ref))


@lru_cache(maxsize=4)
def _language_model(path: str, extra: tuple[str, ...], bigram_path: str | None) -> _Model:
    """The ranking model over a unigram file, extra words and an optional bigram file; shared per
    process. The unigram counts are the SymSpell tables' own (the file is read once)."""
    unigrams: dict[str, int] = dict(_symspell(path, extra).words)  # type: ignore[attr-defined]
    bigrams: dict[str, dict[str, int]] = {}
    if bigram_path is not None:
        with open(bigram_path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 3 and parts[2].isdigit():
                    bigrams.setdefault(parts[0], {})[parts[1]] = int(parts[2])
        if not bigrams:
            raise ConfigurationError(f"could not read the bigram dictionary {bigram_path}")
    return _Model(unigrams, bigrams)


@lru_cache(maxsize=4)
def _symspell(path: str, extra: tuple[str, ...]) -> object:
    """The lookup tables for a dictionary file plus extra words: read-only once built, so every
    corrector over the same files in a process shares them (building takes seconds)."""
    from symspellpy import SymSpell

    sym = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
    if not sym.load_dictionary(path, term_index=0, count_index=1):
        raise ConfigurationError(f"could not read the spelling dictionary {path}")
    for w in extra:
        if w.isalpha() and w not in sym.words:  # a dictionary word keeps its own count
            sym.create_dictionary_entry(w, EXTRA_WORD_COUNT)
    return sym
