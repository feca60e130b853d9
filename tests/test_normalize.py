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
