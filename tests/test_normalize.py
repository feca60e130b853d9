"""Every normalization class, with inputs that must match and inputs that must not."""

from __future__ import annotations

import pytest

from t2iguard.core.stage import ModelCache
from t2iguard.prompt.normalize import Normalizer, default_normalizer


@pytest.fixture(scope="module")
def norm() -> Normalizer:
    return default_normalizer(ModelCache())


@pytest.mark.parametrize(
    ("text", "canonical", "applied"),
    [
        # Unicode NFKC: full-width forms, mathematical alphanumerics, circled letters, ligatures
        ("ｎａｋｅｄ", "naked", "fullwidth"),
        ("𝓷𝓪𝓴𝓮𝓭 woman", "naked woman", "nfkc"),
        ("ⓝⓤⓓⓔ", "nude", "nfkc"),
        ("ﬁgure", "figure", "nfkc"),
        # homoglyphs (Unicode confusables): Cyrillic/Greek letters that look Latin
        ("nаked", "naked", "homoglyph"),  # Cyrillic а
        ("ѕuісіdе", "suicide", "homoglyph"),  # Cyrillic ѕ, і, е
        ("nαkεd", "naked", "homoglyph"),  # Greek α, ε
        ("🅽🆄🅳🅴", "nude", "homoglyph"),  # negative squared letters
        # zero-width and control characters
        ("n\u200bak\u200ded", "naked", "invisible"),
        ("su\u2060ici\ufeffde", "suicide", "invisible"),
        ("n\u00adaked", "naked", "invisible"),  # soft hyphen
        ("k\x00ill", "kill", "invisible"),
        # combining marks (zalgo) and diacritics
        ("n̸a̸k̸e̸d̸", "naked", "combining"),
        ("nüdé", "nude", "diacritic"),
        # leetspeak
        ("suicid3", "suicide", "leetspeak"),
        ("n4k3d", "naked", "leetspeak"),
        ("k1ll", "kill", "leetspeak"),
        ("$3x", "sex", "leetspeak"),
        ("p0rn", "porn", "leetspeak"),
        ("1ust", "lust", "leetspeak"),
        # separators inside words
        ("s u i c i d e", "suicide", "separator"),
        ("n.a.k.e.d", "naked", "separator"),
        ("n-a-k-e-d", "naked", "separator"),
        ("n_a_k_e_d", "naked", "separator"),
        ("n*a*k*e*d", "naked", "separator"),
        ("n . a . k . e . d", "naked", "separator"),
        ("n 4 k 3 d", "naked", "separator"),
        # repeated letters
        ("naaaaked", "naked", "repeat"),
        ("kiiiilll", "kill", "repeat"),
        ("suuuiciiide", "suicide", "repeat"),
        # prompt weights: a negative weight steers the image away from a concept (concept
        # arithmetic's negation); a positive one only emphasises
        ("a woman on a bed, (clothes:-1.5)", "a woman on a bed, without clothes", "negative-weight"),
        ("a man, ( dressed : −0.8 )", "a man, without dressed", "negative-weight"),
        ("(masterpiece:1.2), a (red:0.8) car", "masterpiece, a red car", "weight"),
    ],
)
def test_normalization_classes(norm: Normalizer, text: str, canonical: str, applied: str) -> None:
    out = norm.normalize(text)
    assert out.text == canonical
    assert applied in out.applied
    assert out.original == text


@pytest.mark.parametrize(
    "text",
    [
        "A man riding a wave on top of a surfboard in the ocean.",
        "4k wallpaper of a 3d render",
        "a 1920s jazz club",
        "r2d2 and c3po on tatooine",
        "the well-known artist",
        "the pen is red",
        "sooo good",
        "mp3 player on a desk",
        'A "5-Star" hotel room',  # a quote after a space opens a phrase: no spelled-out "a5"
        "the 16th floor at 6am",
    ],
)
def test_ordinary_text_keeps_its_meaning(norm: Normalizer, text: str) -> None:
    out = norm.normalize(text)
    # apart from case and whitespace, ordinary prompts are not rewritten into other words
    expected = {
        "sooo good": "so good",
    }.get(text, " ".join(text.lower().split()))
    assert out.text == expected


def test_offsets_map_back_to_the_original(norm: Normalizer) -> None:
    text = "a photo of a n\u200b4k\u200b3d woman"
    out = norm.normalize(text)
    word = next(w for w in out.words if w.canonical == "naked")
    assert text[word.start : word.end] == "n\u200b4k\u200b3d"
    assert out.text == "a photo of a naked woman"


def test_spaced_words_are_not_joined(norm: Normalizer) -> None:
    # only single letters spelled out are joined; whole words separated by spaces stay apart
    out = norm.normalize("the pen is mightier")
    assert [w.text for w in out.words] == ["the", "pen", "is", "mightier"]


def test_without_vocabulary_canonical_text_is_only_folded() -> None:
    out = Normalizer().normalize("Ｈｅｌｌｏ n4k3d")
    assert out.text == "hello n4k3d"  # folded, but no dictionary-guided decoding
    assert [w.skeleton for w in out.words] == ["heiio", "naked"]  # matching skeleton still decodes


def test_genuine_non_latin_words_stay_readable(norm: Normalizer) -> None:
    # a whole word in another script is language, not a disguise: classifiers get it as written
    out = norm.normalize("голая женщина на пляже")
    assert out.text == "голая женщина на пляже"
    assert "homoglyph" not in out.applied
    # ...but matching still sees the Latin look-alike skeleton, and mixed-script words fold
    assert norm.normalize("ѕех").text == "sex"  # all Cyrillic, folds to an English word
    assert norm.normalize("nαkεd").text == "naked"  # Latin mixed with Greek


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a woman performs a l:e:w:d act", "a woman performs a lewd act"),  # article swallowed by the join
        ("a photo of a k i l l e r", "a photo of a killer"),
        ("her e/y/e/s c:o:l:d", "her eyes cold"),  # the cut where the prompt had a space wins the tie
        ("a crimi•nal h.ides", "a criminal hides"),
    ],
)
def test_letters_joined_across_words_are_split_into_words(norm: Normalizer, text: str, canonical: str) -> None:
    """Classifiers read the canonical text: a join that spans several words is cut back into them."""
    assert norm.normalize(text).text == canonical


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a nakde woman", "a naked woman"),
        ("pornografy poster", "pornography poster"),
        ("a suicde note", "a suicide note"),
        ("convul$es on the floor", "convulsed on the floor"),  # leetspeak whose decoding is a typo
    ],
)
def test_typos_are_corrected_for_the_classifiers(norm: Normalizer, text: str, canonical: str) -> None:
    out = norm.normalize(text)
    assert out.text == canonical
    assert "misspelling" in out.applied
    # the keyword view keeps the word as written: the blocklist does its own fuzzy matching on it
    assert all(w.corrected is None or w.corrected != w.text for w in out.words)


@pytest.mark.parametrize(
    "text",
    [
        "a painting by greg rutkowski and ilya kuvshinov, trending on artstation",  # names, jargon
        "a portrait of Wojtek Siudmak in the rain",  # a capitalised word inside a sentence is a name
        "colorful airplanes over the harbor, traveling",  # American spellings are words
        "a selfie with a frisbee on the countertop",
        "a trip to tatooine",  # two edits that change the sound ("tattooing") need context too
    ],
)
def test_names_jargon_and_american_spellings_are_not_corrected(norm: Normalizer, text: str) -> None:
    out = norm.normalize(text)
    assert "misspelling" not in out.applied
    assert out.text == " ".join(text.lower().split())


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a stond-up comedian", "a stand-up comedian"),  # each part of a hyphenated word
        ("the weman's hat", "the woman's hat"),  # the stem of a possessive
        ("a man'z hat", "a mans hat"),  # "'z" is the possessive, written as for "man's"
        ("a mother-in-law", "a mother-in-law"),
        ("o'neill street", "o'neill street"),
        ("Zarya-Kinn is eating a sandwich", "zarya-kinn is eating a sandwich"),  # capitalised parts: a name
        ("a spidr-man mask", "a spider-man mask"),  # one edit per part
    ],
)
def test_typos_inside_hyphenated_and_possessive_words(norm: Normalizer, text: str, canonical: str) -> None:
    assert norm.normalize(text).text == canonical


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a womon walking her dog", "a woman walking her dog"),  # context: "a woman", not "women"
        ("a cat sitting nxet to a dog", "a cat sitting next to a dog"),  # four letters
        ("a payn in the neck", "a pain in the neck"),  # one edit either way: the one that sounds alike
        ("a noisy bathrum", "a noisy bathroom"),  # two edits below seven letters when it sounds the same
        ("a poossy cat", "a pussy cat"),
    ],
)
def test_typos_are_ranked_by_context_and_sound(norm: Normalizer, text: str, canonical: str) -> None:
    """The noisy-channel ranking: frequency in context, plus a bonus for candidates that sound alike."""
    out = norm.normalize(text)
    assert out.text == canonical
    assert "misspelling" in out.applied


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        # the possessive is no change of separator style; as for the word written plainly, the
        # apostrophe goes where word + "s" is a word ("nurse's" -> "nurses")
        ("A w o m a n ' s figure", "a woman's figure"),
        ("the w|o|m|a|n|'|s figure", "the woman's figure"),
        ("a n.u.r.s.e.'.s hat", "a nurses hat"),
        ("A t ubby man", "a tubby man"),  # an article, then a word split after its first letter
        ("a m ove to the left", "a move to the left"),
        ("I a m here", "i am here"),  # two letters spelled out, and no word after them to take one
    ],
)
def test_spelled_out_possessives_and_articles(norm: Normalizer, text: str, canonical: str) -> None:
    assert norm.normalize(text).text == canonical


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("A chi1d's 3ye$ m337 the lens", "a child's eyes meet the lens"),  # possessive of a leet word
        ("A fre3-rang3 paren7", "a free-range parent"),  # hyphenated compound
        ("⒩⒜⒦⒠⒟ woman", "naked woman"),  # parenthesized letters lose their parentheses
        ("different col0r$ of paper", "different colors of paper"),
    ],
)
def test_leetspeak_in_compounds_and_font_letters(norm: Normalizer, text: str, canonical: str) -> None:
    assert norm.normalize(text).text == canonical


@pytest.mark.parametrize(
    ("text", "readable"),
    [
        ("A b_r_o_w_n ho~rse stan,ding", "A brown horse standing"),
        ("ｊｏｈｎ ｄｏｅ at the Ｂｅａｃｈ", "john doe at the Beach"),
        ("Jo\u200bhn D\u200boe", "John Doe"),
        ("PH0T0 of J0HN", "PHOTO of JOHN"),
        ("Фото Владимира Путина", "Фото Владимира Путина"),  # genuine Cyrillic stays Cyrillic
    ],
)
def test_readable_view_keeps_case_and_maps_back(norm: Normalizer, text: str, readable: str) -> None:
    out = norm.normalize(text)
    view, src = out.readable()
    assert view == readable
    assert len(src) == len(view)
    assert src == sorted(src) and all(0 <= i < len(text) for i in src)
    # every letter of the view comes from a character the user wrote at that place
    assert text[src[view.index(readable.split()[-1])]].casefold() != " "


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        # a change of separator style is a word boundary, even between names the vocabulary lacks
        ("m_a_r_k z u c k e r b e r g f*l*o*a*t*i*n*g in a tank", "mark zuckerberg floating in a tank"),
        ("by S+e+r+g+e+y K o l e s o v, cinematic", "by sergey kolesov, cinematic"),
        ("a s~t~r~e~e~t f•ight", "a street fight"),
        # "!" or "|" standing for a first letter
        ("!tem$ on a table", "items on a table"),
        ("highly !ntrica73", "highly intricate"),
    ],
)
def test_separator_style_changes_split_words_and_leading_symbols_decode(
    norm: Normalizer, text: str, canonical: str
) -> None:
    assert norm.normalize(text).text == canonical


@pytest.mark.parametrize("text", ["wow! great", "| vintage | 4k", "!!!", "a | b"])
def test_punctuation_symbols_stay_punctuation(norm: Normalizer, text: str) -> None:
    assert norm.normalize(text).text == text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        # a name outside the vocabulary, in leetspeak or split by a symbol no word contains, is read
        # back as the name, so that the classifiers see what the user meant
        ("a portrait by m0r3ll1ni", "a portrait by morellini"),
        ("a portrait by $tavrakis", "a portrait by stavrakis"),
        ("a portrait by Zab•rowski", "a portrait by zabrowski"),
        ("a portrait by vel~tani", "a portrait by veltani"),
        ("a portrait by zan|bretti", "a portrait by zanbretti"),
    ],
)
def test_names_outside_the_vocabulary_are_decoded(norm: Normalizer, text: str, canonical: str) -> None:
    out = norm.normalize(text)
    assert out.text == canonical
    assert out.obfuscation(), "the disguise is reported"


@pytest.mark.parametrize(
    "text",
    ["unreal_engine render", "a q&a session on m&ms", "covid19 masks in 1080p", "the 16th floor", "a 3-way junction"],
)
def test_symbols_in_ordinary_tokens_are_not_decoded(norm: Normalizer, text: str) -> None:
    out = norm.normalize(text)
    assert out.text == text
    assert out.obfuscation() == {}


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("a n4k3d woman", {"leetspeak"}),
        ("a n.a.k.e.d woman", {"separator"}),
        ("a s u i c i d e note", {"separator"}),
        ("a nаkеd woman", {"homoglyph"}),  # Cyrillic а, е
        ("a na\u200bked woman", {"invisible"}),
        ("a nakd wman on a bech", {"misspelling"}),
        ("a red car", set()),
        ("a close-up of the U.S flag, black/white", set()),
        ("a womn on a bench", set()),  # one typo is no disguise
        ("a woman standing xqvorlump zyghtrenk bropsquilt on a beach", {"gibberish"}),
        ("a woman xqvorlump zyghtrenk on a beach", set()),  # two non-words are no soup
        ("a portrait by Xqvorlump Zyghtrenk and Bropsquilt Vemtrasko", set()),  # capitalised: names
        # three non-words diluted in a long prompt (under a sixth of its words)
        (
            "a man xqvorlump zyghtrenk bropsquilt sitting under a tall green tree with his old dog and two cats "
            "near the river bank in the summer evening",
            set(),
        ),
    ],
)
def test_obfuscation_evidence(norm: Normalizer, text: str, kinds: set[str]) -> None:
    assert set(norm.normalize(text).obfuscation()) == kinds


@pytest.mark.parametrize(
    ("text", "view"),
    [
        # the non-words go, punctuation and every readable word stay
        ("a woman standing xqvorlump, zyghtrenk on a beach bropsquilt", "a woman standing, on a beach"),
        # a word the speller corrects is read corrected, and a capitalised non-word is a name
        ("a womn by Xqvorlump on the bech", "a woman by xqvorlump on the beach"),
        ("a red car", "a red car"),
    ],
)
def test_the_view_without_gibberish(norm: Normalizer, text: str, view: str) -> None:
    assert norm.normalize(text).without_gibberish() == view


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        # one sentence, however long its words, is one part: nothing to read twice
        ("a cat asleep on a mat", []),
        # sentences; a short one reads with its neighbour, one without a letter is dropped
        ("A red bus. A naked woman on a bed! A dog", ["a red bus.", "a naked woman on a bed! a dog"]),
        ("A parking lot filled with parked cars..", []),
        (
            "a bright kitchen | a woman wearing nothing | a dog on the porch",
            ["a bright kitchen", "a woman wearing nothing", "a dog on the porch"],
        ),
        # no break inside a quotation or a number
        ('"Oh no!" cried the man at 3.5 metres', []),
        # a long sentence: runs of whole clauses of at most 8 words
        (
            "a red bus at the stop, a bowl of fruit on a table, a woman wearing nothing, two dogs in a park",
            ["a red bus at the stop,", "a bowl of fruit on a table,", "a woman wearing nothing,", "two dogs in a park"],
        ),
    ],
)
def test_the_segments_of_a_prompt(norm: Normalizer, text: str, parts: list[str]) -> None:
    assert norm.normalize(text).segments(8) == parts


def test_segments_window_a_clause_longer_than_the_limit(norm: Normalizer) -> None:
    words = ["the", "old", "grey", "horse", "walked", "slowly", "down", "the", "long", "dusty", "road"]
    parts = norm.normalize(" ".join(words)).segments(4)
    assert parts == [" ".join(words[s : s + 4]) for s in (0, 2, 4, 6)] + [" ".join(words[7:])]
    with pytest.raises(ValueError, match="at least 3"):
        norm.normalize("a b c").segments(2)


@pytest.mark.parametrize("text", ["a woman on a bed, (clothes:-1.5)", "a man, ( dressed : −0.8 )"])
def test_a_negative_weight_maps_back_to_its_parenthesis(norm: Normalizer, text: str) -> None:
    # the inserted word points at the weight's opening parenthesis in what the user wrote
    word = next(w for w in norm.normalize(text).words if w.canonical == "without")
    assert text[word.start] == "("


@pytest.mark.parametrize("text", ["a (16:9) frame", "the meeting (10:30) room", "a (big) dog"])
def test_ratios_times_and_parentheses_are_not_weights(norm: Normalizer, text: str) -> None:
    assert norm.normalize(text).text == text
