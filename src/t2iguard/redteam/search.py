"""Black-box adversarial search against the stack's own prompt filter.

In the spirit of SneakyPrompt (Yang et al., "SneakyPrompt: Jailbreaking Text-to-image Generative
Models", IEEE S&P 2024): query the deployed filter, read its verdict, and substitute tokens of the
prompt until it passes, within a query budget. SneakyPrompt searches the text encoder's vocabulary
with reinforcement learning and keeps the meaning with CLIP similarity; no CLIP-like model ships
offline here, so the meaning is kept by construction instead: a token is only replaced by one of
its meaning-preserving rewrites (the other attacks' substitutions — leetspeak, homoglyphs,
invisible characters, separators, typos, stylised letters, euphemisms, visual synonyms, synonyms,
phrase-table translations).

The search is a beam search guided by the filter's score (the decision's category scores, via
:meth:`Verdict.score`): each step rewrites the next most important token of every beam state with
a handful of sampled candidates, queries them in one batch and keeps the ``beam`` best. Tokens are
ordered by what the decision's trace points at (the evidence spans a blocklist reports), then the
red-team lexicon's unsafe terms, then the remaining content words; no stage internals are read.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from t2iguard.core.types import Category
from t2iguard.redteam.attack import LexiconEntry, RedteamLexicon, Target, derive_rng, match_case
from t2iguard.redteam.charlevel import FullWidth, Homoglyph, Leetspeak, Misspelling, Separator, Stylized, ZeroWidth
from t2iguard.redteam.multilingual import LANGUAGES, phrase_table
from t2iguard.redteam.oracle import StackOracle, Verdict

_WORD_RE = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


@dataclass
class _Token:
    text: str
    slot: bool  # can be substituted
    entry: LexiconEntry | None = None
    priority: int = 3


@dataclass
class SearchOutcome:
    """The result of one search: the best prompt found, whether it passed, and its cost."""

    seed_prompt: str
    prompt: str
    success: bool
    queries: int  # as an attacker asking one prompt at a time: up to the first pass, else all spent
    steps: int
    verdict: Verdict | None = None
    substitutions: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "success": self.success,
            "queries": self.queries,
            "steps": self.steps,
            "substitutions": self.substitutions,
        }


def _tokenize(prompt: str, lexicon: RedteamLexicon, spans: Sequence[tuple[int, int]]) -> list[_Token]:
    targets = lexicon.find(prompt)
    cuts: list[tuple[int, int, LexiconEntry | None]] = [(t.start, t.end, t.entry) for t in targets]
    covered = [(s, e) for s, e, _ in cuts]
    for m in _WORD_RE.finditer(prompt):
        if not any(s <= m.start() < e for s, e in covered):
            cuts.append((m.start(), m.end(), None))
    cuts.sort()
    tokens: list[_Token] = []
    last = 0
    for s, e, entry in cuts:
        if s < last:
            continue
        if s > last:
            tokens.append(_Token(prompt[last:s], False))
        text = prompt[s:e]
        hit = any(s < he and hs < e for hs, he in spans)
        if hit:
            priority = 0
        elif entry is not None:
            priority = 1
        elif len(text) >= 4:
            priority = 2
        else:
            priority = 3
        tokens.append(_Token(text, priority < 3, entry, priority))
        last = e
    if last < len(prompt):
        tokens.append(_Token(prompt[last:], False))
    return tokens


class SearchAttack:
    """Score-guided beam search over meaning-preserving token substitutions."""

    name: ClassVar[str] = "search"
    family: ClassVar[str] = "search"
    description: ClassVar[str] = "black-box beam search guided by the filter's scores (SneakyPrompt-style)"

    def __init__(
        self,
        lexicon: RedteamLexicon | None = None,
        *,
        budget: int = 60,
        beam: int = 3,
        expansions: int = 6,
    ) -> None:
        if budget < 1 or beam < 1 or expansions < 1:
            raise ValueError("budget, beam and expansions must be positive")
        self.lexicon = lexicon or RedteamLexicon.builtin()
        self.budget = budget
        self.beam = beam
        self.expansions = expansions
        self._char = [
            Leetspeak(self.lexicon),
            Homoglyph(self.lexicon),
            ZeroWidth(self.lexicon),
            Separator(self.lexicon),
            Misspelling(self.lexicon),
            FullWidth(self.lexicon),
            Stylized(self.lexicon),
        ]

    @property
    def label(self) -> str:
        return self.name

    def candidates(self, token: _Token, rng: random.Random) -> list[str]:
        """Meaning-preserving rewrites of one token, shuffled, without duplicates."""
        out: list[str] = []
        entry = token.entry
        if entry is not None:
            out += [match_case(token.text, o) for o in (*entry.euphemisms, *entry.visual, *entry.synonyms)]
            for lang in LANGUAGES:
                tr = phrase_table(lang)["terms"].get(token.text.lower()) or phrase_table(lang)["terms"].get(entry.term)
                if tr:
                    out.append(match_case(token.text, tr))
        target = Target(0, len(token.text), token.text, entry)
        for attack in self._char:
            for _ in range(2):
                new = attack.rewrite(target, rng)
                if new:
                    out.append(new)
        seen = {token.text}
        uniq = []
        for c in out:
            if c not in seen:
                seen.add(c)
                uniq.append(c)
        rng.shuffle(uniq)
        return uniq

    def run(
        self,
        prompt: str,
        oracle: StackOracle,
        *,
        seed: int = 0,
        start: Verdict | None = None,
        focus: Sequence[Category] = (),
    ) -> SearchOutcome:
        """Search for a passing form of ``prompt``. ``start`` is the verdict on the unmodified
        prompt if the caller already has it (then it costs no query)."""
        rng = derive_rng(seed, self.name, prompt)
        used = 0
        if start is None:
            start = oracle.check([prompt])[0]
            used += 1
        if not start.blocked:
            return SearchOutcome(prompt, prompt, True, used, 0, start)
        focus = list(focus) or list(start.flagged)
        tokens = _tokenize(prompt, self.lexicon, start.spans)
        order = sorted((i for i, t in enumerate(tokens) if t.slot), key=lambda i: (tokens[i].priority, i))
        if not order:
            return SearchOutcome(prompt, prompt, False, used, 0, start)
        # a beam state: (score, texts per token, substituted token indices, substitutions, verdict)
        beam: list[tuple[float, list[str], frozenset[int], list[dict[str, str]], Verdict]] = [
            (start.score(focus), [t.text for t in tokens], frozenset(), [], start)
        ]
        best = beam[0]
        steps = 0
        # First round: rewrite every flagged/unsafe token at once. With a filter whose scores are
        # discrete (a blocklist), changing one of two trigger words changes nothing visible, so
        # token-by-token search alone has no signal; joint samples find the way through.
        joint = [i for i in order if tokens[i].priority <= 1]
        if len(joint) > 1:
            batch0: list[tuple[list[str], list[dict[str, str]]]] = []
            pools = {i: self.candidates(tokens[i], rng) for i in joint}
            for _ in range(min(self.beam * self.expansions, self.budget - used)):
                texts = [t.text for t in tokens]
                subs = []
                for i in joint:
                    if pools[i]:
                        texts[i] = rng.choice(pools[i])
                        subs.append({"from": tokens[i].text, "to": texts[i]})
                batch0.append((texts, subs))
            verdicts0 = oracle.check(["".join(b[0]) for b in batch0]) if batch0 else []
            used += len(batch0)
            steps += 1 if batch0 else 0
            scored: list[tuple[float, list[str], frozenset[int], list[dict[str, str]], Verdict]] = []
            for k, ((texts, subs), v) in enumerate(zip(batch0, verdicts0, strict=True)):
                if not v.blocked:
                    # an attacker querying one at a time stops at the first pass
                    return SearchOutcome(prompt, v.prompt, True, used - len(batch0) + k + 1, steps, v, subs)
                scored.append((v.score(focus), texts, frozenset(), subs, v))
            scored.sort(key=lambda c: c[0])
            beam = sorted([*beam, *scored[: self.beam]], key=lambda c: c[0])[: self.beam]
            best = beam[0]
        while used < self.budget:
            children: list[tuple[float, list[str], frozenset[int], list[dict[str, str]], Verdict]] = []
            batch: list[tuple[list[str], frozenset[int], list[dict[str, str]]]] = []
            for score, texts, done, subs, v in beam:
                nxt = next((i for i in order if i not in done), None)
                if nxt is None:
                    continue
                # keeping the token as it is costs nothing and lets the beam move on
                children.append((score + 0.005, texts, done | {nxt}, subs, v))
                for cand in self.candidates(tokens[nxt], rng)[: self.expansions]:
                    new_texts = list(texts)
                    new_texts[nxt] = cand
                    batch.append((new_texts, done | {nxt}, [*subs, {"from": tokens[nxt].text, "to": cand}]))
            if not children:
                break
            batch = batch[: self.budget - used]
            verdicts = oracle.check(["".join(b[0]) for b in batch]) if batch else []
            used += len(batch)
            steps += 1
            for k, ((texts, done, subs), v) in enumerate(zip(batch, verdicts, strict=True)):
                if not v.blocked:
                    return SearchOutcome(prompt, v.prompt, True, used - len(batch) + k + 1, steps, v, subs)
                children.append((v.score(focus), texts, done, subs, v))
            children.sort(key=lambda c: c[0])
            beam = children[: self.beam]
            if beam and beam[0][0] < best[0]:
                best = beam[0]
        return SearchOutcome(prompt, "".join(best[1]), False, used, steps, best[4], best[3])
