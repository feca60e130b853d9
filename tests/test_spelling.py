"""The spelling corrector on its own: its noisy-channel ranking over small dictionaries a test writes,
and its loud errors on bad configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2iguard.core.errors import ConfigurationError
from t2iguard.prompt.spelling import SpellCorrector, typo_distance


@pytest.fixture
def dictionaries(tmp_path: Path) -> tuple[Path, Path]:
    uni = tmp_path / "unigrams.txt"
    uni.write_text("women 900\nwoman 100\nnext 500\nnest 50\nto 5000\na 9000\npain 40\npay 400\n")
    bi = tmp_path / "bigrams.txt"
    bi.write_text("a woman 80\na women 2\nnext to 400\nnest to 1\n")
    return uni, bi


def test_context_outranks_frequency(dictionaries: tuple[Path, Path]) -> None:
    uni, bi = dictionaries
    speller = SpellCorrector(uni, bigrams=bi)
    assert speller.correct("womon") == "women"  # no context: the more frequent word
    assert speller.correct("womon", prev="a") == "woman"  # "a woman" is the likely reading
    assert speller.correct("nxet", next="to") == "next"


def test_without_bigrams_the_frequent_candidate_wins(dictionaries: tuple[Path, Path]) -> None:
    uni, _ = dictionaries
    speller = SpellCorrector(uni, bigrams=None)
    assert speller.correct("womon", prev="a") == "women"


def test_a_short_word_can_be_made_to_need_context_that_vouches_for_it(dictionaries: tuple[Path, Path]) -> None:
    uni, bi = dictionaries
    speller = SpellCorrector(uni, bigrams=bi, context_length=5)
    assert speller.correct("nxet") is None  # four letters and no neighbour: might be a name
    assert speller.correct("nxet", next="to") == "next"
    assert SpellCorrector(uni, bigrams=bi).correct("nxet") == "next"  # the default corrects it


def test_common_typos_cost_less_than_other_edits() -> None:
    assert typo_distance("nakde", "naked") == pytest.approx(0.7)  # two letters swapped
    assert typo_distance("nakked", "naked") == pytest.approx(0.7)  # a doubled letter
    assert typo_distance("nakid", "naked") == pytest.approx(0.7)  # a wrong vowel
    assert typo_distance("nsked", "naked") == pytest.approx(0.7)  # a neighbouring key
    assert typo_distance("npked", "naked") == pytest.approx(1.0)  # any other substitution
    assert typo_distance("naked", "naked") == 0.0


def test_a_candidate_that_sounds_alike_wins_at_equal_distance(tmp_path: Path) -> None:
    uni = tmp_path / "u.txt"
    uni.write_text("pain 40\npay 200\n")
    speller = SpellCorrector(uni, bigrams=None, cheap_edit=1.0)
    assert speller.correct("payn") == "pain"  # "pay" is five times as frequent but does not sound alike
    assert SpellCorrector(uni, bigrams=None, cheap_edit=1.0, sound_cost=1.0).correct("payn") == "pay"


def test_words_of_the_dictionary_and_non_letters_are_left_alone(dictionaries: tuple[Path, Path]) -> None:
    uni, bi = dictionaries
    speller = SpellCorrector(uni, bigrams=bi)
    assert speller.correct("woman") is None
    assert speller.correct("w0man") is None
    assert speller.correct("womön") is None


def test_bad_configuration_is_a_loud_error(tmp_path: Path, dictionaries: tuple[Path, Path]) -> None:
    uni, _ = dictionaries
    with pytest.raises(ConfigurationError, match="spelling dictionary not found"):
        SpellCorrector(tmp_path / "missing.txt").correct("womon")
    with pytest.raises(ConfigurationError, match="bigram dictionary not found"):
        SpellCorrector(uni, bigrams=tmp_path / "missing.txt").correct("womon")
    empty = tmp_path / "empty.txt"
    empty.write_text("not a bigram line\n")
    with pytest.raises(ConfigurationError, match="could not read the bigram dictionary"):
        SpellCorrector(uni, bigrams=empty).correct("womon")
    with pytest.raises(ConfigurationError, match="min_length"):
        SpellCorrector(uni, min_length=8, long_word=4)
    with pytest.raises(ConfigurationError, match="edit_cost"):
        SpellCorrector(uni, edit_cost=2.0)
    with pytest.raises(ConfigurationError, match="cheap_edit"):
        SpellCorrector(uni, cheap_edit=0.0)
