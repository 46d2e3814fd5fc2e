"""`hf-pals train --seeds`: one run per seed, a summary with mean and sample sd, resumable, plotted."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import yaml

from hf_pals import run
from hf_pals.cli import main
from hf_pals.seeds import SUMMARY_NAME, parse_seeds, summarize

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "tiny.yaml")


def _report(sst, sts, overall, train_seconds, best_step=None):
    report = {
        "sst": {"accuracy": sst, "f1": sst / 2},
        "sts": {"pearson": sts},
        "overall": overall,
        "overall_formula": "mean_of_main_metrics",
        "main_metrics": {"sst": "accuracy", "sts": "pearson"},
        "split": "dev",
        "timing": {"train_seconds": train_seconds, "eval_seconds": 1.0},
        "trainable_parameters": 123,
        "task_steps": {"sst": 4, "sts": 4},
    }
    if best_step is not None:
        report["model_selection"] = {"metric": "overall", "best_step": best_step, "best_value": overall, "split": "validation"}
    return report


def test_summarize_gives_each_seed_mean_sample_sd_and_n():
    summary = summarize({2: _report(0.4, 0.1, 0.3, 10.0, 8), 1: _report(0.5, 0.3, 0.4, 12.0, 4), 3: _report(0.6, 0.2, 0.5, 14.0)})
    assert summary["seeds"] == ["1", "2", "3"] and summary["n"] == 3 and summary["split"] == "dev"
    accuracy = summary["tasks"]["sst"]["accuracy"]
    assert accuracy["values"] == {"1": 0.5, "2": 0.4, "3": 0.6}
    assert accuracy["mean"] == pytest.approx(0.5) and accuracy["n"] == 3
    assert accuracy["sd"] == pytest.approx(0.1)  # sqrt((0.01 + 0.01 + 0) / (3 - 1))
    assert summary["tasks"]["sst"]["f1"]["mean"] == pytest.approx(0.25)
    pearson = summary["tasks"]["sts"]["pearson"]
    assert pearson["sd"] == pytest.approx(math.sqrt(((0.3 - 0.2) ** 2 + (0.1 - 0.2) ** 2) / 2))
    assert summary["overall"]["mean"] == pytest.approx(0.4) and summary["overall"]["sd"] == pytest.approx(0.1)
    assert summary["timing"]["train_seconds"]["mean"] == pytest.approx(12.0)
    assert summary["timing"]["train_seconds"]["sd"] == pytest.approx(2.0)
    assert set(summary["tasks"]) == {"sst", "sts"}  # not timing, task_steps or model_selection
    assert summary["main_metrics"] == {"sst": "accuracy", "sts": "pearson"}
    assert summary["model_selection"] == {
        "1": {"metric": "overall", "best_step": 4, "best_value": 0.4, "split": "validation"},
        "2": {"metric": "overall", "best_step": 8, "best_value": 0.3, "split": "validation"},
    }
    assert json.loads(json.dumps(summary)) == summary


def test_summarize_counts_only_the_seeds_that_report_a_value():
    partial = _report(0.7, 0.2, 0.45, 9.0)
    del partial["sst"]["f1"]
    summary = summarize({1: _report(0.5, 0.3, 0.4, 12.0), 2: partial})
    assert summary["tasks"]["sst"]["f1"] == {"values": {"1": 0.25}, "mean": 0.25, "sd": None, "n": 1}
    one = summarize({5: _report(0.5, 0.3, 0.4, 12.0)})
    assert one["overall"] == {"values": {"5": 0.4}, "mean": 0.4, "sd": None, "n": 1}
    with pytest.raises(ValueError, match="no reports"):
        summarize({})


@pytest.mark.parametrize("value, message", [("1,,2", "got '' in"), ("1,x", "got 'x'"), ("3,1,3", r"seed\(s\) \[3\] are given twice")])
def test_parse_seeds(value, message):
    assert parse_seeds(" 3, 1,2") == [3, 1, 2]
    with pytest.raises(ValueError, match=message):
        parse_seeds(value)


def _recipe(tmp_path, base_model, data_dir) -> str:
    values = yaml.safe_load(Path(TINY).read_text())
    values.update(base_model=base_model, output_dir=str(tmp_path / "seeds"))
    values["data"].update(dir=str(data_dir), max_eval_examples={"sst": 24, "quora": 24, "sts": 24})
    values["training"].update(max_steps=4, save_steps=4, logging_steps=2)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.one_thread
def test_seeds_write_one_run_per_seed_a_summary_and_resume(tiny_base, data_dir, tmp_path, monkeypatch, capsys):
    recipe = _recipe(tmp_path, tiny_base, data_dir)
    out = tmp_path / "seeds"
    assert main(["train", recipe, "--seeds", "1,2"]) == 0
    reports = {s: json.loads((out / f"seed-{s}" / "eval_results.json").read_text()) for s in (1, 2)}
    for seed in (1, 2):
        assert (out / f"seed-{seed}" / "hf_pals_config.json").exists()
        state = json.loads((out / f"seed-{seed}" / "checkpoint-4" / "trainer_state.json").read_text())
        assert state["global_step"] == 4
    assert reports[1]["sst"] != reports[2]["sst"] or reports[1]["sts"] != reports[2]["sts"]  # two seeds, two runs
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["seeds"] == ["1", "2"] and summary["n"] == 2
    for task, metric in (("sst", "accuracy"), ("quora", "accuracy"), ("sts", "pearson")):
        values = [reports[s][task][metric] for s in (1, 2)]
        stats = summary["tasks"][task][metric]
        assert stats["values"] == {"1": values[0], "2": values[1]} and stats["n"] == 2
        assert stats["mean"] == pytest.approx(statistics.fmean(values))
        assert stats["sd"] == pytest.approx(statistics.stdev(values))
    assert summary["overall"]["mean"] == pytest.approx((reports[1]["overall"] + reports[2]["overall"]) / 2)
    assert set(summary["wall_seconds"]) == {"1", "2"} and all(w > 0 for w in summary["wall_seconds"].values())
    assert summary["runs"] == {"1": str(out / "seed-1"), "2": str(out / "seed-2")}

    # --resume: seed 1 is finished and kept; seed 2 (its report lost) resumes from its last checkpoint.
    (out / "seed-2" / "eval_results.json").unlink()
    calls, real_train = [], run.train
    monkeypatch.setattr(run, "train", lambda recipe, resume=None: calls.append((recipe.output_dir, resume)) or real_train(recipe, resume))
    assert main(["train", recipe, "--seeds", "1,2", "--resume"]) == 0
    assert calls == [(str(out / "seed-2"), True)]
    resumed = json.loads((out / SUMMARY_NAME).read_text())
    assert resumed["wall_seconds"]["1"] == summary["wall_seconds"]["1"]
    assert resumed["tasks"]["sst"]["accuracy"] == summary["tasks"]["sst"]["accuracy"]

    pytest.importorskip("matplotlib")
    capsys.readouterr()
    assert main(["plot", str(out)]) == 0
    plotted = json.loads(capsys.readouterr().out)
    assert plotted["seeds_summary"] == str(out / SUMMARY_NAME)
    with open(plotted["plots"]["seeds"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_seed_and_seeds_together_are_refused(tmp_path, capsys):
    assert main(["train", TINY, "--seeds", "1,2", "--seed", "3", "--output-dir", str(tmp_path)]) == 2
    assert "--seed or --seeds" in capsys.readouterr().err
    assert main(["train", TINY, "--seeds", "1,1", "--output-dir", str(tmp_path)]) == 2


@pytest.mark.slow
def test_seeds_through_the_cli_with_minilm(data_dir, minilm_path, tmp_path):
    args = ["train", TINY, "--data-dir", str(data_dir), "--output-dir", str(tmp_path), "--seeds", "1,2"]
    args += ["--max-steps", "4", "--set", "training.save_steps=4", "--set", "data.max_eval_examples={sst: 32, quora: 32, sts: 32}"]
    assert main(args) == 0
    summary = json.loads((tmp_path / SUMMARY_NAME).read_text())
    assert summary["n"] == 2 and summary["overall"]["n"] == 2 and summary["overall"]["sd"] is not None
    for seed in (1, 2):
        assert (tmp_path / f"seed-{seed}" / "encoder" / "model.safetensors").exists()
        report = json.loads((tmp_path / f"seed-{seed}" / "eval_results.json").read_text())
        assert summary["overall"]["values"][str(seed)] == report["overall"]
