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
from collections.abc import Callable, Container

from t2iguard.core.stage import ModelCache

FOREIGN_SHARE = 0.2
"""Share of words outside the English dictionary from which a prompt may be another language (the
multilingual classifier tier's gate in the default policy)."""

_WORD_RE = re.compile(r"[^\W\d_]+")


class LanguageCheck:
    """``english(text)``: the two-signal test of the module docstring."""

    def __init__(self, dictionary: Container[str], identify: Callable[[str], str]) -> None:
        self._dictionary = dictionary
        self._identify = identify

    def foreign_share(self, text: str) -> float:
        words = [w.lower() for w in _WORD_RE.findall(text) if len(w) >= 2]
        return sum(w not in self._dictionary for w in words) / len(words) if words else 0.0

    def english(self, text: str) -> bool:
        return self.foreign_share(text) < FOREIGN_SHARE or self._identify(text) == "en"


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
