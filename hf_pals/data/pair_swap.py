"""Pair swapping: the training pairs (a, b) of a symmetric pair task shown as (b, a) at random.

Why: a paraphrase or similarity label does not depend on which sentence comes first, but a packed pair
(`[CLS] a [SEP] b [SEP]`) is read in one order, so a model trained on one order of each pair sees half
the inputs the data allows. Swapping the two sentences of a row with probability `prob` (0.5: both orders
equally) is the usual symmetric augmentation for Quora Question Pairs and STS-B. For a siamese pair with
a symmetric head (cosine) it changes nothing but the order of the rows; `pair_encoding: both` swaps its
packed row and its two sentence rows alike.

Only for tasks whose label is symmetric in the two sentences (paraphrase, similarity); not for
entailment (MNLI, RTE: premise and hypothesis are not interchangeable).

Used as the recipe's `pair_swap: {tasks: [quora], prob: 0.5}`; like EDA it runs in
`MultiTaskCollator.__call__` on training batches only (evaluation never swaps). Each row's draw is
seeded from (seed, task, the batch's texts, its place), as EDA's are, so a resumed run swaps the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .augment import row_rngs


@dataclass
class PairSwapConfig:
    """The recipe's `pair_swap:` section.

    Args:
        tasks: the pair tasks whose training pairs are swapped (their labels must be symmetric).
        prob: the probability that a row's two sentences change places.
    """

    tasks: list[str] = field(default_factory=list)
    prob: float = 0.5

    def __post_init__(self):
        self.tasks = list(self.tasks or [])
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"pair_swap.prob must be in [0, 1], got {self.prob}")


def swap_columns(row: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """A copy of `row` with the values of its two text `columns` exchanged (the pair as (b, a))."""
    first, second = columns
    return {**row, first: row[second], second: row[first]}


class PairSwapAugmenter:
    """Swaps the two text columns of `config.tasks`' training rows with probability `config.prob`."""

    def __init__(self, config: PairSwapConfig, seed: int = 0):
        self.config = config
        self.seed = int(seed)

    def __call__(self, task: str, features: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
        """The batch's rows, each as it is or with its two sentences swapped (labels unchanged)."""
        if task not in self.config.tasks:
            return list(features)
        if len(columns) != 2:
            raise ValueError(
                f"pair_swap.tasks: task {task!r} has {len(columns)} text column(s) {list(columns)}; "
                "swapping needs a sentence pair"
            )
        rngs = row_rngs(f"{self.seed}\x1fpair_swap\x1f{task}", features, columns)
        return [swap_columns(row, columns) if rng.random() < self.config.prob else row for row, rng in zip(features, rngs)]


__all__ = ["PairSwapConfig", "PairSwapAugmenter", "swap_columns"]
