"""Honest model selection: a validation split carved from train, load_best_model_at_end restoring the best
checkpoint bundle, early stopping, the recipe's selection fields, and dev files read only for the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from safetensors.torch import load_file

from hf_pals import run
from hf_pals.cli import main
from hf_pals.data.validation import carve_validation
from hf_pals.recipe import RecipeError, load_recipe, parse_recipe
from hf_pals.training import MultiTaskTrainer
from hf_pals.training import trainer as trainer_module

from test_trainer import _trainer

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "tiny.yaml")


# ------------------------------------------------------------------------------------ carve_validation
def _ids(dataset) -> list:
    return list(dataset["id"])


def _sets():
    return {
        "sst": Dataset.from_dict({"id": [f"s{i}" for i in range(40)], "label": [i % 5 for i in range(40)]}),
        "sts": Dataset.from_dict({"id": [f"t{i}" for i in range(10)], "label": [0.5 * i for i in range(10)]}),
    }


def test_carve_fraction_holds_out_disjoint_seeded_rows_of_every_task():
    sets = _sets()
    train, validation = carve_validation(sets, fraction=0.25, seed=3)
    assert {t: len(d) for t, d in validation.items()} == {"sst": 10, "sts": 3}  # ceil(0.25 n)
    assert {t: len(d) for t, d in train.items()} == {"sst": 30, "sts": 7}
    for task, original in sets.items():
        assert not set(_ids(train[task])) & set(_ids(validation[task]))
        assert sorted(_ids(train[task]) + _ids(validation[task])) == sorted(_ids(original))
        assert len(original) in (40, 10)  # the inputs are left as they were
    again_train, again_validation = carve_validation(_sets(), fraction=0.25, seed=3)
    assert _ids(again_validation["sst"]) == _ids(validation["sst"]) and _ids(again_train["sts"]) == _ids(train["sts"])
    _, other = carve_validation(_sets(), fraction=0.25, seed=4)
    assert _ids(other["sst"]) != _ids(validation["sst"])


def test_carve_counts_names_tasks_and_leaves_the_others_whole():
    sets = _sets()
    train, validation = carve_validation(sets, counts={"sts": 4}, seed=0)
    assert list(validation) == ["sts"] and len(validation["sts"]) == 4 and len(train["sts"]) == 6
    assert train["sst"] is sets["sst"]
    assert carve_validation(sets) == (sets, {})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(fraction=0.25, counts={"sst": 2}), "not both"),
        (dict(fraction=0.0), r"in \(0, 0.5\]"),
        (dict(fraction=0.6), r"in \(0, 0.5\]"),
        (dict(fraction=True), "must be a number"),
        (dict(counts={"quora": 2}), r"task\(s\) \['quora'\] have no train set"),
        (dict(counts={"sts": 10}), "task 'sts': cannot hold out 10 of its 10"),
        (dict(counts={"sts": 0}), r"validation_examples.sts must be a whole number of rows >= 1"),
    ],
)
def test_carve_refuses_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        carve_validation(_sets(), **kwargs)


# --------------------------------------------------------------------------------------------- recipe
def _tiny(**changes):
    values = yaml.safe_load(Path(TINY).read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            values.setdefault(section, {})[field] = value
        else:
            values[section] = value
    return values


SELECTING = dict(training__load_best_model_at_end=True, training__eval_strategy="steps", training__eval_steps=4)


def test_recipe_selection_defaults_to_overall_on_the_validation_split():
    recipe = parse_recipe(_tiny(data__validation_fraction=0.25, early_stopping={"patience": 2}, **SELECTING))
    args = recipe.training_arguments()
    assert args.load_best_model_at_end and args.metric_for_best_model == "overall" and args.greater_is_better
    assert args.restore_callback_states_from_checkpoint  # a resumed run keeps its patience counter
    assert recipe.early_stopping.patience == 2 and recipe.early_stopping.threshold == 0.0
    explicit = parse_recipe(_tiny(data__selection_split="dev", training__metric_for_best_model="sts_pearson", **SELECTING))
    assert explicit.training_arguments().metric_for_best_model == "sts_pearson"


@pytest.mark.parametrize(
    "changes, message",
    [
        (SELECTING, "say which split selects.*data.validation_fraction.*data.selection_split: dev"),
        (dict(early_stopping={"patience": 2}, training__eval_strategy="steps"), "early_stopping selects by evaluation"),
        (dict(data__selection_split="validation"), "selection_split is validation but there is no validation split"),
        (dict(data__selection_split="dev", data__validation_fraction=0.2), "would then go unused"),
        (dict(data__selection_split="test"), r"selection_split must be one of \['validation', 'dev'\]"),
        (dict(data__validation_fraction=0.7), r"data.validation_fraction must be in \(0, 0.5\]"),
        (dict(data__validation_fraction=0.2, data__validation_examples={"sst": 8}), "not both"),
        (dict(data__validation_examples={"mnli": 8}), r"task\(s\) \['mnli'\] are not trained tasks"),
        (dict(data__validation_fraction=0.2, training__load_best_model_at_end=True), "needs periodic evaluation"),
        (dict(data__validation_fraction=0.2, early_stopping={"patience": 0}, **SELECTING), "patience must be"),
        (dict(data__validation_fraction=0.2, early_stopping={"wait": 3}, **SELECTING), r"unknown field\(s\) \['wait'\]"),
        (dict(data__validation_fraction=0.2, training__metric_for_best_model="loss", **SELECTING), "not a loss"),
        (
            dict(data__validation_examples={"sst": 8}, training__metric_for_best_model="sts_pearson", **SELECTING),
            r"'sts_pearson' is not overall or a metric of the evaluation sets \['sst'\]",
        ),
    ],
)
def test_recipe_refuses_unclear_selection(changes, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe(_tiny(**changes), source="r.yaml")


# -------------------------------------------------------------------------------------------- trainer
def _scripted_overall(monkeypatch, values):
    """The trainer's evaluations score for real, but report `values` (one per evaluation) as overall."""
    real, calls = trainer_module.evaluate_tasks, []

    def scripted(*args, **kwargs):
        report = real(*args, **kwargs)
        report["overall"] = values[len(calls)]
        calls.append(report)
        return report

    monkeypatch.setattr(trainer_module, "evaluate_tasks", scripted)
    return calls


def _bundle_tensors(bundle: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a bundle's safetensors files (not its checkpoints'), keyed by file and name."""
    tensors = {}
    for path in sorted(bundle.glob("**/*.safetensors")):
        relative = path.relative_to(bundle)
        if "checkpoint-" not in str(relative) and path.name != "joint_state.safetensors":
            tensors.update({f"{relative}:{k}": v for k, v in load_file(path).items()})
    return tensors


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


SELECT_ARGS = dict(eval_strategy="steps", eval_steps=3, load_best_model_at_end=True)  # _trainer saves every 3


@pytest.mark.one_thread
def test_load_best_model_at_end_restores_the_best_checkpoint_bundle(tiny_base, tmp_path, monkeypatch):
    calls = _scripted_overall(monkeypatch, [0.5, 0.9, 0.4])  # steps 3, 6, 9: step 6 is best
    trainer = _trainer(tiny_base, tmp_path / "run", max_steps=9, metric_for_best_model="overall", **SELECT_ARGS)
    trainer.train()
    assert len(calls) == 3
    assert trainer.state.best_model_checkpoint == str(tmp_path / "run" / "checkpoint-6")
    assert trainer.state.best_metric == 0.9 and trainer.state.global_step == 9
    trainer.save_model(str(tmp_path / "final"))
    final = _bundle_tensors(tmp_path / "final")
    assert final and _same(final, _bundle_tensors(tmp_path / "run" / "checkpoint-6"))
    assert not _same(final, _bundle_tensors(tmp_path / "run" / "checkpoint-9"))  # the last step's differ


@pytest.mark.one_thread
def test_early_stopping_stops_after_patience_evaluations_without_improvement(tiny_base, tmp_path, monkeypatch):
    from transformers import EarlyStoppingCallback

    _scripted_overall(monkeypatch, [0.5, 0.6, 0.55, 0.6, 0.9, 0.9])  # no gain at steps 9 and 12
    trainer = _trainer(
        tiny_base,
        tmp_path,
        max_steps=18,
        metric_for_best_model="eval_overall",
        callbacks=[EarlyStoppingCallback(early_stopping_patience=2)],
        **SELECT_ARGS,
    )
    trainer.train()
    assert trainer.state.global_step == 12
    assert trainer.state.best_model_checkpoint == str(tmp_path / "checkpoint-6")
    assert sum(trainer.task_steps().values()) == 12  # the steps trained, not max_steps


def test_trainer_refuses_a_metric_its_evaluation_does_not_report(tiny_base, tmp_path):
    with pytest.raises(ValueError, match="not a loss"):  # transformers' default with load_best_model_at_end
        _trainer(tiny_base, tmp_path, **SELECT_ARGS)
    with pytest.raises(ValueError, match=r"'mnli_accuracy' is not overall or a metric of the evaluation sets"):
        _trainer(tiny_base, tmp_path, metric_for_best_model="mnli_accuracy", **SELECT_ARGS)


# ---------------------------------------------------------------------------------------- run.train
def _tiny_base_recipe(tmp_path, tiny_base, data_dir, **changes) -> str:
    values = _tiny(
        base_model=tiny_base,
        output_dir=str(tmp_path / "run"),
        data__dir=str(data_dir),
        data__max_eval_examples={"sst": 24, "quora": 24, "sts": 24},
        training__max_steps=4,
        training__save_steps=2,
        training__logging_steps=2,
        **changes,
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _record_order(monkeypatch):
    """Records the role of each `load_task_sets` call of run.train and when training ended, in order,
    and the evaluation sets the trainer was given."""
    events, seen = [], {}
    real_load, real_train, real_init = run.load_task_sets, MultiTaskTrainer.train, MultiTaskTrainer.__init__

    def load(specs, task_data, role, *args, **kwargs):
        events.append(role)
        return real_load(specs, task_data, role, *args, **kwargs)

    def train(self, *args, **kwargs):
        output = real_train(self, *args, **kwargs)
        events.append("trained")
        return output

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        seen.update(train=dict(self.train_datasets), eval=dict(self.eval_datasets))

    monkeypatch.setattr(run, "load_task_sets", load)
    monkeypatch.setattr(MultiTaskTrainer, "train", train)
    monkeypatch.setattr(MultiTaskTrainer, "__init__", init)
    return events, seen


@pytest.mark.one_thread
def test_validation_split_selects_and_the_dev_files_are_read_only_after_training(tiny_base, data_dir, tmp_path, monkeypatch):
    events, seen = _record_order(monkeypatch)
    changes = {"data__validation_fraction": 0.25, "training__load_best_model_at_end": True}
    changes.update(training__eval_strategy="steps", training__eval_steps=2)
    report = run.train(load_recipe(_tiny_base_recipe(tmp_path, tiny_base, data_dir, **changes)))
    assert events == ["train", "trained", "eval"]  # dev ("eval" role) read once, after training
    assert {t: len(d) for t, d in seen["eval"].items()} == {"sst": 16, "quora": 16, "sts": 16}  # 25% of 64
    assert {t: len(d) for t, d in seen["train"].items()} == {"sst": 48, "quora": 48, "sts": 48}
    for task, validation in seen["eval"].items():
        assert not set(_ids(validation)) & set(_ids(seen["train"][task]))

    selection = report["model_selection"]
    assert selection["split"] == "validation" and selection["metric"] == "overall"
    assert selection["examples"] == {"sst": 16, "quora": 16, "sts": 16}
    assert selection["best_step"] in (2, 4) and selection["restored_best"]
    out = tmp_path / "run"
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    logged = {h["step"]: h["eval_overall"] for h in state["log_history"] if "eval_overall" in h}
    assert selection["best_value"] == max(logged.values()) == logged[selection["best_step"]]
    assert _same(_bundle_tensors(out), _bundle_tensors(out / f"checkpoint-{selection['best_step']}"))
    assert report["split"] == "dev" and {"sst", "quora", "sts", "overall"} <= set(report)
    assert json.loads((out / "eval_results.json").read_text())["model_selection"] == selection


@pytest.mark.one_thread
def test_selecting_on_dev_is_explicit_and_reads_dev_before_training(tiny_base, data_dir, tmp_path, monkeypatch):
    events, seen = _record_order(monkeypatch)
    changes = {"data__selection_split": "dev", "training__eval_strategy": "steps", "training__eval_steps": 2}
    changes.update(early_stopping={"patience": 5}, training__metric_for_best_model="sst_accuracy")
    report = run.train(load_recipe(_tiny_base_recipe(tmp_path, tiny_base, data_dir, **changes)))
    assert events == ["train", "eval", "trained"]
    assert {t: len(d) for t, d in seen["eval"].items()} == {"sst": 24, "quora": 24, "sts": 24}
    selection = report["model_selection"]
    assert selection["split"] == "dev" and selection["metric"] == "sst_accuracy" and not selection["restored_best"]
    assert selection["steps_trained"] == selection["max_steps"] == 4


@pytest.mark.slow
def test_cli_selects_on_validation_with_minilm(data_dir, minilm_path, tmp_path):
    args = ["train", TINY, "--data-dir", str(data_dir), "--output-dir", str(tmp_path)]
    args += ["--set", "data.validation_fraction=0.25", "--set", "training.load_best_model_at_end=true"]
    args += ["--set", "training.eval_strategy=steps", "--set", "training.eval_steps=4"]
    args += ["--set", "early_stopping={patience: 3}", "--set", "data.max_eval_examples={sst: 32, quora: 32, sts: 32}"]
    assert main(args) == 0
    report = json.loads((tmp_path / "eval_results.json").read_text())
    selection = report["model_selection"]
    assert selection["split"] == "validation" and selection["best_step"] in (4, 8)
    assert _same(_bundle_tensors(tmp_path), _bundle_tensors(tmp_path / f"checkpoint-{selection['best_step']}"))
