"""``anonymize``: replace named private individuals with neutral descriptions and remove PII.

"Image of John Doe in the shower" → "Image of a person in the shower". The rest of the prompt is
kept as written. Names come from the shared people analysis (the ``public_figure`` check's
``artifacts["people"]`` when it analysed the same text, else the same analyzer through the model
cache), and replacements are applied with Microsoft Presidio's ``AnonymizerEngine``.

Rules, in the spirit of the DALL·E 3 system card's treatment of private individuals:

* distinct people become "a person", "another person", "a third person", ...; later mentions of the
  same person ("John" after "John Doe") become "the person" ("the first person", ... when several);
* a name after a relation or role noun is dropped ("my neighbor Bob Smith" → "my neighbor"), and
  "named X" / "called X" is dropped ("a boy named Tobias" → "a boy");
* possessives stay ("John's dog" → "a person's dog"); a replacement opening a sentence is capitalised;
* e-mail addresses, phone numbers, street addresses, card numbers, IBANs, IPs and SSNs are removed;
* credited names ("art by Greg Rutkowski") and fictional characters are kept; public figures are
  kept unless the policy's ``public_figure`` rule says ``transform`` (or ``public_figures:
  describe``), in which case they become "a politician", "an actor", ...
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field

from t2iguard.core.decision import Change, Finding, StageResult
from t2iguard.core.errors import MissingDependencyError
from t2iguard.core.stage import PromptContext, PromptTransform
from t2iguard.core.types import Action, Category
from t2iguard.prompt.people import PeopleAnalysis, PersonMention, get_people_analyzer
from t2iguard.prompt.public_figure import PeopleParams

_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]
RELATION_NOUNS = frozenset(
    [
        "neighbor",
        "neighbour",
        "friend",
        "boss",
        "wife",
        "husband",
        "boyfriend",
        "girlfriend",
        "partner",
        "fiance",
        "fiancee",
        "colleague",
        "coworker",
        "co-worker",
        "classmate",
        "roommate",
        "flatmate",
        "landlord",
        "landlady",
        "tenant",
        "teacher",
        "student",
        "doctor",
        "nurse",
        "coach",
        "son",
        "daughter",
        "mother",
        "father",
        "mom",
        "mum",
        "dad",
        "brother",
        "sister",
        "cousin",
        "uncle",
        "aunt",
        "niece",
        "nephew",
        "grandmother",
        "grandfather",
        "grandma",
        "grandpa",
        "ex",
        "crush",
        "employee",
        "employer",
        "manager",
        "assistant",
        "secretary",
        "pupil",
        "patient",
        "client",
        "customer",
        "stepmother",
        "stepfather",
        "stepson",
        "stepdaughter",
        "baby",
        "child",
        "kid",
        "toddler",
        "sibling",
        "twin",
        "bride",
        "groom",
    ]
)
_NAMED = re.compile(r"\s*\b(?:named|called|known as|nicknamed)\s*$", re.IGNORECASE)
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+|\n\s*)$")


class AnonymizeStage(PromptTransform):
    """Replaces private individuals (and, per policy, public figures) with neutral descriptions."""

    class Params(PeopleParams):
        person: str = Field(default="person", description="the neutral noun for a private individual")
        public_figures: Literal["policy", "keep", "describe"] = Field(
            default="policy",
            description="'policy': describe them when the policy's public_figure rule says transform",
        )
        pii: bool = Field(default=True, description="remove e-mails, phone numbers, addresses and other PII")
        clear_unfound: bool = Field(
            default=True,
            description="when an earlier check (the learned classifier) asks to transform a prompt as naming a "
            "private individual but the recogniser finds no name and no personal data, report the category as "
            "cleared ('nothing identifying to remove') instead of leaving the pipeline to fail closed; "
            "False: such prompts are blocked",
        )

    covers: ClassVar[frozenset[Category]] = frozenset({Category.PRIVATE_INDIVIDUAL})
    cost: ClassVar[str] = "model"

    @property
    def p(self) -> AnonymizeStage.Params:
        return self.params  # type: ignore[return-value]

    def warmup(self) -> None:
        get_people_analyzer(self.models, tuple(self.p.gazetteer), self.p.fuzzy_cutoff)
        self._engine()

    def _engine(self) -> Any:
        def build() -> Any:
            try:
                from presidio_anonymizer import AnonymizerEngine
            except ImportError as exc:
                raise MissingDependencyError("presidio-anonymizer", "people", "anonymization") from exc
            return AnonymizerEngine()

        return self.models.get(("presidio-anonymizer",), build)

    def _analysis(self, ctx: PromptContext) -> PeopleAnalysis:
        for r in reversed(ctx.results):
            found = r.artifacts.get("people")
            if isinstance(found, PeopleAnalysis) and found.text == ctx.text:
                return found
        return get_people_analyzer(self.models, tuple(self.p.gazetteer), self.p.fuzzy_cutoff).analyze(ctx.text)

    def scan(self, ctx: PromptContext) -> StageResult:
        analysis = self._analysis(ctx)
        describe_public = self.p.public_figures == "describe" or (
            self.p.public_figures == "policy"
            and ctx.flagged_categories().get(Category.PUBLIC_FIGURE) == Action.TRANSFORM
        )
        targets = [
            m for m in analysis.people if not m.style_reference and (m.private or (describe_public and m.public))
        ]
        pii = list(analysis.pii) if self.p.pii else []
        if not targets and not pii:
            asked = ctx.flagged_categories().get(Category.PRIVATE_INDIVIDUAL) == Action.TRANSFORM
            if asked and self.p.clear_unfound:
                return self.result(
                    [],
                    message="private_individual flagged, but no named person and no personal data found: "
                    "nothing identifying to remove",
                    artifacts={"cleared": [str(Category.PRIVATE_INDIVIDUAL)]},
                )
            return self.result([], message="nothing to anonymize")
        text = ctx.text
        edits = self._person_edits(text, targets) + [
            (_pii_start(text, p.start, p.entity), p.end, "", f"removed {p.entity}", None) for p in pii
        ]
        edits = _widen_removals(text, edits)
        edits.sort(key=lambda e: e[0])
        # overlapping edits (a phone number inside a name span): keep the first
        kept: list[tuple[int, int, str, str, PersonMention | None]] = []
        for e in edits:
            if kept and e[0] < kept[-1][1]:
                continue
            kept.append(e)
        new_text = self._apply(text, kept)
        changes = [
            Change(
                stage=self.name,
                kind="anonymize" if m is not None else "remove_pii",
                before=text[s:e],
                after=repl,
                reason=why,
                category=Category.PRIVATE_INDIVIDUAL if m is None or m.private else Category.PUBLIC_FIGURE,
                span=(s, e),
            )
            for s, e, repl, why, m in kept
        ]
        findings = [
            Finding(
                category=Category.PRIVATE_INDIVIDUAL,
                score=min(1.0, max([m.score for m in targets if m.private] + [p.score for p in pii] + [0.0])),
                evidence={"replaced": [c.before for c in changes]},
                message=f"anonymized {len(changes)} span(s)",
            )
        ]
        return self.result(findings, prompt=new_text, changes=changes)

    def _person_edits(
        self, text: str, targets: list[PersonMention]
    ) -> list[tuple[int, int, str, str, PersonMention | None]]:
        # group mentions into people: a later mention whose words are a subset of an earlier one's
        ids: list[int] = []
        people: list[tuple[set[str], PersonMention]] = []
        for m in targets:
            words = {w for w in re.findall(r"\w+", m.text.lower()) if len(w) > 1}
            for i, (known, first) in enumerate(people):
                same_figure = m.match is not None and first.match is not None and m.match.figure == first.match.figure
                if same_figure or (words and (words <= known or known <= words) and m.private and first.private):
                    ids.append(i)
                    break
            else:
                people.append((words, m))
                ids.append(len(people) - 1)
        n_private = sum(1 for _, m in people if m.private)
        seen: set[int] = set()
        out: list[tuple[int, int, str, str, PersonMention | None]] = []
        for m, pid in zip(targets, ids, strict=True):
            before = text[: m.start]
            repeat = pid in seen
            seen.add(pid)
            named = _NAMED.search(before)
            prev_word = re.search(r"(\w+)\s*,?\s*$", before)
            if named is not None:
                out.append((named.start(), m.end, "", f"dropped the name {m.text!r} of a private individual", m))
                continue
            if prev_word is not None and prev_word.group(1).lower() in RELATION_NOUNS and m.private:
                out.append((m.start, m.end, "", f"dropped the name {m.text!r} after {prev_word.group(1)!r}", m))
                continue
            if m.public and m.match is not None:
                desc = m.match.figure.description
                if repeat:
                    desc = "the " + desc.split(" ", 1)[1]
                why = f"public figure {m.match.figure.name!r} described as {desc!r} (policy: transform)"
            else:
                rank = sum(1 for q, _ in enumerate(people[:pid]) if people[q][1].private)
                noun = self.p.person
                if repeat:
                    desc = f"the {noun}" if n_private == 1 else f"the {_ordinal(rank)} {noun}"
                elif rank == 0:
                    desc = f"a {noun}" if noun[:1].lower() not in "aeiou" else f"an {noun}"
                elif rank == 1:
                    desc = f"another {noun}"
                else:
                    desc = f"a {_ordinal(rank)} {noun}"
                why = f"private individual {m.text!r} replaced by {desc!r}"
            if _SENTENCE_START.search(before):
                desc = desc[:1].upper() + desc[1:]
            out.append((m.start, m.end, desc, why, m))
        return out

    def _apply(self, text: str, edits: list[tuple[int, int, str, str, PersonMention | None]]) -> str:
        from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

        results = [RecognizerResult(f"T2I_EDIT_{i}", s, e, 1.0) for i, (s, e, _r, _w, _m) in enumerate(edits)]
        # "custom" rather than "replace": Presidio's replace turns an empty value into "<ENTITY>"
        operators = {
            f"T2I_EDIT_{i}": OperatorConfig("custom", {"lambda": _constant(repl)})
            for i, (_s, _e, repl, _w, _m) in enumerate(edits)
        }
        out = self._engine().anonymize(text=text, analyzer_results=results, operators=operators)
        return str(out.text).strip()


def _constant(value: str) -> Any:
    return lambda _text: value


def _ordinal(i: int) -> str:
    return _ORDINALS[i] if i < len(_ORDINALS) else f"{i + 1}th"


def _pii_start(text: str, start: int, entity: str) -> int:
    """Phone numbers take their country code ("+1 555 ...") with them."""
    if entity == "PHONE_NUMBER":
        m = re.search(r"\+\d{1,3}[\s.-]*$", text[:start])
        if m is not None:
            return m.start()
    return start


def _widen_removals(
    text: str, edits: list[tuple[int, int, str, str, PersonMention | None]]
) -> list[tuple[int, int, str, str, PersonMention | None]]:
    """A removed span takes one neighbouring space (and a dangling comma) with it."""
    out = []
    for s, e, repl, why, m in edits:
        if repl == "":
            while s > 0 and text[s - 1] == " ":
                s -= 1
            if s == 0:
                while e < len(text) and text[e] in " ,;:":
                    e += 1
            elif e < len(text) and text[e] in ",;:" and text[s - 1 : s] in (",", ";", ":"):
                e += 1
        out.append((s, e, repl, why, m))
    return out
