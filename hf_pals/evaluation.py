"""Predicting and scoring tasks: shared by the trainer's evaluation, `hf-pals evaluate` and the predictor.

Scores go through `evaluate` metric modules shipped in `hf_pals.metrics`. The report has one entry per
task and an "overall" score: the mean of the tasks' primary scores with a Pearson r mapped to (r + 1) / 2,
which for SST, Quora and STS is the CS224N overall score (a + b + (r + 1) / 2) / 3.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from .heads import predictions as head_predictions
from .metrics import load_metric

#: Name of the metric in the report for each metric module (the issue's report uses "pearson").
REPORT_NAMES = {"accuracy": "accuracy", "pearsonr": "pearson"}


@torch.no_grad()
def predict_outputs(model, collator, rows, task: str, batch_size: int = 128, device=None) -> torch.Tensor:
    """The task head's raw outputs (logits, or scores for regression) for every row, in row order.

    `rows` is any iterable of dicts holding the task's text columns (a `datasets.Dataset` works).
    Rows are run sorted by text length so batches carry little padding, then put back in order.
    This is the one batched prediction path, used by evaluation and by `MultiTaskPredictor`.
    """
    spec = model.tasks[task]
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = [dict(r, task=task) for r in rows]
    lengths = [sum(len(r[c]) for c in spec.text_columns) for r in rows]
    order = np.argsort(lengths, kind="stable")
    out: list[Optional[torch.Tensor]] = [None] * len(rows)
    try:
        for start in range(0, len(rows), batch_size):
            chunk = [rows[i] for i in order[start : start + batch_size]]
            encoded = {k: v.to(device) for k, v in collator.encode(task, chunk).items()}
            logits = model(task=task, **encoded)["logits"].float().cpu()
            for i, row_out in zip(order[start : start + batch_size], logits):
                out[i] = row_out
    finally:
        model.train(was_training)
    if not out:
        return torch.empty((0, spec.num_labels) if spec.kind == "classification" else (0,))
    return torch.stack(out)


def predict(model, collator, dataset, task: str, batch_size: int = 128, device=None) -> np.ndarray:
    """Predictions of `task` (labels, or scores for regression) for every row of `dataset`, in row order."""
    outputs = predict_outputs(model, collator, dataset, task, batch_size=batch_size, device=device)
    return head_predictions(model.tasks[task], outputs).float().numpy()


def score(task_spec, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """The task's metric through its `evaluate` module, under the report's name."""
    metric = load_metric(task_spec.metric)
    result = metric.compute(predictions=predictions.tolist(), references=references.tolist())
    return {REPORT_NAMES.get(k, k): float(v) for k, v in result.items()}


def primary_score(task_spec, scores: dict[str, float]) -> float:
    """The task's score on a 0..1 scale: accuracy as is, Pearson r as (r + 1) / 2."""
    if task_spec.metric == "pearsonr":
        return (scores["pearson"] + 1.0) / 2.0
    return scores[REPORT_NAMES.get(task_spec.metric, task_spec.metric)]


def evaluate_tasks(model, collator, datasets: dict[str, Any], batch_size: int = 128) -> dict[str, Any]:
    """Report `{task: {metric: value}, ..., "overall": s}` over labelled `datasets`."""
    report: dict[str, Any] = {}
    primaries = []
    for task, dataset in datasets.items():
        spec = model.tasks[task]
        preds = predict(model, collator, dataset, task, batch_size=batch_size)
        refs = np.asarray(dataset["label"])
        report[task] = score(spec, preds, refs)
        primaries.append(primary_score(spec, report[task]))
    report["overall"] = float(np.mean(primaries)) if primaries else float("nan")
    return report
