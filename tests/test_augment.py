"""EDA augmentation (Wei & Zou, 2019): each operation's effect, the on-the-fly augmenter's determinism,
the collator hook, the recipe section, and WordNet when the `augment` extra is installed."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from hf_pals.data.augment import (
    STOP_WORDS,
    AugmentConfig,
    EDAAugmenter,
    eda,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)

SYNONYMS = {
    "good": ["fine", "decent"],
    "film": ["movie", "motion picture"],
    "funny": ["comic", "amusing"],
    "slow": ["dull", "sluggish"],
    "the": ["thee"],  # a stop word with a "synonym": SR must leave it alone
}


def synonyms(word):
    return SYNONYMS.get(word, [])


SENTENCE = "the good film was funny but the plot was slow and long".split()


def _rngs(n=50):
    return [random.Random(seed) for seed in range(n)]


def test_random_swap_keeps_the_multiset_of_words():
    for rng in _rngs():
        out = random_swap(SENTENCE, 2, rng)
        assert Counter(out) == Counter(SENTENCE)
    changed = [random_swap(SENTENCE, 1, rng) != SENTENCE for rng in _rngs()]
    assert sum(changed) >= 40  # swapping two equal words ("the", "was") leaves it unchanged
    assert random_swap(["alone"], 3, random.Random(0)) == ["alone"]


def test_random_deletion_removes_about_p_of_the_words_but_never_all():
    p = 0.3
    words = [f"w{i}" for i in range(40)]
    kept = []
    for rng in _rngs(200):
        out = random_deletion(words, p, rng)
        assert out == [w for w in words if w in set(out)]  # an ordered subsequence
        kept.append(len(out))
    assert sum(kept) / (200 * 40) == pytest.approx(1 - p, abs=0.03)
    for rng in _rngs():
        out = random_deletion(SENTENCE, 1.0, rng)
        assert len(out) == 1 and out[0] in SENTENCE
    assert random_deletion(["one"], 0.99, random.Random(0)) == ["one"]


def test_random_insertion_adds_synonyms_of_words_in_the_sentence():
    for rng in _rngs():
        out = random_insertion(SENTENCE, 2, rng, synonyms)
        added = Counter(out) - Counter(SENTENCE)
        assert sum(added.values()) >= 2 and not Counter(SENTENCE) - Counter(out)
        allowed = {w for s in ("good", "film", "funny", "slow", "the") for syn in SYNONYMS[s] for w in syn.split()}
        assert set(added) <= allowed
    assert random_insertion(["zzz", "qqq"], 2, random.Random(0), synonyms) == ["zzz", "qqq"]


def test_synonym_replacement_changes_only_words_with_synonyms():
    words = "the good film was funny and the plot was long".split()  # no multi-word synonym in the way
    for rng in _rngs():
        out = synonym_replacement(words, 2, rng, lambda w: [s for s in synonyms(w) if " " not in s])
        assert len(out) == len(words)
        replaced = {a for a, b in zip(words, out) if a != b}
        assert replaced and len(replaced) <= 2
        for a, b in zip(words, out):
            if a != b:
                assert a not in STOP_WORDS and b in SYNONYMS[a]
        for word in replaced:  # every occurrence of a replaced word, as EDA does
            assert all(b != a for a, b in zip(words, out) if a == word)
    assert synonym_replacement(["zzz", "the"], 3, random.Random(0), synonyms) == ["zzz", "the"]


def test_eda_draws_one_operation_and_n_from_alpha():
    sentence = " ".join(SENTENCE)
    for rng in _rngs():
        out = eda(sentence, rng, alpha=0.2, synonyms=synonyms, operation="random_swap")
        assert Counter(out.split()) == Counter(SENTENCE)
    seen = {eda(sentence, random.Random(s), 0.1, synonyms) for s in range(40)}
    assert len(seen) > 10
    with pytest.raises(ValueError, match="synonyms"):
        eda(sentence, random.Random(0), 0.1, None, operation="synonym_replacement")
    assert eda("", random.Random(0), 0.1, synonyms) == ""


ROWS = [
    {"sentence1": "the good film was funny", "label": 3, "task": "sst"},
    {"sentence1": "a slow and long plot", "label": 1, "task": "sst"},
    {"sentence1": "good fun", "label": 4, "task": "sst"},
]


def test_augmenter_is_deterministic_under_its_seed():
    config = AugmentConfig(tasks=["sst"], alpha=0.3, prob=1.0)
    first = EDAAugmenter(config, seed=1, synonyms=synonyms)("sst", ROWS, ["sentence1"])
    again = EDAAugmenter(config, seed=1, synonyms=synonyms)("sst", ROWS, ["sentence1"])
    assert first == again
    others = [EDAAugmenter(config, seed=s, synonyms=synonyms)("sst", ROWS, ["sentence1"]) for s in range(2, 12)]
    assert any(o != first for o in others)
    # the same row with other batch-mates (the next pass over the data) gets other random choices
    moved = [EDAAugmenter(config, seed=1, synonyms=synonyms)("sst", [ROWS[0], *mates], ["sentence1"])[0]
             for mates in ([ROWS[1]], [ROWS[2]], [ROWS[1], ROWS[2]], [ROWS[2], ROWS[1]], [])]
    assert len({m["sentence1"] for m in moved}) > 1
    assert ROWS[0]["sentence1"] == "the good film was funny"  # the input rows are not modified


def test_augmenter_prob_num_aug_labels_and_tasks():
    keep = EDAAugmenter(AugmentConfig(tasks=["sst"], prob=0.0), synonyms=synonyms)
    assert keep("sst", ROWS, ["sentence1"]) == ROWS
    double = EDAAugmenter(AugmentConfig(tasks=["sst"], prob=1.0, num_aug=2), synonyms=synonyms)
    out = double("sst", ROWS, ["sentence1"])
    assert [r["label"] for r in out] == [3, 3, 1, 1, 4, 4]
    assert double("quora", ROWS, ["sentence1"]) == ROWS  # not an augmented task
    pairs = [{"sentence1": "the good film was funny", "sentence2": "a slow and long plot", "label": 2.0}]
    swap = EDAAugmenter(AugmentConfig(tasks=["sts"], prob=1.0, operations=["random_swap"], alpha=0.5))
    (row,) = swap("sts", pairs, ["sentence1", "sentence2"])
    for column in ("sentence1", "sentence2"):
        assert Counter(row[column].split()) == Counter(pairs[0][column].split())
    assert row["label"] == 2.0
    half = EDAAugmenter(AugmentConfig(tasks=["sst"], prob=0.5, operations=["random_deletion"], alpha=0.5))
    rows = [{"sentence1": f"w{i} a b c d e f g h", "label": 0} for i in range(200)]
    changed = sum(a != b for a, b in zip(rows, half("sst", rows, ["sentence1"])))
    assert 70 <= changed <= 130


def test_config_checks_its_values():
    with pytest.raises(ValueError, match="alpha"):
        AugmentConfig(alpha=1.5)
    with pytest.raises(ValueError, match="num_aug"):
        AugmentConfig(num_aug=0)
    with pytest.raises(ValueError, match="operations"):
        AugmentConfig(operations=["back_translation"])
    assert not AugmentConfig(operations=["random_swap", "random_deletion"]).needs_synonyms


def test_collator_augments_training_batches_only(tiny_base):
    from transformers import AutoTokenizer

    from hf_pals.data.multitask import MultiTaskCollator
    from hf_pals.tasks import cs224n_task

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tasks = {"sst": cs224n_task("sst")}
    augmenter = EDAAugmenter(AugmentConfig(tasks=["sst"], prob=1.0, num_aug=2, operations=["random_swap"]))
    plain = MultiTaskCollator(tokenizer, tasks, max_length=32)
    augmented = MultiTaskCollator(tokenizer, tasks, max_length=32, augment=augmenter)
    batch = augmented(ROWS)
    assert batch["input_ids"].shape[0] == 6 and batch["labels"].tolist() == [3, 3, 1, 1, 4, 4]
    assert batch["input_ids"].tolist() != plain(ROWS)["input_ids"].tolist()
    assert augmented.encode("sst", ROWS)["input_ids"].tolist() == plain.encode("sst", ROWS)["input_ids"].tolist()


def test_recipe_section():
    from hf_pals.recipe import RecipeError, parse_recipe

    base = {"base_model": "sentence-transformers/all-MiniLM-L6-v2", "tasks": {"sst": {}, "sts": {}}, "training": {"max_steps": 1}}
    recipe = parse_recipe({**base, "augment": {"tasks": ["sst", "sts"], "alpha": 0.1, "num_aug": 1, "prob": 0.5}})
    assert recipe.augment == AugmentConfig(tasks=["sst", "sts"], alpha=0.1, num_aug=1, prob=0.5)
    assert parse_recipe(base).augment is None
    with pytest.raises(RecipeError, match="augment.tasks: task"):
        parse_recipe({**base, "augment": {"tasks": ["quora"]}})
    with pytest.raises(RecipeError, match="augment"):
        parse_recipe({**base, "augment": {"tasks": ["sst"], "alpha": 2}})
    with pytest.raises(RecipeError, match="unknown field"):
        parse_recipe({**base, "augment": {"task": ["sst"]}})
    recipe = parse_recipe({**base, "smart": {"weights": {"sst": 0.5}, "epsilon": 1e-4}})
    assert recipe.smart.weight("sst") == 0.5 and recipe.smart.epsilon == 1e-4
    with pytest.raises(RecipeError, match="smart.weights: task"):
        parse_recipe({**base, "smart": {"weights": {"quora": 0.5}}})


def test_wordnet_synonyms():
    from hf_pals.data.augment import wordnet_synonyms

    try:
        lookup = wordnet_synonyms()
    except ImportError as err:
        pytest.skip(str(err))
    assert "movie" in lookup("film") and "film" not in lookup("film")
    assert lookup("zzzqqq") == ()
    assert "movie" in lookup("films")  # morphy: the base form's synsets
    assert list(lookup("good")) == sorted(lookup("good"))
    out = EDAAugmenter(AugmentConfig(tasks=["sst"], prob=1.0, operations=["synonym_replacement"]), seed=0)(
        "sst", [{"sentence1": "a good film", "label": 1}], ["sentence1"]
    )
    assert out[0]["sentence1"] != "a good film"
