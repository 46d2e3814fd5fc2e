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
def predict(model, collator, dataset, task: str, batch_size: int = 128, device=None) -> np.ndarray:
    """Predictions of `task` for every row of `dataset`, in row order.

    Rows are run sorted by text length so batches carry little padding, then put back in order.
    """
    spec = model.tasks[task]
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    rows = [dict(r, task=task) for r in dataset]
    lengths = [sum(len(r[c]) for c in spec.text_columns) for r in rows]
    order = np.argsort(lengths, kind="stable")
    out: list[Optional[np.ndarray]] = [None] * len(rows)
    for start in range(0, len(rows), batch_size):
        chunk = [rows[i] for i in order[start : start + batch_size]]
        encoded = {k: v.to(device) for k, v in collator.encode(task, chunk).items()}
        logits = model(task=task, **encoded)["logits"]
        preds = head_predictions(spec, logits).float().cpu().numpy()
        for i, p in zip(order[start : start + batch_size], preds):
            out[i] = p
    model.train(was_training)
    return np.asarray(out)


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
