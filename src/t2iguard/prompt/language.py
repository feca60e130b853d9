"""Is a prompt English? The English-only parts of the prompt layer (the spaCy NER model, the spelling
corrector's evidence of a disguise) ask before they read a prompt.

A prompt counts as another language only when two signals agree: the language identifier of
``langid`` (Lui & Baldwin, ACL 2012; its model ships inside the package) names another language,
*and* at least ``FOREIGN_SHARE`` of its words are outside the English dictionary. Either alone errs:
langid on short English captions ("A skateboarder is riding his skateboard at night" reads as
Afrikaans), the word share on English prompts full of names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable

from t2iguard.core.stage import ModelCache

FOREIGN_SHARE = 0.2
"""Share of words outside the English dictionary from which a prompt may be another language (the
multilingual classifier tier's gate in the default policy)."""

_WORD_RE = re.compile(r"[^\W\d_]+")


def foreign_share(words: Iterable[str], dictionary: Container[str]) -> float:
    """The share of ``words`` (lower-case; two letters or more) outside ``dictionary``: other
    languages, but also names and typos."""
    counted = [w for w in words if len(w) >= 2]
    return sum(w not in dictionary for w in counted) / len(counted) if counted else 0.0


class LanguageCheck:
    """``english(text)``: the two-signal test of the module docstring."""

    def __init__(self, dictionary: Container[str], identify: Callable[[str], str]) -> None:
        self._dictionary = dictionary
        self._identify = identify

    def english(self, text: str) -> bool:
        words = (w.lower() for w in _WORD_RE.findall(text))
        return foreign_share(words, self._dictionary) < FOREIGN_SHARE or self._identify(text) == "en"


def language_identifier() -> Callable[[str], str]:
    """langid's identifier, as text -> ISO 639-1 code."""
    from langid.langid import LanguageIdentifier, model  # a core dependency, imported when first needed

    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=False)
    return lambda text: str(identifier.classify(text)[0])


def language_check(models: ModelCache) -> LanguageCheck:
    """The check on the normalizer's English vocabulary, loaded once per model cache."""
    from t2iguard.prompt.normalize import english_vocabulary

    def build() -> LanguageCheck:
        return LanguageCheck(english_vocabulary(models), language_identifier())

    return models.get(("language-check", "langid"), build)
