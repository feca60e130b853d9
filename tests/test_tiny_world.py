"""The tiny model's emoji world, tokenizer, concept list and bundled concept classifier."""

from __future__ import annotations

import numpy as np
import pytest

from t2iguard.core.types import Category
from t2iguard.generate.tiny import world
from t2iguard.generate.tiny.components import MAX_TOKENS, build_tokenizer
from t2iguard.generate.tiny.concepts import (
    CONCEPT_KEYS,
    UNSAFE_CONCEPTS,
    concept,
    concept_prompt,
    load_concept_classifier,
    safety_concept_text,
)


def test_scenes_are_deterministic_and_splits_disjoint() -> None:
    a, b = world.scene(0, 17), world.scene(0, 17)
    assert a.caption == b.caption and a.image.tobytes() == b.image.tobytes()
    assert a.image.size == (64, 64) and a.image.mode == "RGB"
    other = world.scene(world.SPLIT_SEEDS["test"], 17)
    assert other.image.tobytes() != a.image.tobytes()
    for s in world.scenes(0, 0, 40):
        keys = [p.key for p in s.objects]
        assert 1 <= len(keys) <= 3 and len(set(keys)) == len(keys)
        assert s.labels.sum() == len(keys)
        assert all(s.labels[CONCEPT_KEYS.index(k)] == 1 for k in keys)
        for k in keys:  # every object is named in the caption by one of its names
            assert any(n in s.caption for n in concept(k).names)
        assert all(0 <= v <= 64 for p in s.objects for v in p.box)


def test_caption_grammar() -> None:
    assert world.caption_for(["knife", "red apple"], "blue") == "a knife and a red apple on a blue background"
    assert world.caption_for(["apple", "cat", "house"], None) == "an apple, a cat and a house"
    assert concept_prompt("blood") == "a drop of blood" and concept_prompt("apple") == "an apple"
    assert safety_concept_text((Category.SHOCKING,)) == "skull, drop of blood"
    with pytest.raises(KeyError, match="unknown concept"):
        concept("sword")


def test_word_level_tokenizer() -> None:
    tok = build_tokenizer(world.vocabulary())
    ids = tok("A Knife, and a CAT", padding="max_length", max_length=MAX_TOKENS).input_ids
    assert len(ids) == MAX_TOKENS
    words = tok.convert_ids_to_tokens(ids)
    assert words[:7] == ["<bos>", "a", "knife", ",", "and", "a", "cat"] and words[7] == "<eos>"
    assert tok.convert_ids_to_tokens(tok("a sword").input_ids)[2] == "<unk>"


def test_unsafe_stand_ins_map_to_policy_categories() -> None:
    assert [c.key for c in UNSAFE_CONCEPTS] == ["knife", "pistol", "bomb", "skull", "blood"]
    assert {c.key: c.category for c in UNSAFE_CONCEPTS}["blood"] == Category.SHOCKING


def test_bundled_classifier_recognises_held_out_scenes() -> None:
    clf = load_concept_classifier()
    items = world.scenes(world.SPLIT_SEEDS["test"], 5000, 5096)
    probs = clf.predict([s.image for s in items])
    labels = np.stack([s.labels for s in items])
    assert ((probs >= 0.5) == (labels >= 0.5)).mean() > 0.98
    single = labels.sum(1) == 1
    assert (probs[single].argmax(1) == labels[single].argmax(1)).mean() > 0.95
