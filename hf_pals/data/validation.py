"""A validation split carved out of each task's train set, for honest model selection.

Choosing the best checkpoint (or when to stop) by its dev score makes that dev score optimistic: the dev
files then took part in training decisions. `carve_validation` holds out a seeded part of each task's
TRAIN rows instead (`datasets.Dataset.train_test_split`), so periodic evaluation, `load_best_model_at_end`
and early stopping look at the carved rows and the dev files are scored once, at the end.

A recipe asks for it with `data.validation_fraction` (the same share of every task) or
`data.validation_examples` (`{task: rows}`; tasks left out keep all their train rows and have no
validation set). The carve is a pure function of the rows and the seed (`training.seed`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

#: The largest share of a task's train rows `validation_fraction` may hold out.
MAX_VALIDATION_FRACTION = 0.5


def check_validation_fraction(fraction: Any, where: str = "validation_fraction") -> float:
    """`fraction` as a float in (0, MAX_VALIDATION_FRACTION]; a ValueError naming `where` otherwise."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise ValueError(f"{where} must be a number in (0, {MAX_VALIDATION_FRACTION}], got {fraction!r}")
    if not 0 < fraction <= MAX_VALIDATION_FRACTION:
        raise ValueError(f"{where} must be in (0, {MAX_VALIDATION_FRACTION}], got {fraction}")
    return float(fraction)


def check_validation_counts(counts: Any, where: str = "validation_examples") -> dict[str, int]:
    """`counts` as {task: positive int}; a ValueError naming `where` and the task otherwise."""
    if not isinstance(counts, dict):
        raise ValueError(f"{where} must be a mapping of task -> number of rows, got {counts!r}")
    for task, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
            raise ValueError(f"{where}.{task} must be a whole number of rows >= 1, got {count!r}")
    return {task: int(count) for task, count in counts.items()}


def carve_validation(
    train_sets: dict[str, Any],
    fraction: Optional[float] = None,
    counts: Optional[dict[str, int]] = None,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split each task's train set into (train, validation) rows: `(train_sets, validation_sets)`.

    `fraction` holds out that share of every task (rounded up to whole rows, as `train_test_split` does);
    `counts` holds out `counts[task]` rows of the tasks it names. Give one of them; with neither the train
    sets come back as they are and there are no validation sets. The split is
    `Dataset.train_test_split(test_size=..., seed=seed)`: the same rows and seed give the same split, and
    the two parts never share a row. The inputs are not changed.
    """
    if fraction is not None and counts:
        raise ValueError("give validation_fraction or validation_examples, not both")
    train_sets = dict(train_sets)
    if fraction is None and not counts:
        return train_sets, {}
    if fraction is not None:
        fraction = check_validation_fraction(fraction)
        sizes = dict.fromkeys(train_sets, fraction)
    else:
        sizes = check_validation_counts(counts)
        unknown = sorted(set(sizes) - set(train_sets))
        if unknown:
            raise ValueError(
                f"validation_examples: task(s) {unknown} have no train set to carve from; "
                f"the train sets are {sorted(train_sets)}"
            )
    validation_sets = {}
    for task, test_size in sizes.items():
        dataset = train_sets[task]
        rows = len(dataset)
        # train_test_split rounds a fraction up to whole rows
        held_out = test_size if isinstance(test_size, int) else math.ceil(test_size * rows)
        if not 1 <= held_out < rows:
            raise ValueError(
                f"validation split of task {task!r}: cannot hold out {held_out} of its {rows} train rows "
                "(at least one row must stay on each side)"
            )
        parts = dataset.train_test_split(test_size=test_size, seed=seed, keep_in_memory=True)
        train_sets[task], validation_sets[task] = parts["train"], parts["test"]
    return train_sets, validation_sets

