"""`MultiTaskDataset` (one index space over several task datasets) and `MultiTaskCollator`."""

from __future__ import annotations

import bisect
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from ..tasks import TaskSpec


class MultiTaskDataset(Dataset):
    """Concatenates task datasets; item i is the row of its task plus a "task" field."""

    def __init__(self, datasets: dict[str, Any]):
        self.datasets = dict(datasets)
        self.tasks = list(self.datasets)
        self.offsets: dict[str, int] = {}
        self._starts: list[int] = []
        total = 0
        for task in self.tasks:
            self.offsets[task] = total
            self._starts.append(total)
            total += len(self.datasets[task])
        self._length = total

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        slot = bisect.bisect_right(self._starts, index) - 1
        task = self.tasks[slot]
        row = dict(self.datasets[task][index - self._starts[slot]])
        row["task"] = task
        return row

    def sizes(self) -> dict[str, int]:
        return {task: len(ds) for task, ds in self.datasets.items()}


class MultiTaskCollator:
    """Tokenizes a single-task batch as its task asks.

    Single sentences and packed pairs (`[CLS] a [SEP] b [SEP]`) give one row per example; siamese pairs
    give the first sentences then the second sentences (2 x batch rows), which the model splits in half;
    `pair_encoding: both` pairs give 3 x batch rows: the packed pairs, then the first sentences, then the
    second sentences (each block exactly the rows a packed and a siamese task would give, padded together).
    Tokenizing here, with dynamic padding, keeps the datasets as plain text.

    `augment` (an `hf_pals.data.augment.EDAAugmenter`) rewrites the rows of its tasks before tokenizing, in
    `__call__` only: the trainer's batches are augmented, `encode` (used by evaluation) never is.
    """

    def __init__(self, tokenizer, tasks: dict[str, TaskSpec], max_length: int = 128, augment=None):
        self.tokenizer = tokenizer
        self.tasks = tasks
        self.max_length = max_length
        self.augment = augment

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        task = features[0]["task"]
        if any(f["task"] != task for f in features):
            raise ValueError("MultiTaskCollator expects one task per batch")
        if self.augment is not None:
            features = self.augment(task, features, self.tasks[task].text_columns)
        batch = self.encode(task, features)
        if "label" in features[0]:
            dtype = torch.long if self.tasks[task].kind == "classification" else torch.float32
            batch["labels"] = torch.tensor([f["label"] for f in features], dtype=dtype)
        batch["task"] = task
        return batch

    def encode_mixed(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """One batch holding examples of several tasks (each feature has its "task"), for
        `MultiTaskModel.forward_mixed`. Each example gives one row (single sentence, packed pair), two
        (siamese pair: its first sentence, then its second) or three (`pair_encoding: both`: its packed
        pair, its first sentence, its second sentence); rows of different kinds are padded together.
        `row_tasks` names each row's task (the adapter it is routed to), `row_example` its example.

        Rows are in the features' order (an example's rows next to each other); the texts are tokenized
        in one tokenizer call per task (the fast tokenizers batch in Rust) rather than one per text, which
        gives the same rows."""
        by_task: dict[str, list[int]] = {}
        for index, feature in enumerate(features):
            by_task.setdefault(feature["task"], []).append(index)
        example_rows: list[list[dict[str, Any]]] = [[] for _ in features]
        for task, where in by_task.items():
            spec = self.tasks[task]
            columns = [[features[i][c] for i in where] for c in spec.text_columns]
            kwargs = dict(truncation=True, max_length=self.max_length)
            if spec.is_siamese:  # every first sentence, then every second one: rows j and n + j are example j's
                encoded = _split_rows(self.tokenizer(columns[0] + columns[1], **kwargs))
                parts = [[encoded[j], encoded[len(where) + j]] for j in range(len(where))]
            elif spec.is_both:  # the packed pair, then each sentence alone
                packed = _split_rows(self.tokenizer(*columns, **kwargs))
                single = _split_rows(self.tokenizer(columns[0] + columns[1], **kwargs))
                parts = [[packed[j], single[j], single[len(where) + j]] for j in range(len(where))]
            else:
                parts = [[row] for row in _split_rows(self.tokenizer(*columns, **kwargs))]
            for index, rows in zip(where, parts):
                example_rows[index] = rows
        rows, row_tasks, row_example = [], [], []
        for index, (feature, parts) in enumerate(zip(features, example_rows)):
            for part in parts:
                rows.append(part)
                row_tasks.append(self.tasks[feature["task"]].name)
                row_example.append(index)
        batch = dict(self.tokenizer.pad(rows, return_tensors="pt"))
        batch["row_tasks"] = row_tasks
        batch["row_example"] = torch.tensor(row_example)
        batch["tasks"] = [f["task"] for f in features]
        return batch

    def encode(self, task: str, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        spec = self.tasks[task]
        columns = [[f[c] for f in features] for c in spec.text_columns]
        kwargs = dict(truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        if len(columns) == 1:
            encoded = self.tokenizer(columns[0], **kwargs)
        elif spec.is_siamese:
            encoded = self.tokenizer(columns[0] + columns[1], **kwargs)
        elif spec.is_both:  # n packed rows, n first sentences, n second sentences, padded together
            unpadded = dict(truncation=True, max_length=self.max_length)
            packed = _split_rows(self.tokenizer(columns[0], columns[1], **unpadded))
            single = _split_rows(self.tokenizer(columns[0] + columns[1], **unpadded))
            encoded = self.tokenizer.pad(packed + single, return_tensors="pt")
        else:
            encoded = self.tokenizer(columns[0], columns[1], **kwargs)
        return dict(encoded)


def _split_rows(encoded) -> list[dict[str, Any]]:
    """A batched tokenizer output (lists of lists, unpadded) as one dict per text."""
    keys = list(encoded.keys())
    return [dict(zip(keys, values)) for values in zip(*(encoded[k] for k in keys))]
