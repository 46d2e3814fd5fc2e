"""Pair swapping (`hf_pals.data.pair_swap`): which rows swap, determinism, the collator and the recipe."""

from __future__ import annotations

import pytest

from hf_pals.data.augment import AugmentConfig, AugmenterChain, EDAAugmenter
from hf_pals.data.pair_swap import PairSwapAugmenter, PairSwapConfig

COLUMNS = ["sentence1", "sentence2"]
PAIRS = [
    {"sentence1": f"how do i learn topic {i} fast", "sentence2": f"what is the best way to learn {i}", "label": float(i % 2),
     "task": "quora"}
    for i in range(200)
]


def test_rows_swap_with_probability_prob_and_keep_their_labels():
    out = PairSwapAugmenter(PairSwapConfig(tasks=["quora"], prob=0.5), seed=3)("quora", PAIRS, COLUMNS)
    assert len(out) == len(PAIRS)
    swapped = 0
    for before, after in zip(PAIRS, out):
        assert after["label"] == before["label"] and after["task"] == "quora"
        if after["sentence1"] == before["sentence2"]:
            assert after["sentence2"] == before["sentence1"]
            swapped += 1
        else:
            assert after == before
    assert 70 <= swapped <= 130  # Binomial(200, 0.5): outside this range with probability < 1e-4
    assert PAIRS[0]["sentence1"] == "how do i learn topic 0 fast"  # the input rows are not modified


def test_prob_zero_and_one_and_other_tasks():
    assert PairSwapAugmenter(PairSwapConfig(tasks=["quora"], prob=0.0))("quora", PAIRS, COLUMNS) == PAIRS
    every = PairSwapAugmenter(PairSwapConfig(tasks=["quora"], prob=1.0))("quora", PAIRS, COLUMNS)
    assert [(r["sentence1"], r["sentence2"]) for r in every] == [(r["sentence2"], r["sentence1"]) for r in PAIRS]
    assert PairSwapAugmenter(PairSwapConfig(tasks=["sts"], prob=1.0))("quora", PAIRS, COLUMNS) == PAIRS


def test_deterministic_under_its_seed():
    config = PairSwapConfig(tasks=["quora"])
    first = PairSwapAugmenter(config, seed=1)("quora", PAIRS[:40], COLUMNS)
    assert first == PairSwapAugmenter(config, seed=1)("quora", PAIRS[:40], COLUMNS)
    assert first != PairSwapAugmenter(config, seed=2)("quora", PAIRS[:40], COLUMNS)


def test_a_single_sentence_task_is_refused_by_name():
    with pytest.raises(ValueError, match="task 'sst' has 1 text column"):
        PairSwapAugmenter(PairSwapConfig(tasks=["sst"]))("sst", [{"sentence1": "a film", "label": 1}], ["sentence1"])
    with pytest.raises(ValueError, match="pair_swap.prob"):
        PairSwapConfig(tasks=["quora"], prob=1.5)


def test_chain_applies_eda_then_the_swap():
    eda = EDAAugmenter(AugmentConfig(tasks=["quora"], prob=1.0, operations=["random_deletion"], alpha=0.5), seed=0)
    swap = PairSwapAugmenter(PairSwapConfig(tasks=["quora"], prob=1.0))
    rows = PAIRS[:5]
    chained = AugmenterChain([eda, swap])("quora", rows, COLUMNS)
    by_hand = swap("quora", eda("quora", rows, COLUMNS), COLUMNS)
    assert chained == by_hand
    assert [r["sentence1"] for r in chained] == [r["sentence2"] for r in eda("quora", rows, COLUMNS)]


@pytest.mark.parametrize("encoding", ["packed", "both"])
def test_collator_encodes_the_swapped_pairs_in_training_only(tiny_base, encoding):
    from transformers import AutoTokenizer

    from hf_pals.data.multitask import MultiTaskCollator
    from hf_pals.tasks import cs224n_task

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tasks = {"quora": cs224n_task("quora", pair_encoding=encoding)}
    rows = PAIRS[:6]
    swapping = MultiTaskCollator(tokenizer, tasks, max_length=32,
                                 augment=PairSwapAugmenter(PairSwapConfig(tasks=["quora"], prob=1.0)))
    plain = MultiTaskCollator(tokenizer, tasks, max_length=32)
    reversed_rows = [{**r, "sentence1": r["sentence2"], "sentence2": r["sentence1"]} for r in rows]
    batch = swapping(rows)
    assert batch["input_ids"].tolist() == plain(reversed_rows)["input_ids"].tolist()
    assert batch["input_ids"].tolist() != plain(rows)["input_ids"].tolist()
    assert batch["labels"].tolist() == [r["label"] for r in rows]
    assert swapping.encode("quora", rows)["input_ids"].tolist() == plain.encode("quora", rows)["input_ids"].tolist()


def test_recipe_section_names_the_file_and_the_task(tmp_path):
    from hf_pals.recipe import RecipeError, parse_recipe

    base = {"base_model": "sentence-transformers/all-MiniLM-L6-v2", "tasks": {"sst": {}, "quora": {}},
            "training": {"max_steps": 1}}
    recipe = parse_recipe({**base, "pair_swap": {"tasks": ["quora"], "prob": 0.5}}, "r.yaml")
    assert recipe.pair_swap == PairSwapConfig(tasks=["quora"], prob=0.5)
    assert parse_recipe(base).pair_swap is None
    with pytest.raises(RecipeError, match=r"r.yaml: pair_swap.tasks: task 'sst' has 1 text column"):
        parse_recipe({**base, "pair_swap": {"tasks": ["sst"]}}, "r.yaml")
    with pytest.raises(RecipeError, match=r"r.yaml: pair_swap.tasks: task\(s\) \['sts'\] are not in tasks"):
        parse_recipe({**base, "pair_swap": {"tasks": ["sts"]}}, "r.yaml")
    with pytest.raises(RecipeError, match="pair_swap"):
        parse_recipe({**base, "pair_swap": {"tasks": ["quora"], "prob": 2}}, "r.yaml")


def test_run_builds_the_chain_from_the_recipe():
    from hf_pals.recipe import parse_recipe
    from hf_pals.run import _training_augmenters

    base = {"base_model": "sentence-transformers/all-MiniLM-L6-v2", "tasks": {"sst": {}, "quora": {}},
            "training": {"max_steps": 1}}
    assert _training_augmenters(parse_recipe(base), 0) == []
    both = _training_augmenters(parse_recipe({**base, "pair_swap": {"tasks": ["quora"]},
                                              "augment": {"tasks": ["sst"], "operations": ["random_swap"]}}), 7)
    assert [type(a).__name__ for a in both] == ["EDAAugmenter", "PairSwapAugmenter"]
    assert both[1].seed == 7
