"""Evaluation metrics for hf_pals.

``evaluate.load("accuracy")`` fetches the metric script from the Hugging Face Hub, which is not
reachable offline (and not from every user's machine), so the metrics the CS224N and GLUE tasks need
are shipped inside this package as ordinary ``evaluate`` metric modules and loaded from their directory:
accuracy, pearsonr (the CS224N tasks), f1 (MRPC, QQP), matthews_correlation (CoLA) and spearmanr (STS-B).
Each returns what the Hub's module of the same name returns, e.g. ``{"f1": 0.8}``.
"""

from __future__ import annotations

import math
from pathlib import Path

import evaluate

__all__ = ["METRIC_NAMES", "metric_path", "load_metric", "compute_overall"]

#: Metrics shipped with the package (each is ``<this dir>/<name>/<name>.py``).
METRIC_NAMES = ("accuracy", "pearsonr", "f1", "matthews_correlation", "spearmanr")

_METRICS_DIR = Path(__file__).resolve().parent


def metric_path(name: str) -> Path:
    """Directory of a shipped metric module, the path ``evaluate.load`` is given."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(METRIC_NAMES)}")
    return _METRICS_DIR / name


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """``evaluate.load`` a metric shipped with hf_pals, without touching the network.

    ``name`` is one of `METRIC_NAMES`; ``kwargs`` (e.g. ``experiment_id``,
    ``keep_in_memory``) are passed on to ``evaluate.load``.
    """
    return evaluate.load(str(metric_path(name)), **kwargs)


def compute_overall(sst_acc: float, quora_acc: float, sts_pearson: float) -> float:
    """The CS224N leaderboard score: ``(sst_acc + quora_acc + (sts_pearson + 1) / 2) / 3``.

    The Pearson r in [-1, 1] is mapped to [0, 1] so the three tasks weigh the same.  Accuracies must
    be fractions, not percentages (a ValueError says so); a nan Pearson r (constant predictions)
    gives a nan score rather than an error, so an early evaluation does not crash training.
    """
    for name, value, lo, hi in (
        ("sst_acc", sst_acc, 0.0, 1.0),
        ("quora_acc", quora_acc, 0.0, 1.0),
        ("sts_pearson", sts_pearson, -1.0, 1.0),
    ):
        value = float(value)
        if not math.isnan(value) and not (lo - 1e-6 <= value <= hi + 1e-6):
            raise ValueError(f"{name}={value} is outside [{lo}, {hi}]")
    return (float(sst_acc) + float(quora_acc) + (float(sts_pearson) + 1.0) / 2.0) / 3.0
