"""Weight averaging (`weight_averaging:`, EMA / SWA): the final weights are the average of the per-step
weights, checkpoints hold the average and a resume reloads it, run.train saves and scores the average,
and bad recipe values are named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_pals import run
from hf_pals.modeling import MultiTaskModel
from hf_pals.recipe import RecipeError, load_recipe, parse_recipe
from hf_pals.training.weight_averaging import (
    WEIGHT_AVERAGING_NAME,
    WeightAveragingCallback,
    WeightAveragingConfig,
)

from test_trainer import _Kill, _trainer

TINY = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"


class _Record(TrainerCallback):
    """The trainable weights after every optimizer step: {step: {name: tensor}}."""

    def __init__(self):
        self.steps = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.steps[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _close(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)


def _differs(a: dict, b: dict) -> bool:
    return any(not torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)


@pytest.mark.one_thread
def test_ema_final_weights_are_the_hand_computed_ema_of_the_steps(tiny_base, tmp_path):
    record, averaging = _Record(), WeightAveragingCallback({"method": "ema", "decay": 0.5})
    trainer = _trainer(tiny_base, tmp_path, max_steps=6, callbacks=[record, averaging])
    trainer.train()
    assert sorted(record.steps) == [1, 2, 3, 4, 5, 6] and averaging.updates == 6 and averaging.applied
    ema = dict(record.steps[1])  # W_0 = the first step's weights, then W <- d W + (1 - d) w
    for step in range(2, 7):
        ema = {n: 0.5 * ema[n] + 0.5 * record.steps[step][n] for n in ema}
    final = _trainable(trainer.model)
    assert _close(final, ema)
    assert _differs(final, record.steps[6])  # not the last step's raw weights


@pytest.mark.one_thread
def test_swa_averages_the_steps_from_start_step_every_n(tiny_base, tmp_path):
    record = _Record()
    averaging = WeightAveragingCallback({"method": "swa", "start_step": 2, "every": 2})
    trainer = _trainer(tiny_base, tmp_path, max_steps=6, callbacks=[record, averaging])
    trainer.train()
    assert averaging.updates == 3  # steps 2, 4, 6
    mean = {n: (record.steps[2][n] + record.steps[4][n] + record.steps[6][n]) / 3 for n in record.steps[6]}
    assert _close(_trainable(trainer.model), mean)
    with_first = {n: (record.steps[1][n] + 3 * mean[n]) / 4 for n in mean}  # had step 1 been averaged too
    assert _differs(_trainable(trainer.model), with_first)


def test_update_steps_of_the_config():
    swa = WeightAveragingConfig(method="swa", start_step=1000, every=10)
    assert [s for s in range(995, 1025) if swa.updates_at(s)] == [1000, 1010, 1020]
    assert swa.updates_until(999) == 0 and swa.updates_until(1000) == 1 and swa.updates_until(1019) == 2
    every = WeightAveragingConfig(method="ema", start_step=0, every=3)
    assert [s for s in range(0, 10) if every.updates_at(s)] == [3, 6, 9] and every.updates_until(9) == 3
    assert WeightAveragingConfig().decay == 0.999 and WeightAveragingConfig(start_step=0).updates_until(5) == 5


@pytest.mark.one_thread
def test_checkpoints_hold_the_average_and_a_killed_run_resumes_with_it(tiny_base, tmp_path):
    def averaging():
        return WeightAveragingCallback({"method": "ema", "decay": 0.5})

    straight = _trainer(tiny_base, tmp_path / "straight", max_steps=6, callbacks=[averaging()])
    straight.train()
    expected = _trainable(straight.model)

    killed = _trainer(tiny_base, tmp_path / "killed", max_steps=6, callbacks=[averaging(), _Kill(at=4)])
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    saved = load_file(tmp_path / "killed" / "checkpoint-3" / WEIGHT_AVERAGING_NAME)
    assert int(saved.pop("__n_averaged__")) == 3
    assert set(saved) == set(expected)
    raw = _trainable(killed.model)  # the killed run's raw weights at step 4 differ from its average at 3
    assert _differs({n: saved[n] for n in raw}, raw)

    resumed_averaging = averaging()
    resumed = _trainer(tiny_base, tmp_path / "killed", max_steps=6, callbacks=[resumed_averaging])
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6 and resumed_averaging.updates == 6
    got = _trainable(resumed.model)
    for name, value in expected.items():
        assert torch.equal(got[name], value), name

    os.remove(tmp_path / "killed" / "checkpoint-6" / WEIGHT_AVERAGING_NAME)
    again = _trainer(tiny_base, tmp_path / "killed", max_steps=6, callbacks=[averaging()])
    with pytest.raises(FileNotFoundError, match=f"checkpoint-6/{WEIGHT_AVERAGING_NAME} not found"):
        again.train(resume_from_checkpoint=True)


@pytest.mark.one_thread
def test_trainer_refuses_weight_averaging_with_load_best_model_at_end(tiny_base, tmp_path):
    with pytest.raises(ValueError, match="weight_averaging and load_best_model_at_end"):
        _trainer(
            tiny_base,
            tmp_path,
            callbacks=[WeightAveragingCallback({"method": "ema"})],
            eval_strategy="steps",
            eval_steps=3,
            load_best_model_at_end=True,
            metric_for_best_model="overall",
        )


# ------------------------------------------------------------------------------------------ recipes
def _values(**changes):
    values = yaml.safe_load(TINY.read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            values.setdefault(section, {})[field] = value
        else:
            values[section] = value
    return values


def test_recipe_builds_the_section():
    recipe = parse_recipe(_values(weight_averaging={"method": "swa", "start_step": 4, "every": 2}), source="r.yaml")
    assert recipe.weight_averaging == WeightAveragingConfig(method="swa", decay=None, start_step=4, every=2)
    assert parse_recipe(_values(), source="r.yaml").weight_averaging is None


@pytest.mark.parametrize(
    "section, message",
    [
        ({"method": "polyak"}, r"weight_averaging: weight_averaging.method must be one of \['ema', 'swa'\]"),
        ({"method": "ema", "decay": 1.0}, r"weight_averaging.decay must be a number with 0 < decay < 1, got 1.0"),
        ({"method": "ema", "decay": 0}, r"weight_averaging.decay must be"),
        ({"method": "swa", "decay": 0.9}, r"weight_averaging.decay is for method ema only"),
        ({"method": "swa", "every": 0}, r"weight_averaging.every must be an integer >= 1"),
        ({"start_step": -1}, r"weight_averaging.start_step must be an integer >= 0"),
        ({"start_step": 1.5}, r"weight_averaging.start_step must be an integer"),
        ({"methd": "ema"}, r"weight_averaging: unknown field\(s\) \['methd'\]"),
        ({"start_step": 9}, r"weight_averaging.start_step 9 \(every 1\) averages no step of the run's 8 steps"),
        ("ema", r"weight_averaging: expected a mapping"),
    ],
)
def test_recipe_names_bad_weight_averaging_values(section, message):
    with pytest.raises(RecipeError, match=r"^r.yaml: .*" + message):
        parse_recipe(_values(weight_averaging=section), source="r.yaml")


def test_recipe_refuses_weight_averaging_with_load_best_model_at_end():
    values = _values(
        weight_averaging={"method": "ema"},
        data__validation_fraction=0.25,
        training__load_best_model_at_end=True,
        training__eval_strategy="steps",
        training__eval_steps=4,
    )
    with pytest.raises(RecipeError, match="r.yaml: weight_averaging makes the final weights the average"):
        parse_recipe(values, source="r.yaml")


# ----------------------------------------------------------------------------------------- run.train
@pytest.mark.one_thread
def test_run_train_saves_and_scores_the_averaged_weights(tiny_base, data_dir, tmp_path, monkeypatch):
    values = _values(
        base_model=tiny_base,
        output_dir=str(tmp_path / "run"),
        data__dir=str(data_dir),
        data__max_eval_examples={"sst": 16, "quora": 16, "sts": 16},
        training__max_steps=4,
        training__save_steps=2,
        training__logging_steps=2,
        weight_averaging={"method": "ema", "decay": 0.5},
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    scored = []
    real = run.evaluate_tasks

    def evaluate_tasks(model, *args, **kwargs):
        scored.append(_trainable(model))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(run, "evaluate_tasks", evaluate_tasks)
    report = run.train(load_recipe(str(path)))
    out = tmp_path / "run"
    average = load_file(out / "checkpoint-4" / WEIGHT_AVERAGING_NAME)
    assert int(average.pop("__n_averaged__")) == 4
    assert report["weight_averaging"] == {
        "method": "ema", "decay": 0.5, "start_step": 0, "every": 1, "updates": 4, "applied": True
    }
    bundle = _all(MultiTaskModel.from_pretrained(str(out)))
    raw = _all(MultiTaskModel.from_pretrained(str(out / "checkpoint-4")))  # checkpoints hold the raw weights
    assert set(average) <= set(bundle)
    for name, value in average.items():
        assert torch.equal(bundle[name], value), name
        assert torch.equal(scored[0][name], value), name  # the dev report scored the average
    assert _differs({n: bundle[n] for n in average}, {n: raw[n] for n in average})


def _all(model) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}
