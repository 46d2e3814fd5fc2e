"""Predicting and scoring tasks: shared by the trainer's evaluation, `hf-pals evaluate` and the predictor.

Scores go through `evaluate` metric modules shipped in `hf_pals.metrics`, every metric of a task's
`metrics` under its report name (`REPORT_NAMES`: "pearsonr" is reported as "pearson", "spearmanr" as
"spearman"). The report has one entry per evaluation set (a task, or "TASK/SPLIT" for a task's extra
evaluation split such as "mnli/validation_mismatched") and an "overall" score over the tasks (not the extra
splits): for the CS224N tasks SST, Quora and STS with their default metrics the CS224N formula
(a + b + (r + 1) / 2) / 3, otherwise the mean of the tasks' main metrics as they are (GLUE's convention).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from .data.pair_swap import swap_columns
from .heads import predictions as head_predictions
from .metrics import compute_overall, load_metric

#: Name in the report of each metric module's value (the CS224N report uses "pearson").
REPORT_NAMES = {
    "accuracy": "accuracy",
    "f1": "f1",
    "matthews_correlation": "matthews_correlation",
    "pearsonr": "pearson",
    "spearmanr": "spearman",
}
#: The CS224N tasks and the main metric each needs for the CS224N overall score.
CS224N_OVERALL_METRICS = {"sst": "accuracy", "quora": "accuracy", "sts": "pearsonr"}
#: `report["overall_formula"]`: which formula gave `report["overall"]`.
OVERALL_FORMULAS = ("cs224n", "mean_of_main_metrics")


@torch.no_grad()
def predict_outputs(model, collator, rows, task: str, batch_size: int = 128, device=None) -> torch.Tensor:
    """The task head's raw outputs (logits, or scores for regression) for every row, in row order.

    `rows` is any iterable of dicts holding the task's text columns (a `datasets.Dataset` works).
    Rows are run sorted by text length so batches carry little padding, then put back in order.
    This is the one batched prediction path, used by evaluation and by `MultiTaskPredictor`.
    A task with `predict_both_orders` has its pairs run in both orders and the two outputs averaged.
    """
    spec = model.tasks[task]
    if spec.predict_both_orders:
        rows = list(rows)
        swapped = [swap_pair(spec, r) for r in rows]
        return (_predict_rows(model, collator, rows, task, batch_size, device)
                + _predict_rows(model, collator, swapped, task, batch_size, device)) / 2
    return _predict_rows(model, collator, rows, task, batch_size, device)


def swap_pair(spec, row: dict[str, Any]) -> dict[str, Any]:
    """`row` with its two sentences (the task's text columns) exchanged."""
    return swap_columns(row, spec.text_columns)


def _predict_rows(model, collator, rows, task: str, batch_size: int, device) -> torch.Tensor:
    """`predict_outputs` for the rows as they are."""
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


def metric_kwargs(task_spec, metric: str) -> dict[str, Any]:
    """Arguments for a metric module beyond predictions and references.

    F1 is the binary F1 of class 1 for a binary task (or a two-class classification task) and the macro
    F1 over the classes present otherwise, fixed by the task so a dev set missing a class cannot switch it.
    """
    if metric == "f1":
        two_classes = task_spec.kind == "binary" or task_spec.num_labels == 2
        return {"average": "binary" if two_classes else "macro"}
    return {}


def score(task_spec, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """Every metric of the task (`task_spec.metrics`, main first) through its `evaluate` module, under
    its report name: `{"f1": 0.81, "accuracy": 0.86}`."""
    predictions, references = np.asarray(predictions).tolist(), np.asarray(references).tolist()
    scores = {}
    for metric in task_spec.metrics or (task_spec.metric,):
        result = load_metric(metric).compute(
            predictions=predictions, references=references, **metric_kwargs(task_spec, metric)
        )
        scores[REPORT_NAMES[metric]] = float(result[metric])
    return scores


def main_metric_name(task_spec) -> str:
    """The report key of the task's main metric (e.g. "pearson" for a task whose metric is "pearsonr")."""
    return REPORT_NAMES[task_spec.metric]


def overall_score(specs_by_set: dict[str, Any], report: dict[str, Any]) -> tuple[float, str]:
    """`(overall, formula)` from the report's per-set scores; `formula` is one of `OVERALL_FORMULAS`.

    `specs_by_set` maps each evaluation set of `report` to its task's `TaskSpec`; sets named "TASK/SPLIT"
    (extra evaluation splits) are left out. When the tasks are exactly SST, Quora and STS with main
    metrics accuracy, accuracy and pearsonr, the score is the CS224N leaderboard's
    (sst_acc + quora_acc + (sts_pearson + 1) / 2) / 3 (`hf_pals.metrics.compute_overall`), "cs224n";
    otherwise it is the mean of the tasks' main metric values as they are, "mean_of_main_metrics"
    (GLUE's convention; nan without tasks).
    """
    tasks = {name: spec for name, spec in specs_by_set.items() if "/" not in name}
    if {name: spec.metric for name, spec in tasks.items()} == CS224N_OVERALL_METRICS:
        overall = compute_overall(report["sst"]["accuracy"], report["quora"]["accuracy"], report["sts"]["pearson"])
        return overall, "cs224n"
    values = [report[name][main_metric_name(spec)] for name, spec in tasks.items()]
    return (float(np.mean(values)) if values else float("nan")), "mean_of_main_metrics"


def task_of_set(set_name: str) -> str:
    """The task an evaluation set belongs to: "mnli" for "mnli" and for "mnli/validation_mismatched"."""
    return set_name.split("/", 1)[0]


def evaluate_tasks(model, collator, datasets: dict[str, Any], batch_size: int = 128) -> dict[str, Any]:
    """Score labelled `datasets`, keyed by evaluation set: a task name, or "TASK/SPLIT" for an extra
    evaluation split of TASK (scored with TASK's spec and head, reported under its key, not in "overall").

    Returns `{set: {metric: value}, ..., "overall": s, "overall_formula": f, "main_metrics": {set: key}}`,
    where `overall_score` gives `s` and `f`, and `main_metrics` names each set's main metric's report key.
    """
    return evaluate_predictions(
        model.tasks, datasets, lambda dataset, task: predict(model, collator, dataset, task, batch_size=batch_size)
    )


def evaluate_predictions(tasks: dict[str, Any], datasets: dict[str, Any], predict_fn) -> dict[str, Any]:
    """`evaluate_tasks` for any predictor: `tasks` maps task names to specs and `predict_fn(dataset, task)`
    gives the predictions of a set's rows in row order (a model, or an ensemble: `hf_pals.ensemble`)."""
    report: dict[str, Any] = {}
    specs: dict[str, Any] = {}
    for set_name, dataset in datasets.items():
        task = task_of_set(set_name)
        if task not in tasks:
            raise ValueError(
                f"evaluation set {set_name!r}: the model has no task {task!r}; its tasks are {sorted(tasks)}"
            )
        specs[set_name] = spec = tasks[task]
        preds = predict_fn(dataset, task)
        refs = np.asarray(dataset["label"])
        report[set_name] = score(spec, preds, refs)
    report["overall"], report["overall_formula"] = overall_score(specs, report)
    report["main_metrics"] = {set_name: main_metric_name(spec) for set_name, spec in specs.items()}
    return report
