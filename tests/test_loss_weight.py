"""A task's static `loss_weight`: checked where it is read, scaling the training loss (and so the task's
gradient) in the trainer, never the evaluation loss or the logged per-task loss, and set from a recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from hf_pals.recipe import RecipeError, load_recipe
from hf_pals.tasks import TaskSpec, cs224n_task
from test_smart import _batch
from test_smart import _trainer

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "2"])
def test_loss_weight_must_be_a_positive_finite_number(bad):
    with pytest.raises(ValueError, match=r"task 'sst': loss_weight must be a finite number > 0"):
        cs224n_task("sst", loss_weight=bad)


def test_loss_weight_round_trips_and_defaults_to_one():
    spec = cs224n_task("sst", loss_weight=2.5)
    assert TaskSpec.from_dict("sst", {k: v for k, v in spec.to_dict().items() if k != "name"}) == spec
    old = {k: v for k, v in cs224n_task("sst").to_dict().items() if k not in ("name", "loss_weight")}
    assert TaskSpec.from_dict("sst", old).loss_weight == 1.0  # a bundle written before the field


def test_trainer_scales_the_training_loss_only(tiny_base, tmp_path):
    trainer = _trainer(tiny_base, tmp_path)
    model = trainer.model.train()
    model.tasks["sst"].loss_weight = 2.5
    sst, sts = _batch(tiny_base, model, "sst"), _batch(tiny_base, model, "sts")
    torch.manual_seed(3)
    plain = model(**sst)["loss"]
    torch.manual_seed(3)
    weighted = trainer.compute_loss(model, sst)
    torch.testing.assert_close(weighted, 2.5 * plain)
    assert trainer._task_loss_sum["sst"] == pytest.approx(plain.item())  # the log stays unweighted

    torch.manual_seed(3)
    plain_sts = model(**sts)["loss"]
    torch.manual_seed(3)
    assert torch.equal(trainer.compute_loss(model, sts), plain_sts)  # weight 1: the loss itself

    model.eval()
    assert torch.equal(trainer.compute_loss(model, sst), model(**sst)["loss"])  # evaluation: unweighted


def test_recipe_sets_a_tasks_weight_and_names_a_bad_one(tmp_path):
    values = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    values["tasks"]["sst"] = {**(values["tasks"]["sst"] or {}), "loss_weight": 2.0}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    assert load_recipe(str(path)).task_specs()["sst"].loss_weight == 2.0

    values["tasks"]["sst"]["loss_weight"] = -1
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(RecipeError) as err:
        load_recipe(str(path))
    assert str(path) in str(err.value) and "loss_weight must be a finite number > 0" in str(err.value)
