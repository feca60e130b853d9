"""An English vocabulary: tells real words from obfuscations and typos.

Fuzzy matching and leetspeak decoding are only safe on tokens that are *not* ordinary words
("baked" is one edit from "naked"), so both consult this list. The words come from the English
frequency dictionary bundled with ``symspellpy`` (MIT; 82,765 words derived from SCOWL and Google
Books n-grams), loaded from the installed package, never downloaded.

That dictionary spells British ("colours", "harbour", "travelling") and lacks the American forms that
most prompts use. :meth:`Vocabulary.english_wide` adds the whole words of the MiniLM WordPiece
vocabulary that ships with the prompt classifier (American spellings, names, places) and a short
supplement written for t2iguard (``data/words_en_supplement.txt``: "selfie", "frisbee", "artstation").
The normalizer, the blocklist and the spelling corrector use the wide list; the people recogniser keeps
the dictionary alone (names must stay names there).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
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

    @classmethod
    def english_wide(cls) -> Vocabulary:
        """The English dictionary plus WordPiece whole words and the supplement (see module doc)."""
        return cls.english().with_words(extra_english_words())


@lru_cache(maxsize=1)
def extra_english_words() -> tuple[str, ...]:
    """Whole words (letters only, four or more: shorter ones are mostly abbreviations, "ak", "fia")
    of the bundled MiniLM WordPiece vocabulary, and the supplement list; both read once from files
    inside the package (the vocabulary and the spelling corrector both need them)."""
    pkg = resources.files("t2iguard.prompt")
    tok = pkg.joinpath("models/minilm/tokenizer.json")
    if not tok.is_file():
        raise ConfigurationError(f"the bundled tokenizer is missing: {tok}")
    vocab = json.loads(tok.read_text(encoding="utf-8"))["model"]["vocab"]
    words = [w for w in vocab if len(w) > 3 and w.isascii() and w.isalpha()]
    for line in pkg.joinpath("data/words_en_supplement.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            words.append(line.lower())
    return tuple(words)
