"""Length-grouped batching within a task, as transformers' `LengthGroupedSampler` does for one dataset.

With dynamic padding a batch costs as much as its longest row times its size. On the CS224N data a random
batch of 32 carries about twice as many padded tokens as real ones; grouping rows of similar length
halves the work per step. The order stays random: a seeded permutation is cut into "mega-batches" of
`megabatch_size` batches, each mega-batch is sorted by length and cut into batches, and the batches of
a mega-batch are shuffled.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def group_by_length(
    order: np.ndarray, lengths: Sequence[int], batch_size: int, rng: np.random.Generator, megabatch_size: int = 50
) -> np.ndarray:
    """Reorder a permutation `order` so consecutive `batch_size` chunks hold rows of similar length."""
    lengths = np.asarray(lengths)
    span = batch_size * megabatch_size
    out = []
    for start in range(0, len(order), span):
        mega = order[start : start + span]
        mega = mega[np.argsort(-lengths[mega], kind="stable")]
        batches = [mega[i : i + batch_size] for i in range(0, len(mega), batch_size)]
        out.extend(batches[i] for i in rng.permutation(len(batches)))
    return np.concatenate(out) if out else order


def text_lengths(dataset, text_columns: Sequence[str], siamese: bool = False) -> list[int]:
    """Characters per row (a cheap proxy of tokens): the pair's sum, or its longer side when each
    sentence is encoded alone (siamese), since then each side is padded separately. A `pair_encoding:
    both` pair counts as packed (`siamese=False`): its packed row is its longest."""
    columns = [dataset[c] for c in text_columns]
    if siamese:
        return [max(len(t) for t in texts) for texts in zip(*columns)]
    return [sum(len(t) for t in texts) for texts in zip(*columns)]
