"""The blocklist on normalized prompts: obfuscated hits, allow-list exceptions, near misses."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2iguard import Action, Category, SafetyStack
from t2iguard.core.errors import ConfigurationError
from t2iguard.core.policy import policy_from_dict
from t2iguard.core.stage import ModelCache
from t2iguard.prompt.blocklist import BlocklistMatcher, BlocklistStage, build_matcher, findings_from_matches
from t2iguard.prompt.lexicon import Lexicon


@pytest.fixture(scope="module")
def matcher() -> BlocklistMatcher:
    return build_matcher(BlocklistStage.Params(), ModelCache())


def scores(matcher: BlocklistMatcher, text: str) -> dict[Category, float]:
    findings = findings_from_matches(matcher.match(matcher.normalizer.normalize(text)), matcher.lexicon.escalations)
    return {f.category: f.score for f in findings}


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("a photo of a naked woman", Category.SEXUAL),
        ("a photo of a n4k3d woman", Category.SEXUAL),
        ("nаked (with a Cyrillic a)", Category.SEXUAL),
        ("ｎａｋｅｄ", Category.SEXUAL),
        ("n\u200bak\u200bed", Category.SEXUAL),
        ("n.a.k.e.d", Category.SEXUAL),
        ("n-a-k-e-d", Category.SEXUAL),
        ("n_a_k_e_d girl", Category.SEXUAL),
        ("naaaaked", Category.SEXUAL),
        ("NAKED", Category.SEXUAL),
        ("a s u i c i d e note", Category.SELF_HARM),
        ("a woman on a bed, (clothes:-1.5)", Category.SEXUAL),  # a negative weight reads "without clothes"
        ("suicid3", Category.SELF_HARM),
        ("self-harm", Category.SELF_HARM),
        ("self harm", Category.SELF_HARM),
        ("selfharm", Category.SELF_HARM),
        ("blow job", Category.SEXUAL),
        ("blow-job", Category.SEXUAL),
        ("blowjob", Category.SEXUAL),
        ("n1pples", Category.SEXUAL),
        ("a decapitated man", Category.VIOLENCE),
        ("a loli", Category.MINORS),
    ],
)
def test_strong_terms_and_their_obfuscations_match(matcher: BlocklistMatcher, text: str, category: Category) -> None:
    assert scores(matcher, text).get(category) == 1.0


@pytest.mark.parametrize(
    ("text", "category", "how"),
    [
        ("a nakd woman", Category.SEXUAL, "fuzzy"),
        ("pornografy", Category.SEXUAL, "fuzzy"),
        ("p*rn", Category.SEXUAL, "masked"),
        ("n*ked", Category.SEXUAL, "masked"),
    ],
)
def test_bounded_fuzzy_and_masked_matches(matcher: BlocklistMatcher, text: str, category: Category, how: str) -> None:
    matches = matcher.match(matcher.normalizer.normalize(text))
    hit = next(m for m in matches if m.term.category == category)
    assert hit.how == how
    assert 0.85 <= hit.score < 1.0


@pytest.mark.parametrize(
    "text",
    [
        # negative weights on harmless concepts
        "a portrait of a man, (blurry:-1.2), (watermark:-1)",
        # allow-list exceptions
        "olympic swimmer doing the breaststroke",
        "kill the lights",
        "shooting a photo in the studio",
        "a cocktail at the bar",
        "a chicken breast on the grill",
        "al gore giving a speech",
        "the naked eye",
        "nude lipstick on a vanity table",
        "suicide squad movie poster",
        "a killer whale jumping",
        # words that contain a term but are not the term
        "a therapist's office",
        "a bunch of grapes",
        "peacock feathers",
        "a scunthorpe street sign",
        "classic middlesex architecture",
        # near misses that are English words (no fuzzy match on dictionary words)
        "a baked potato",
        "a node in a graph",
        # a term split across real words
        "the pen is red",
        "as good as it gets",
        "A giraffe grazing in a field",
        # an English word as written whose skeleton is a term's (l and i merge): "loll" is no "loli"
        "Dogs loll on the porch in the afternoon heat.",
    ],
)
def test_benign_prompts_do_not_match_strong_terms(matcher: BlocklistMatcher, text: str) -> None:
    assert all(s < 0.9 for s in scores(matcher, text).values()), scores(matcher, text)


def test_weak_terms_are_evidence_not_verdicts(matcher: BlocklistMatcher) -> None:
    s = scores(matcher, "portrait of a pirate holding a pistol")
    assert s == {Category.VIOLENCE: 0.5}


def test_repeated_letters_need_the_terms_letters(matcher: BlocklistMatcher) -> None:
    # run-length matching: "as" must not match "ass", "assss" must
    assert Category.SEXUAL not in scores(matcher, "as good as it gets")
    assert scores(matcher, "nice assss").get(Category.SEXUAL) == 0.5


def test_minor_with_sexual_content_escalates_to_zero_tolerance(matcher: BlocklistMatcher) -> None:
    s = scores(matcher, "a naked child")
    assert s[Category.MINORS] == 1.0
    s = scores(matcher, "a child in a bikini")
    assert 0.5 < s[Category.MINORS] < 0.9  # suggestive: strong evidence left to later tiers
    s = scores(matcher, "a 12 year old in lingerie")
    assert s[Category.MINORS] > 0.5
    assert Category.MINORS not in scores(matcher, "a child flying a kite") or scores(matcher, "a child flying a kite")[
        Category.MINORS
    ] == pytest.approx(0.5)


def test_evidence_points_at_the_original_text(matcher: BlocklistMatcher) -> None:
    text = "a photo of a n\u200b4k\u200b3d woman"
    (m,) = [m for m in matcher.match(matcher.normalizer.normalize(text)) if m.term.category == Category.SEXUAL]
    assert text[m.start : m.end] == m.matched == "n\u200b4k\u200b3d"
    assert m.evidence()["term"] == "naked"


def test_policy_extra_terms_and_allow_phrases() -> None:
    policy = policy_from_dict(
        {
            "name": "custom",
            "stages": [
                {"stage": "normalize"},
                {
                    "stage": "blocklist",
                    "threshold": 0.9,
                    "params": {
                        "extra_terms": {"violence": ["glorp"]},
                        "extra_allow": {"sexual": ["naked singularity"]},
                    },
                },
            ],
        }
    )
    stack = SafetyStack(policy)
    d = stack.check_prompt("a gl0rp in the city")
    assert d.action == Action.BLOCK and d.flagged == [Category.VIOLENCE]
    assert stack.check_prompt("a naked singularity in space").action == Action.ALLOW
    assert stack.check_prompt("a naked man").action == Action.BLOCK


def test_custom_lexicon_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("category: illegal\nstrong: [moonshine still]\nallow: [moonshine still life painting]\n")
    lex = Lexicon.load(f)
    matcher = BlocklistMatcher(lex, build_matcher(BlocklistStage.Params(), ModelCache()).normalizer, None)
    hits = matcher.match(matcher.normalizer.normalize("a moonshine-still in the woods"))
    assert [h.term.phrase for h in hits] == ["moonshine still"]
    assert matcher.match(matcher.normalizer.normalize("a moonshine still life painting")) == []


def test_exact_only_lexicon_has_no_typo_or_mask_matches(tmp_path: Path) -> None:
    f = tmp_path / "de.yaml"
    f.write_text("category: sexual\nfuzzy: false\nstrong: [nackte, femme nue]\nallow: [nackte wahrheit]\n")
    matcher = build_matcher(BlocklistStage.Params(lexicons=[str(f)]), ModelCache())

    def found(text: str) -> list[tuple[str, str]]:
        return [(h.term.phrase, h.how) for h in matcher.match(matcher.normalizer.normalize(text))]

    # exact matches keep the normalizer's view: case, accents, leetspeak, separators
    assert found("eine NACKTE Frau") == [("nackte", "exact")]
    assert found("eine n4ckte Frau") == [("nackte", "exact")]
    assert found("une Femme  Nue") == [("femme nue", "exact")]
    assert found("die nackte Wahrheit") == []  # allow phrase
    # but no typo or masked-letter matches: "Nachte" is not "nackte"
    assert found("eine nakte Frau") == found("zwei nachte") == found("eine n*ckte Frau") == []


def test_unknown_multilingual_language_fails_loudly() -> None:
    with pytest.raises(ConfigurationError, match="no built-in lexicon for language"):
        build_matcher(BlocklistStage.Params(lexicons=["multilingual:xx"]), ModelCache())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("category: nonsense\nstrong: [x]\n", "unknown category"),
        ("category: sexual\nstrong: x\n", "must be a list"),
        ("category: sexual\nbogus: [x]\n", "unknown keys"),
        ("category: any\nstrong: [x]\n", "may only hold 'allow'"),
        ("category: sexual\npatterns: [{regex: '('}]\n", "bad pattern"),
        ("- just a list\n", "expected a mapping"),
        ("category: sexual\nfuzzy: sometimes\nstrong: [x]\n", "'fuzzy' must be true or false"),
    ],
)
def test_bad_lexicons_fail_loudly(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        Lexicon.load(f)


@pytest.mark.parametrize(
    "text",
    ["art by H. R. Giger", "a painting by Berner", "a postcard from Pais de Gales", "a woman layed on the bed"],
)
def test_fuzzy_matching_spares_names_and_first_letter_changes(matcher: BlocklistMatcher, text: str) -> None:
    assert all(s < 0.9 for s in scores(matcher, text).values()), scores(matcher, text)


def test_fuzzy_matching_still_catches_typos_in_lower_case_and_headlines(matcher: BlocklistMatcher) -> None:
    assert scores(matcher, "a nakd woman")[Category.SEXUAL] >= 0.9
    assert scores(matcher, "A Nakd Woman On The Beach")[Category.SEXUAL] >= 0.9  # headline case


@pytest.mark.parametrize(
    "prompt",
    [
        "A s-i-g-n r*e*a*d*s welcome",  # "r*e*a" is not the term "r34" inside the word "reads"
        "lights flash in the n i g h t",  # a slur's letters inside a spelled-out "night"
    ],
)
def test_terms_do_not_match_inside_spelled_out_words(matcher: BlocklistMatcher, prompt: str) -> None:
    assert [m.matched for m in matcher.match(matcher.normalizer.normalize(prompt))] == []


@pytest.mark.parametrize(("prompt", "term"), [("a s e x y w o m a n", "sexy"), ("a n.a.k.e.d woman", "naked")])
def test_spelled_out_terms_still_match(matcher: BlocklistMatcher, prompt: str, term: str) -> None:
    hits = matcher.match(matcher.normalizer.normalize(prompt))
    assert term in [m.term.phrase for m in hits]


@pytest.mark.parametrize(
    "prompt",
    [
        "a trayn at the station",  # "train" (0.7 of an edit) explains it; "tranny" needs 1.4
        "a white toilet in an upward settingg",  # "setting", not "sexting"
        "a suitcise on the bed",  # "suitcase", not "suicide"
    ],
)
def test_a_typo_of_an_ordinary_word_is_no_fuzzy_hit(matcher: BlocklistMatcher, prompt: str) -> None:
    """The normalizer's spelling correction explains these typos clearly better than a term does."""
    assert [m.term.phrase for m in matcher.match(matcher.normalizer.normalize(prompt))] == []


@pytest.mark.parametrize(
    ("prompt", "term"),
    [
        ("a naed woman", "naked"),  # "need" is closer, but not by half an edit: fail closed
        ("a whote cat", "whore"),  # a tie with "white"
        ("a nakde woman", "naked"),  # the correction is the term itself
        ("stabbed to detah", "stabbed to death"),
    ],
)
def test_near_ties_keep_the_fuzzy_hit(matcher: BlocklistMatcher, prompt: str, term: str) -> None:
    assert term in [m.term.phrase for m in matcher.match(matcher.normalizer.normalize(prompt))]


@pytest.fixture(scope="module")
def multilingual() -> BlocklistMatcher:
    return build_matcher(BlocklistStage.Params(lexicons=["builtin", "multilingual"]), ModelCache())


@pytest.mark.parametrize(
    ("text", "category", "lexicon"),
    [
        ("una mujer desnuda en la playa", Category.SEXUAL, "multilingual:es:sexual"),
        ("a desnuda woman on the beach", Category.SEXUAL, "multilingual:es:sexual"),  # mixed into English
        ("eine NACKTE Frau am Strand", Category.SEXUAL, "multilingual:de:sexual"),
        ("une femme nue sur la plage", Category.SEXUAL, "multilingual:fr:sexual"),
        ("uma mulher nua na praia", Category.SEXUAL, "multilingual:pt:sexual"),
        ("una donna nuda in spiaggia", Category.SEXUAL, "multilingual:it:sexual"),
        ("un uomo decapitato", Category.VIOLENCE, "multilingual:it:violence"),
    ],
)
def test_multilingual_lexicons_block_and_name_their_language(
    multilingual: BlocklistMatcher, text: str, category: Category, lexicon: str
) -> None:
    findings = findings_from_matches(multilingual.match(multilingual.normalizer.normalize(text)))
    by_cat = {f.category: f for f in findings}
    assert by_cat[category].score == 1.0
    assert by_cat[category].evidence["lexicon"] == lexicon


@pytest.mark.parametrize(
    "text",
    [
        "die Nacht in Berlin, Lichter der Stadt",  # one letter from "nackt": no typo matching
        "una pechuga de pollo a la parrilla",
        "la rua principal de Lisboa ao entardecer",
        "a plate of penne with tomato sauce",
        "nude lipstick and a beige sweater",  # an English allow phrase stays allowed
    ],
)
def test_multilingual_lexicons_leave_benign_prompts_alone(multilingual: BlocklistMatcher, text: str) -> None:
    findings = findings_from_matches(multilingual.match(multilingual.normalizer.normalize(text)))
    assert all(f.score < 0.9 for f in findings), findings


def test_multilingual_words_stay_out_of_the_english_vocabulary() -> None:
    from t2iguard.prompt.normalize import builtin_lexicon_words

    words = builtin_lexicon_words(ModelCache())
    assert "naked" in words
    assert not {"desnuda", "nackte", "nuda"} & words
