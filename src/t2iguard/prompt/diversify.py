"""``diversify``: demographic descriptors for people the prompt depicts only by role.

"image of a ceo" → "image of a middle-aged South Asian female ceo". Text-to-image models render
unspecified people with their training data's stereotypes (Bianchi et al., *Easily Accessible
Text-to-Image Generation Amplifies Demographic Stereotypes at Large Scale*, FAccT 2023; Cho et al.,
*DALL-Eval*, ICCV 2023); DALL·E 2 answered by appending sampled attributes to such prompts. Here
the descriptors are drawn per role mention from a configurable distribution per attribute, with a
random generator seeded by (``seed``, prompt, mention), so the same prompt always gets the same
descriptors and the empirical distribution over many prompts matches the configured one
(``bench/bench_diversify.py`` checks it with a chi-square test).

**When nothing is added.** The prompt (as written or as rewritten) already says a gender, an age,
an ethnicity or nationality; it names a person (a private individual — even once anonymized — a
public figure or a fictional character); an earlier check flagged it in a harm category; or an
earlier transform rewrote it (``rewrite``).

**No stereotypes (the rule).** Sampling is independent of the role, so no role is tied to a group.
A role or trait that is negative ("criminal", "terrorist", "beggar", "a lazy person") never gets an
ethnicity, nationality or age: pairing a group with a negative role in a generated image reproduces
exactly the association the augmentation exists to break; it receives only the attributes listed
in ``negative_role_attributes`` (default: gender). Ages are adult buckets only — the stage never
makes anyone a child or a teenager. Plural roles ("a group of nurses") get "of diverse genders,
ethnicities and ages" rather than one sampled group.
"""

from __future__ import annotations

import hashlib
import random
import re
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from t2iguard.core.decision import Change, StageResult
from t2iguard.core.stage import PromptContext, PromptTransform
from t2iguard.core.types import Action, Category
from t2iguard.prompt.people import PeopleAnalysis, get_people_analyzer
from t2iguard.prompt.public_figure import PeopleParams

ATTRIBUTE_ORDER = ("age", "ethnicity", "gender")  # English adjective order: "an elderly Black female nurse"
GENDER_NOUNS = {"female": "woman", "male": "man"}
GENERIC_NOUNS = frozenset({"person", "individual", "human"})
NOT_A_HARM = frozenset({Category.PRIVATE_INDIVIDUAL, Category.PUBLIC_FIGURE})


@lru_cache(maxsize=1)
def roles() -> dict[str, Any]:
    ref = resources.files("t2iguard.prompt").joinpath("data/roles.yaml")
    data: dict[str, Any] = yaml.safe_load(ref.read_text(encoding="utf-8"))
    return data


def _plural(word: str) -> str:
    if word.endswith(("s", "sh", "ch", "x", "z")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith("man"):
        return word[:-3] + "men"
    return word + "s"


@lru_cache(maxsize=1)
def _lexicon() -> tuple[dict[str, tuple[str, bool]], re.Pattern[str], re.Pattern[str], frozenset[str]]:
    """(role word -> (canonical role, negative)), demographic-word regex, role regex, negative traits."""
    data = roles()
    table: dict[str, tuple[str, bool]] = {}
    for kind, negative in (("occupations", False), ("generic", False), ("negative", True)):
        for role in data[kind]:
            r = str(role).lower()
            table[r] = (r, negative)
            table.setdefault(_plural(r), (r, negative))
    alts = "|".join(re.escape(w) for w in sorted(table, key=len, reverse=True))
    role_rx = re.compile(rf"(?<![\w-])({alts})(?![\w-])")
    demo = [*data["gender_words"], *data["age_words"], *data["ethnicity_words"]]
    # colour words name an ethnicity right before a role ("a Black nurse"), not elsewhere ("a black cat")
    demo_alts = "|".join(re.escape(str(w).lower()) for w in sorted(demo, key=len, reverse=True))
    demo_rx = re.compile(
        rf"(?<![\w-])(?:{demo_alts})(?![\w-])|(?<![\w-])(?:black|white|brown)\s+(?:{alts})(?![\w-])|\b\d{{1,3}}[\s-]*(?:years?|yrs?)[\s-]*old\b|\bin (?:his|her|their) (?:\d0s|twenties|thirties|forties|fifties|sixties|seventies|eighties)\b"
    )
    return table, demo_rx, role_rx, frozenset(str(w).lower() for w in data["negative_traits"])


class Distribution(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    values: dict[str, float]

    @field_validator("values")
    @classmethod
    def _valid(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(p < 0 for p in v.values()) or sum(v.values()) <= 0:
            raise ValueError("a distribution needs at least one value and non-negative weights")
        return v


Attribute = Literal["gender", "ethnicity", "age"]


def _default_distributions() -> dict[Attribute, dict[str, float]]:
    # FairFace's seven groups (Kärkkäinen & Joo, WACV 2021), uniform; balanced binary gender;
    # adult age buckets
    return {
        "gender": {"female": 0.5, "male": 0.5},
        "ethnicity": {
            "Black": 1 / 7,
            "East Asian": 1 / 7,
            "Hispanic": 1 / 7,
            "Middle Eastern": 1 / 7,
            "South Asian": 1 / 7,
            "Southeast Asian": 1 / 7,
            "White": 1 / 7,
        },
        "age": {"young adult": 1 / 3, "middle-aged": 1 / 3, "elderly": 1 / 3},
    }


class DiversifyStage(PromptTransform):
    """Adds sampled demographic descriptors to people described only by role or trait."""

    optional: ClassVar[bool] = True  # an augmentation: never the reason a request is refused
    closed_vocabulary: ClassVar[bool] = True  # adds only the configured descriptors

    class Params(PeopleParams):
        seed: int = 0
        attributes: dict[Literal["gender", "ethnicity", "age"], dict[str, float]] = Field(
            default_factory=_default_distributions,
            description="per attribute, descriptor -> weight (normalised); omit an attribute to never add it",
        )
        negative_role_attributes: list[Attribute] = Field(
            default_factory=lambda: list[Attribute](["gender"]),
            description="attributes a negative role or trait may receive (ethnicity here re-creates stereotypes)",
        )
        plural: Literal["describe", "skip"] = "describe"
        plural_text: str = "of diverse genders, ethnicities and ages"
        max_mentions: int = Field(default=3, ge=1, le=10)
        skip_when_names: bool = True

        @field_validator("attributes")
        @classmethod
        def _dists(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
            for name, dist in v.items():
                Distribution(values=dist)
                if name == "age":
                    bad = [k for k in dist if re.search(r"child|kid|teen|boy|girl|baby|minor|infant|toddler", k, re.I)]
                    if bad:
                        raise ValueError(f"age descriptors must be adults; refusing {bad}")
            return v

    covers: ClassVar[frozenset[Category]] = frozenset()
    cost: ClassVar[str] = "model"

    @property
    def p(self) -> DiversifyStage.Params:
        return self.params  # type: ignore[return-value]

    def _names_person(self, ctx: PromptContext) -> bool:
        texts = {ctx.original, ctx.text}
        for r in ctx.results:
            a = r.artifacts.get("people")
            if isinstance(a, PeopleAnalysis) and a.text in texts and a.names_person:
                return True
            if any(c.kind in ("anonymize", "remove_pii") for c in r.changes):
                return True
        analyzer = get_people_analyzer(self.models, tuple(self.p.gazetteer), self.p.fuzzy_cutoff)
        return any(analyzer.analyze(t).names_person for t in texts)

    def skip_reason(self, ctx: PromptContext) -> str | None:
        _table, demo_rx, _role_rx, _neg = _lexicon()
        for t in (ctx.original.lower(), ctx.text.lower()):
            m = demo_rx.search(t)
            if m is not None:
                return f"the prompt already specifies demographics ({m.group(0)!r})"
        harms = [c for c, a in ctx.flagged_categories().items() if a > Action.ALLOW and c not in NOT_A_HARM]
        if harms:
            return "the prompt was flagged (" + ", ".join(sorted(harms)) + "); not augmenting it"
        if any(c.kind == "rewrite" for r in ctx.results for c in r.changes):
            return "the prompt was rewritten; not augmenting it"
        if self.p.skip_when_names and self._names_person(ctx):
            return "the prompt names a person"
        return None

    def scan(self, ctx: PromptContext) -> StageResult:
        table, _demo_rx, role_rx, negative_traits = _lexicon()
        lower = ctx.text.lower()
        mentions = list(role_rx.finditer(lower))
        if not mentions:
            return self.result([], message="no person described by role")
        why_not = self.skip_reason(ctx)
        if why_not:
            return self.result([], message=why_not)
        text = ctx.text
        edits: list[tuple[int, int, str, Change]] = []
        for k, m in enumerate(mentions[: self.p.max_mentions]):
            word = m.group(1)
            role, negative = table[word]
            after = lower[m.end() :]
            if re.match(r"\s*(?:'s|’s)\b", after) or re.match(
                r"\s+(?:shark|uniform|costume|outfit|car|office|station|"
                r"badge|hat|coat|kit|bag|desk|chair|room|team|day)\b",
                after,
            ):
                continue  # "nurse shark", "doctor's office", "police car": not a depicted person
            before = lower[: m.start()]
            trait = re.search(r"(\w+)\s+$", before)
            if trait is not None and trait.group(1) in negative_traits:
                negative = True
            plural = word != role and not re.search(r"\b(?:a|an)\s+$", before)
            if plural:
                if self.p.plural == "skip" or negative:
                    continue
                insert = f" {self.p.plural_text}"
                change = Change(
                    stage=self.name,
                    kind="diversify",
                    before=text[m.start() : m.end()],
                    after=text[m.start() : m.end()] + insert,
                    reason=f"plural role {word!r} described as diverse",
                    span=(m.start(), m.end()),
                )
                edits.append((m.end(), m.end(), insert, change))
                continue
            allowed = self.p.negative_role_attributes if negative else list(ATTRIBUTE_ORDER)
            sampled = self._sample(
                ctx.original, k, [a for a in ATTRIBUTE_ORDER if a in allowed and a in self.p.attributes]
            )
            if not sampled:
                continue
            words = [sampled[a] for a in ATTRIBUTE_ORDER if a in sampled and a != "gender"]
            original_word = text[m.start() : m.end()]
            if role in GENERIC_NOUNS and "gender" in sampled:
                noun = GENDER_NOUNS.get(sampled["gender"], f"{sampled['gender']} person")
                phrase = " ".join([*words, noun])
            else:
                if "gender" in sampled:
                    words.append(sampled["gender"])
                phrase = " ".join([*words, original_word])
            start = m.start()
            art = re.search(r"\b(a|an)\s+$", text[: m.start()], re.IGNORECASE)
            if art is not None:
                start = art.start()
                article = (
                    "an" if phrase[:1].lower() in "aeiou" and not phrase.lower().startswith(("uni", "eu")) else "a"
                )
                if art.group(1)[:1].isupper():
                    article = article.capitalize()
                phrase = f"{article} {phrase}"
            change = Change(
                stage=self.name,
                kind="diversify",
                before=text[start : m.end()],
                after=phrase,
                reason=f"{'negative ' if negative else ''}role {role!r} without demographics: sampled "
                + ", ".join(f"{a}={v!r}" for a, v in sampled.items()),
                span=(start, m.end()),
            )
            edits.append((start, m.end(), phrase, change))
        if not edits:
            return self.result([], message="no role to augment")
        out = text
        for s, e, repl, _c in sorted(edits, key=lambda x: -x[0]):
            out = out[:s] + repl + out[e:]
        return self.result([], prompt=out, changes=[c for *_x, c in edits])

    def _sample(self, prompt: str, index: int, attrs: list[str]) -> dict[str, str]:
        digest = hashlib.sha256(f"{self.p.seed}\x00{prompt}\x00{index}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        out: dict[str, str] = {}
        for a in attrs:
            dist = self.p.attributes[a]  # type: ignore[index]
            keys = list(dist)
            out[a] = rng.choices(keys, weights=[dist[k] for k in keys], k=1)[0]
        return out
