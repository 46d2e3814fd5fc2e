"""Tests for the GLUE metrics shipped in hf_pals.metrics (f1, matthews_correlation, spearmanr) and for the
report evaluation.py builds from them: every metric of a task, the report names, the overall score (the
CS224N formula or the mean of the main metrics) and extra evaluation splits ("TASK/SPLIT").

Expected values are worked out by hand from small confusion matrices and rankings, not by scikit-learn."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
from hf_pals.evaluation import evaluate_tasks, main_metric_name, overall_score, score
from hf_pals.metrics import METRIC_NAMES, load_metric, metric_path
from hf_pals.tasks import TaskSpec, cs224n_task

REPO = Path(__file__).resolve().parents[1]
NEW_METRICS = ("f1", "matthews_correlation", "spearmanr")


@pytest.fixture(scope="module")
def f1():
    return load_metric("f1")


@pytest.fixture(scope="module")
def mcc():
    return load_metric("matthews_correlation")


@pytest.fixture(scope="module")
def spearman():
    return load_metric("spearmanr")


def test_new_modules_are_shipped_package_files_listed_in_setup_cfg():
    for name in NEW_METRICS:
        assert name in METRIC_NAMES
        assert (metric_path(name) / f"{name}.py").is_file()
    setup_cfg = (REPO / "setup.cfg").read_text()
    assert "metrics/*/*.py" in setup_cfg.split("[options.package_data]")[1].split("[")[0]
    assert isinstance(load_metric("f1"), evaluate.Metric)


# ------------------------------------------------------------------------------------------------ f1
def test_f1_binary_is_the_positive_class(f1):
    # TP = 2 (items 1, 3), FP = 1 (item 4), FN = 1 (item 2): F1 = 2*2 / (2*2 + 1 + 1) = 2/3
    refs, preds = [0, 1, 1, 1, 0, 0], [0, 1, 0, 1, 1, 0]
    assert f1.compute(predictions=preds, references=refs) == {"f1": pytest.approx(2 / 3)}
    assert f1.compute(predictions=preds, references=refs, average="binary") == {"f1": pytest.approx(2 / 3)}
    # class 0: TP = 2, FP = 1, FN = 1 as well, but of 3 - 1 items: 2*2 / (4 + 1 + 1)
    assert f1.compute(predictions=preds, references=refs, pos_label=0)["f1"] == pytest.approx(2 / 3)
    assert f1.compute(predictions=[0, 0, 1, 1, 0], references=[0, 1, 0, 1, 0]) == {"f1": 0.5}
    # never predicting the positive class: TP = 0, so F1 = 0 (not nan)
    assert f1.compute(predictions=[0, 0, 0], references=[1, 0, 1])["f1"] == 0.0


def test_f1_more_classes_default_macro_and_other_averages(f1):
    # class 0: TP 2, FP 1, FN 0 -> 4/5; classes 1 and 2: TP 0 -> 0. Totals: TP 2, FP 4, FN 4.
    refs, preds = [0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 1]
    assert f1.compute(predictions=preds, references=refs)["f1"] == pytest.approx(0.8 / 3)
    assert f1.compute(predictions=preds, references=refs, average="macro")["f1"] == pytest.approx(0.8 / 3)
    assert f1.compute(predictions=preds, references=refs, average="micro")["f1"] == pytest.approx(4 / 12)
    assert f1.compute(predictions=preds, references=refs, average="weighted")["f1"] == pytest.approx(0.8 / 3)
    # weighted by support: class 0 (F1 4/5) has 3 true items, class 1 (F1 0) one
    assert f1.compute(predictions=[0, 0, 0, 0], references=[0, 0, 0, 1], average="weighted")["f1"] == pytest.approx(
        (3 * (6 / 7) + 1 * 0) / 4
    )
    # sample weights: item 4 (FP of class 0) counts 3 times -> class 0: 2*2 / (4 + 3 + 0) = 4/7
    w = [1, 1, 1, 1, 3, 1]
    assert f1.compute(predictions=preds, references=refs, sample_weight=w)["f1"] == pytest.approx((4 / 7) / 3)
    with pytest.raises(ValueError, match="average='binary' needs at most two classes"):
        f1.compute(predictions=preds, references=refs, average="binary")
    with pytest.raises(ValueError, match="average must be one of"):
        f1.compute(predictions=preds, references=refs, average="samples")


# -------------------------------------------------------------------------------------------- mcc
def test_matthews_binary_confusion_matrix(mcc):
    # TP 6, TN 3, FP 1, FN 2: (6*3 - 1*2) / sqrt(7 * 8 * 4 * 5) = 16 / sqrt(1120)
    refs = [1] * 8 + [0] * 4
    preds = [1] * 6 + [0] * 2 + [1] * 1 + [0] * 3
    assert mcc.compute(predictions=preds, references=refs) == {"matthews_correlation": pytest.approx(16 / math.sqrt(1120))}
    # scikit-learn's documented example (labels +1 / -1): -1/3
    assert mcc.compute(predictions=[1, -1, 1, 1], references=[1, 1, 1, -1])["matthews_correlation"] == pytest.approx(-1 / 3)
    assert mcc.compute(predictions=[0, 1, 1, 0], references=[0, 1, 1, 0])["matthews_correlation"] == pytest.approx(1.0)
    assert mcc.compute(predictions=[1, 0, 0, 1], references=[0, 1, 1, 0])["matthews_correlation"] == pytest.approx(-1.0)
    # one predicted class: a zero denominator gives 0, not nan
    assert mcc.compute(predictions=[1, 1, 1, 1], references=[0, 1, 1, 0])["matthews_correlation"] == 0.0


def test_matthews_more_classes(mcc):
    # confusion rows (true) [[2, 1, 0], [0, 2, 1], [1, 0, 2]]: c = 6, s = 9, t = p = [3, 3, 3]:
    # (6*9 - 27) / sqrt((81 - 27) * (81 - 27)) = 27 / 54
    refs = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    preds = [0, 0, 1, 1, 1, 2, 2, 2, 0]
    assert mcc.compute(predictions=preds, references=refs)["matthews_correlation"] == pytest.approx(0.5)
    # the Hub module's documented example
    result = mcc.compute(references=[1, 3, 2, 0, 3, 2], predictions=[1, 2, 2, 0, 3, 3])
    assert round(result["matthews_correlation"], 2) == 0.54
    # weights scale the confusion matrix: doubling every weight changes nothing
    assert mcc.compute(predictions=preds, references=refs, sample_weight=[2.0] * 9)["matthews_correlation"] == pytest.approx(0.5)


# --------------------------------------------------------------------------------------- spearman
def test_spearman_hand_values_and_ties(spearman):
    # ranks [5, 4, 1, 3, 2] vs [1..5]: sum d^2 = 34, rho = 1 - 6 * 34 / (5 * 24) = -0.7
    assert spearman.compute(references=[1, 2, 3, 4, 5], predictions=[10, 9, 2.5, 6, 4]) == {"spearmanr": pytest.approx(-0.7)}
    # ties share their mean rank: [1, 2.5, 2.5, 4] vs [1, 3, 2, 4] -> Pearson of ranks 4.5 / sqrt(4.5 * 5)
    assert spearman.compute(references=[1, 2, 2, 3], predictions=[1, 3, 2, 4])["spearmanr"] == pytest.approx(math.sqrt(0.9))
    # monotonic but not linear: 1 (Pearson would be < 1)
    assert spearman.compute(references=[1, 2, 3, 4], predictions=[1, 8, 27, 64])["spearmanr"] == pytest.approx(1.0)
    result = spearman.compute(references=[1, 2, 3, 4, 5], predictions=[1, 3, 2, 5, 4], return_pvalue=True)
    assert set(result) == {"spearmanr", "spearmanr_pvalue"} and 0 < result["spearmanr_pvalue"] < 1
    assert result["spearmanr"] == pytest.approx(0.8)  # sum d^2 = 4: 1 - 24 / 120


def test_new_metrics_load_without_network():
    """Load and compute the three modules in a fresh interpreter with the Hub offline and sockets disabled."""
    code = (
        "import socket\n"
        "def no_net(*a, **k): raise OSError('network access attempted')\n"
        "socket.socket.connect = no_net\n"
        "socket.create_connection = no_net\n"
        "from hf_pals.metrics import load_metric\n"
        "f = load_metric('f1').compute(predictions=[1, 0, 1], references=[1, 1, 1])['f1']\n"
        "m = load_metric('matthews_correlation').compute(predictions=[1, 0], references=[1, 0])['matthews_correlation']\n"
        "s = load_metric('spearmanr').compute(predictions=[3, 2, 1], references=[1, 2, 3])['spearmanr']\n"
        "assert abs(f - 0.8) < 1e-9 and abs(m - 1) < 1e-9 and abs(s + 1) < 1e-9, (f, m, s)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------------------------------ score
def _binary(name="mrpc", **kw):
    return TaskSpec(name=name, kind="binary", text_columns=("sentence1", "sentence2"), **kw)


def test_score_computes_every_metric_under_report_names():
    spec = _binary(metric=["f1", "accuracy", "matthews_correlation"])
    # predictions are the binary head's 0/1 labels (floats from `predict`)
    preds, refs = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0]), np.array([0, 1, 1, 1, 0, 0])
    result = score(spec, preds, refs)
    assert list(result) == ["f1", "accuracy", "matthews_correlation"]  # main metric first
    # TP 2, TN 2, FP 1, FN 1
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["matthews_correlation"] == pytest.approx((2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3))
    assert main_metric_name(spec) == "f1"

    stsb = TaskSpec(name="stsb", kind="regression", text_columns=("sentence1", "sentence2"), metric=["pearsonr", "spearmanr"])
    result = score(stsb, np.array([10, 9, 2.5, 6, 4]), np.array([1.0, 2, 3, 4, 5]))
    assert result == {"pearson": pytest.approx(-0.7426106572325057), "spearman": pytest.approx(-0.7)}
    assert main_metric_name(stsb) == "pearson"
    assert main_metric_name(TaskSpec(name="b", kind="regression", metric="spearmanr")) == "spearman"


def test_score_f1_average_is_fixed_by_the_task():
    # a 3-class task is macro F1 even when the dev slice holds only labels 0 and 1
    three = TaskSpec(name="mnli", kind="classification", num_labels=3, metric=["accuracy", "f1"])
    preds, refs = np.array([0, 1, 0, 1]), np.array([0, 1, 1, 1])
    # class 0: 2*1 / (2 + 1 + 0) = 2/3; class 1: 2*2 / (4 + 0 + 1) = 4/5
    assert score(three, preds, refs)["f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    two = TaskSpec(name="two", kind="classification", num_labels=2, metric="f1")
    assert score(two, preds, refs) == {"f1": pytest.approx(4 / 5)}  # class 1 only


# ---------------------------------------------------------------------------------------- overall
def _cs224n_specs():
    return {name: cs224n_task(name) for name in ("sst", "quora", "sts")}


def test_overall_cs224n_formula():
    report = {"sst": {"accuracy": 0.5}, "quora": {"accuracy": 0.8}, "sts": {"pearson": 0.6}}
    assert overall_score(_cs224n_specs(), report) == (pytest.approx((0.5 + 0.8 + 0.8) / 3), "cs224n")
    # an extra split does not enter the overall score and does not stop it being CS224N's
    specs = {**_cs224n_specs(), "sts/test_labelled": cs224n_task("sts")}
    report["sts/test_labelled"] = {"pearson": -1.0}
    assert overall_score(specs, report) == (pytest.approx((0.5 + 0.8 + 0.8) / 3), "cs224n")


def test_overall_is_the_mean_of_main_metrics_otherwise():
    # the CS224N tasks with another main metric: GLUE's mean, the Pearson r as it is
    specs = {**_cs224n_specs(), "quora": cs224n_task("quora", metric=["f1", "accuracy"])}
    report = {"sst": {"accuracy": 0.5}, "quora": {"f1": 0.7, "accuracy": 0.8}, "sts": {"pearson": 0.6}}
    assert overall_score(specs, report) == (pytest.approx((0.5 + 0.7 + 0.6) / 3), "mean_of_main_metrics")
    # a subset of the CS224N tasks is not the CS224N score
    two = {k: v for k, v in _cs224n_specs().items() if k != "quora"}
    assert overall_score(two, report) == (pytest.approx((0.5 + 0.6) / 2), "mean_of_main_metrics")
    value, formula = overall_score({}, {})
    assert math.isnan(value) and formula == "mean_of_main_metrics"


# ----------------------------------------------------------------------------------- evaluate_tasks
class _EchoModel(torch.nn.Module):
    """Stands in for a MultiTaskModel: its head's outputs are the `guess` column of each row, as one-hot
    logits (classification), a +-5 logit (binary) or the score itself (regression)."""

    def __init__(self, tasks):
        super().__init__()
        self.tasks = {t.name: t for t in tasks}
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, task, guess):
        spec = self.tasks[task]
        if spec.kind == "classification":
            return {"logits": torch.nn.functional.one_hot(guess.long(), spec.num_labels).float()}
        if spec.kind == "binary":
            return {"logits": guess * 10 - 5}
        return {"logits": guess}


class _GuessCollator:
    def encode(self, task, rows):
        return {"guess": torch.tensor([float(r["guess"]) for r in rows])}


def _rows(guesses, labels):
    from datasets import Dataset

    return Dataset.from_dict(
        {"sentence1": [f"s{i}" for i in range(len(labels))], "sentence2": ["x"] * len(labels), "guess": guesses, "label": labels}
    )


def test_evaluate_tasks_glue_set_with_extra_split():
    mnli = TaskSpec(name="mnli", kind="classification", num_labels=3, text_columns=("sentence1", "sentence2"))
    mrpc = _binary(metric=["f1", "accuracy"])
    stsb = TaskSpec(name="stsb", kind="regression", text_columns=("sentence1", "sentence2"), metric=["pearsonr", "spearmanr"])
    model = _EchoModel([mnli, mrpc, stsb])
    datasets = {
        "mnli": _rows([0, 1, 2, 2], [0, 1, 2, 0]),  # accuracy 3/4
        "mnli/validation_mismatched": _rows([0, 1, 1, 1], [0, 1, 2, 0]),  # accuracy 2/4
        "mrpc": _rows([0, 1, 0, 1, 1, 0], [0, 1, 1, 1, 0, 0]),  # f1 2/3, accuracy 4/6
        "stsb": _rows([10, 9, 2.5, 6, 4], [1.0, 2, 3, 4, 5]),  # pearson -0.7426, spearman -0.7
    }
    report = evaluate_tasks(model, _GuessCollator(), datasets, batch_size=2)
    assert report["mnli"] == {"accuracy": pytest.approx(0.75)}
    assert report["mnli/validation_mismatched"] == {"accuracy": pytest.approx(0.5)}
    assert report["mrpc"] == {"f1": pytest.approx(2 / 3), "accuracy": pytest.approx(4 / 6)}
    assert report["stsb"] == {"pearson": pytest.approx(-0.7426106572325057), "spearman": pytest.approx(-0.7)}
    assert report["overall"] == pytest.approx((0.75 + 2 / 3 - 0.7426106572325057) / 3)  # mismatched left out
    assert report["overall_formula"] == "mean_of_main_metrics"
    assert report["main_metrics"] == {"mnli": "accuracy", "mnli/validation_mismatched": "accuracy", "mrpc": "f1", "stsb": "pearson"}
    json.dumps(report)  # the report is written as eval_results.json

    with pytest.raises(ValueError, match="evaluation set 'qnli/validation'.*no task 'qnli'"):
        evaluate_tasks(model, _GuessCollator(), {"qnli/validation": datasets["mnli"]})


def test_evaluate_tasks_cs224n_set():
    specs = _cs224n_specs()
    model = _EchoModel(specs.values())
    datasets = {
        "sst": _rows([0, 4, 2, 2], [0, 4, 2, 1]),  # 3/4
        "quora": _rows([1, 0, 1, 1, 0], [1, 0, 0, 1, 0]),  # 4/5
        "sts": _rows([10, 9, 2.5, 6, 4], [1.0, 2, 3, 4, 5]),
    }
    report = evaluate_tasks(model, _GuessCollator(), datasets)
    r = -0.7426106572325057
    assert report["overall"] == pytest.approx((0.75 + 0.8 + (r + 1) / 2) / 3)
    assert report["overall_formula"] == "cs224n"
    assert report["main_metrics"] == {"sst": "accuracy", "quora": "accuracy", "sts": "pearson"}


def test_trainer_flattening_keeps_numbers_only(tiny_base, tmp_path):
    """MultiTaskTrainer.evaluate logs eval_<set>_<metric> numbers; the report's strings stay out."""
    from transformers import AutoTokenizer, TrainingArguments

    from hf_pals import MultiTaskModel, PALConfig
    from hf_pals.training import MultiTaskTrainer

    torch.manual_seed(0)
    tasks = [_binary(metric=["f1", "matthews_correlation"])]
    model = MultiTaskModel.from_base(tiny_base, tasks, PALConfig())
    rows = _rows([0] * 6, [0, 1, 1, 1, 0, 0])
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to="none", use_cpu=True)
    trainer = MultiTaskTrainer(
        model, args, train_datasets={"mrpc": rows}, eval_datasets={"mrpc": rows, "mrpc/test": rows},
        tokenizer=AutoTokenizer.from_pretrained(tiny_base), max_length=16,
    )
    metrics = trainer.evaluate()
    assert {"eval_mrpc_f1", "eval_mrpc_matthews_correlation", "eval_mrpc/test_f1", "eval_overall"} <= set(metrics)
    assert all(isinstance(v, (int, float)) for v in metrics.values()), metrics
    assert metrics["eval_overall"] == pytest.approx(metrics["eval_mrpc_f1"])
    assert not any("formula" in k or "main_metrics" in k for k in metrics)


def test_model_card_takes_the_new_metrics(tiny_base, tmp_path):
    """hub.model_card turns the new report keys into model-index results and ignores the string fields."""
    from huggingface_hub import ModelCard
    from transformers import AutoTokenizer

    from hf_pals import MultiTaskModel, PALConfig, hub

    torch.manual_seed(0)
    tasks = [_binary(metric=["f1", "accuracy", "matthews_correlation"]),
             TaskSpec(name="stsb", kind="regression", text_columns=("sentence1", "sentence2"), metric=["spearmanr", "pearsonr"])]
    model = MultiTaskModel.from_base(tiny_base, tasks, PALConfig())
    model.save_pretrained(str(tmp_path), tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    report = {
        "mrpc": {"f1": 0.8, "accuracy": 0.75, "matthews_correlation": 0.4},
        "stsb": {"spearman": 0.7, "pearson": 0.71},
        "overall": 0.75, "overall_formula": "mean_of_main_metrics",
        "main_metrics": {"mrpc": "f1", "stsb": "spearman"}, "split": "dev",
    }
    (tmp_path / "eval_results.json").write_text(json.dumps(report))
    card = ModelCard(str(hub.model_card(str(tmp_path), datasets={"mrpc": "nyu-mll/glue", "stsb": "sentence-transformers/stsb"})))
    results = {(r.task_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {
        ("mrpc", "f1"): 0.8, ("mrpc", "accuracy"): 0.75, ("mrpc", "matthews_correlation"): 0.4,
        ("stsb", "spearmanr"): 0.7, ("stsb", "pearsonr"): 0.71,
    }
