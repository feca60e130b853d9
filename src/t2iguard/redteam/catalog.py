"""The attack catalogue: names -> attacks, and the ``--attacks`` spec language.

``all``                   every attack below (the search attack included)
``character``, ...        every attack of a family
``leetspeak``             one attack
``translate:de``          an attack with its argument (language, mode; ``dilution:comma``)
``euphemism+leetspeak``   a chain: the attacks applied one after the other
Comma-separated specs are combined: ``character,translate:es,search``.
"""

from __future__ import annotations

from collections.abc import Callable

from t2iguard.core.errors import ConfigurationError
from t2iguard.redteam.attack import Attack, Chain, RedteamLexicon
from t2iguard.redteam.charlevel import FullWidth, Homoglyph, Leetspeak, Misspelling, Separator, Stylized, ZeroWidth
from t2iguard.redteam.composition import MODES, ConceptArithmetic
from t2iguard.redteam.context import JOINS, Dilution
from t2iguard.redteam.lexical import Euphemism, SynonymSwap, VisualSynonym
from t2iguard.redteam.multilingual import LANGUAGES, Translate
from t2iguard.redteam.search import SearchAttack

AnyAttack = Attack | SearchAttack

_SIMPLE: dict[str, Callable[[RedteamLexicon], Attack]] = {
    "leetspeak": Leetspeak,
    "homoglyph": Homoglyph,
    "zero_width": ZeroWidth,
    "separator": Separator,
    "misspelling": Misspelling,
    "fullwidth": FullWidth,
    "stylized": Stylized,
    "euphemism": Euphemism,
    "visual_synonym": VisualSynonym,
    "synonym": SynonymSwap,
}

FAMILY_MEMBERS: dict[str, list[str]] = {
    "character": ["leetspeak", "homoglyph", "zero_width", "separator", "misspelling", "fullwidth", "stylized"],
    "lexical": ["euphemism", "visual_synonym", "synonym"],
    "multilingual": [f"translate:{lang}" for lang in LANGUAGES],
    "composition": [f"concept_arithmetic:{m}" for m in MODES],
    "context": [f"dilution:{m}" for m in JOINS],
    "search": ["search"],
}


def attack_names() -> list[str]:
    return [n for names in FAMILY_MEMBERS.values() for n in names]


def build_attack(
    name: str, lexicon: RedteamLexicon | None = None, *, budget: int = 60, beam: int = 3, expansions: int = 6
) -> AnyAttack:
    """One attack (or chain) from its name."""
    lex = lexicon or RedteamLexicon.builtin()
    if "+" in name:
        parts = [build_attack(p.strip(), lex) for p in name.split("+") if p.strip()]
        if any(isinstance(p, SearchAttack) for p in parts):
            raise ConfigurationError("the search attack cannot be chained")
        return Chain([p for p in parts if isinstance(p, Attack)])
    base, _, arg = name.partition(":")
    if base in _SIMPLE and not arg:
        return _SIMPLE[base](lex)
    if base == "translate":
        lang, _, mode = arg.partition(":")
        return Translate(lex, language=lang or None, mode=mode or "full")
    if base == "concept_arithmetic":
        return ConceptArithmetic(lex, mode=arg or None)
    if base == "dilution":
        return Dilution(lex, mode=arg or None)
    if base == "search":
        return SearchAttack(lex, budget=int(arg) if arg else budget, beam=beam, expansions=expansions)
    raise ConfigurationError(f"unknown attack {name!r}; known: {', '.join(attack_names())} (or a family, or 'all')")


def build_attacks(
    spec: str, lexicon: RedteamLexicon | None = None, *, budget: int = 60, beam: int = 3, expansions: int = 6
) -> list[AnyAttack]:
    """Attacks from a comma-separated spec (names, families, ``all``, chains)."""
    names: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item == "all":
            names += attack_names()
        elif item in FAMILY_MEMBERS:
            names += FAMILY_MEMBERS[item]
        else:
            names.append(item)
    if not names:
        raise ConfigurationError("no attack given")
    lex = lexicon or RedteamLexicon.builtin()
    return [build_attack(n, lex, budget=budget, beam=beam, expansions=expansions) for n in dict.fromkeys(names)]
