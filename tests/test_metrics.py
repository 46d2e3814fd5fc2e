"""Tests for hf_pals.metrics: the package-shipped evaluate modules and the CS224N overall score."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr

import evaluate
from hf_pals.metrics import METRIC_NAMES, compute_overall, load_metric, metric_path

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def accuracy():
    return load_metric("accuracy")


@pytest.fixture(scope="module")
def pearson():
    return load_metric("pearsonr")


def test_modules_are_shipped_as_package_files():
    for name in METRIC_NAMES:
        assert (metric_path(name) / f"{name}.py").is_file()
        assert metric_path(name).parent == REPO / "hf_pals" / "metrics"


def test_accuracy_matches_numpy(accuracy):
    rng = np.random.default_rng(0)
    refs, preds = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    result = accuracy.compute(predictions=preds, references=refs)
    assert result == {"accuracy": pytest.approx(float(np.mean(preds == refs)))}
    assert isinstance(accuracy, evaluate.Metric)
    assert "scikit-learn" in accuracy.citation and "predictions" in accuracy.features


def test_accuracy_weights_and_unnormalized(accuracy):
    refs, preds, w = [0, 1, 1, 2], [0, 1, 0, 0], [1.0, 2.0, 3.0, 4.0]
    assert accuracy.compute(predictions=preds, references=refs, normalize=False)["accuracy"] == 2.0
    assert accuracy.compute(predictions=preds, references=refs, sample_weight=w)["accuracy"] == pytest.approx(0.3)


def test_accuracy_incremental_batches(accuracy):
    accuracy.add_batch(predictions=[1, 1], references=[1, 0])
    accuracy.add_batch(predictions=[0, 0], references=[0, 0])
    assert accuracy.compute()["accuracy"] == 0.75


def test_pearsonr_matches_scipy(pearson):
    rng = np.random.default_rng(1)
    refs = rng.uniform(0, 5, 100)
    preds = refs + rng.normal(0, 1.5, 100)
    expected = pearsonr(refs, preds)
    result = pearson.compute(predictions=preds, references=refs, return_pvalue=True)
    assert result["pearsonr"] == pytest.approx(expected[0])
    assert result["p-value"] == pytest.approx(expected[1])
    assert set(pearson.compute(predictions=preds, references=refs)) == {"pearsonr"}
    assert pearson.compute(predictions=[10, 9, 2.5, 6, 4], references=[1, 2, 3, 4, 5])["pearsonr"] == pytest.approx(
        -0.7426106572325057
    )


def test_unknown_metric_lists_known_names():
    with pytest.raises(ValueError, match="accuracy, pearsonr"):
        load_metric("bleu")  # f1 is shipped since issue 13


def test_loads_without_network():
    """Load and compute both metrics in a fresh interpreter with the Hub offline and sockets disabled."""
    code = (
        "import socket\n"
        "def no_net(*a, **k): raise OSError('network access attempted')\n"
        "socket.socket.connect = no_net\n"
        "socket.create_connection = no_net\n"
        "from hf_pals.metrics import load_metric\n"
        "a = load_metric('accuracy').compute(predictions=[1, 0], references=[1, 1])['accuracy']\n"
        "r = load_metric('pearsonr').compute(predictions=[1, 2, 3], references=[2, 4, 6])['pearsonr']\n"
        "assert a == 0.5 and abs(r - 1) < 1e-9, (a, r)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_compute_overall():
    assert compute_overall(0.5, 0.8, 0.6) == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert compute_overall(1.0, 1.0, 1.0) == pytest.approx(1.0)
    assert compute_overall(0.0, 0.0, -1.0) == pytest.approx(0.0)
    assert compute_overall(np.float32(0.25), 0.75, np.float64(0.0)) == pytest.approx(0.5)
    assert math.isnan(compute_overall(0.5, 0.5, float("nan")))
    with pytest.raises(ValueError, match="sst_acc"):
        compute_overall(52.3, 0.8, 0.6)  # a percentage, not a fraction
    with pytest.raises(ValueError, match="sts_pearson"):
        compute_overall(0.5, 0.8, 1.5)
