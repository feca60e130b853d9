"""Spelling correction of out-of-vocabulary words, for the classifiers' view of a prompt.

Typos are the cheapest character-level attack ("nakde", "pornografy", "suicde"): a keyword list
misses them and a sentence encoder drifts on them. The corrector maps a word that is not in the
vocabulary to the most frequent vocabulary word within a small Damerau-Levenshtein distance, with
the symmetric-delete lookup of SymSpell (Garbe, 2012; the ``symspellpy`` package and its bundled
frequency dictionary). It never touches a word that is in the vocabulary, so "baked" stays "baked".

Limits that keep it from rewriting names and jargon: words of five letters or more (not in the
name lists it is given); distance 1 below nine letters and 2 from nine on; letters only.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from threading import Lock

from t2iguard.core.errors import ConfigurationError

_DICT_FILE = "frequency_dictionary_en_82_765.txt"
# words added to the dictionary without a count of their own (WordPiece words, the supplement):
# a middling frequency, so that they win over rare words and lose to common ones
EXTRA_WORD_COUNT = 1_000_000


class SpellCorrector:
    """Corrects one word at a time. Thread-safe; the dictionary is built on first use."""

    def __init__(
        self,
        dictionary: str | Path | None = None,
        extra_words: Iterable[str] = (),
        *,
        min_length: int = 5,
        long_word: int = 9,
    ) -> None:
        self._dictionary = Path(dictionary) if dictionary else None
        self._extra = tuple(dict.fromkeys(w.lower() for w in extra_words))
        self.min_length = min_length
        self.long_word = long_word
        self._symspell: object | None = None
        self._lock = Lock()
        self._cache: dict[str, str | None] = {}

    def _path(self) -> Path:
        if self._dictionary is not None:
            if not self._dictionary.is_file():
                raise ConfigurationError(f"spelling dictionary not found: {self._dictionary}")
            return self._dictionary
        try:
            ref = resources.files("symspellpy").joinpath(_DICT_FILE)
        except ModuleNotFoundError:
            raise ConfigurationError("spelling correction needs the 'symspellpy' package") from None
        return Path(str(ref))

    def load(self) -> None:
        """Build the lookup tables now (about 3 s and 150 MB for the bundled dictionary)."""
        self._engine()

    def _engine(self) -> object:
        with self._lock:
            if self._symspell is None:
                self._symspell = _symspell(str(self._path()), self._extra)
            return self._symspell

    def correct(self, word: str) -> str | None:
        """The correction of a lower-case ``word`` that is not in the vocabulary, or ``None``."""
        if len(word) < self.min_length or not word.isascii() or not word.isalpha():
            return None
        hit = self._cache.get(word, "")
        if hit != "":
            return hit
        from symspellpy import Verbosity

        sym = self._engine()
        max_d = 1 if len(word) < self.long_word else 2
        found = sym.lookup(word, Verbosity.CLOSEST, max_edit_distance=max_d)  # type: ignore[attr-defined]
        out: str | None = None
        if found and found[0].distance > 0:  # distance 0: a dictionary word after all
            out = max(found, key=lambda s: (s.count, s.term)).term  # CLOSEST: all at one distance
        if len(self._cache) < 200_000:
            self._cache[word] = out
        return out


@lru_cache(maxsize=4)
def _symspell(path: str, extra: tuple[str, ...]) -> object:
    """The lookup tables for a dictionary file plus extra words: read-only once built, so every
    corrector over the same files in a process shares them (building takes seconds)."""
    from symspellpy import SymSpell

    sym = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
    if not sym.load_dictionary(path, term_index=0, count_index=1):
        raise ConfigurationError(f"could not read the spelling dictionary {path}")
    for w in extra:
        if w.isalpha():
            sym.create_dictionary_entry(w, EXTRA_WORD_COUNT)
    return sym
