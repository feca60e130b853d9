"""An English vocabulary: tells real words from obfuscations and typos.

Fuzzy matching and leetspeak decoding are only safe on tokens that are *not* ordinary words
("baked" is one edit from "naked"), so both consult this list. The words come from the English
frequency dictionary bundled with ``symspellpy`` (MIT; 82,765 words derived from SCOWL and Google
Books n-grams), loaded from the installed package, never downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from t2iguard.core.errors import ConfigurationError

_DICT_FILE = "frequency_dictionary_en_82_765.txt"


class Vocabulary:
    """A set of lower-case words with a minimum-frequency floor."""

    def __init__(self, words: Iterable[str]) -> None:
        self._words = frozenset(w.lower() for w in words)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word in self._words

    def __len__(self) -> int:
        return len(self._words)

    def with_words(self, extra: Iterable[str]) -> Vocabulary:
        return Vocabulary(self._words | {w.lower() for w in extra})

    @classmethod
    def from_file(cls, path: str | Path, *, min_count: int = 0) -> Vocabulary:
        words: list[str] = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if not parts:
                    continue
                if min_count and len(parts) > 1 and int(parts[1]) < min_count:
                    continue
                words.append(parts[0])
        return cls(words)

    @classmethod
    def english(cls, *, min_count: int = 0) -> Vocabulary:
        """The bundled English dictionary (from ``symspellpy``)."""
        try:
            ref = resources.files("symspellpy").joinpath(_DICT_FILE)
        except ModuleNotFoundError:
            raise ConfigurationError(
                "the English vocabulary comes from the 'symspellpy' package, which is not installed"
            ) from None
        if not ref.is_file():
            raise ConfigurationError(f"symspellpy is installed but has no {_DICT_FILE}")
        return cls.from_file(Path(str(ref)), min_count=min_count)
