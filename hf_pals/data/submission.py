"""Prediction files of a test split for tasks read through `datasets`: one TSV per task and test split,
`index<TAB>prediction`, the layout of the GLUE benchmark's submission files (CoLA.tsv, MNLI-m.tsv, ...).

A classification or binary task writes class numbers, or with `submission_labels: names` its
`label_names` (GLUE wants `entailment`/`not_entailment` for RTE and QNLI, the three names for MNLI);
a regression task writes its score.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..tasks import TaskSpec
from .sources import TaskData

__all__ = ["submission_file_name", "write_submission"]


def submission_file_name(task: str, data: TaskData, split: str, several: bool) -> str:
    """The file a test split's predictions go to: `data.submission_files[split]`, else `<task>.tsv`
    (`<task>-<split>.tsv` when the task has several test splits)."""
    if split in data.submission_files:
        return data.submission_files[split]
    return f"{task}-{split}.tsv" if several else f"{task}.tsv"


def write_submission(
    path: str | os.PathLike, spec: TaskSpec, data: TaskData, ids: Iterable, predictions: Iterable
) -> Path:
    """Write `index<TAB>prediction` rows for `spec`'s predictions (labels, or scores for regression)."""
    ids, predictions = list(ids), list(predictions)
    if len(ids) != len(predictions):
        raise ValueError(f"task {spec.name!r}: {len(ids)} ids but {len(predictions)} predictions")
    if data.submission_labels == "names" and spec.label_names is None:
        raise ValueError(f"task {spec.name!r}: submission_labels is 'names' but the task has no label_names")
    lines = ["index\tprediction\n"]
    for row_id, value in zip(ids, predictions):
        value = float(value)
        if spec.kind == "regression":
            text = repr(value)
        elif data.submission_labels == "names":
            text = spec.label_names[int(value)]
        else:
            text = str(int(value))
        lines.append(f"{row_id}\t{text}\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.writelines(lines)
    return path
