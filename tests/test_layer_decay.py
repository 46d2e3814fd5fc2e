"""Layer-wise learning-rate decay (`learning_rates.layer_decay`): optimizer groups by depth, the scheduler
keeping the ratios, and the checks of the value in the trainer and the recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hf_pals.recipe import RecipeError, parse_recipe
from hf_pals.training.layer_decay import check_layer_decay, decay_exponent

from test_trainer import _trainer

TINY = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"
P = "encoder.base_model.model."  # the BertModel inside PEFT's wrapper
RATES = {"encoder": 1e-4, "adapters": 1e-3, "heads": 2e-3}


def _lrs(trainer, optimizer):
    """Parameter name -> (lr, weight_decay) of its optimizer group; every trainable parameter once."""
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    out = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            assert names[id(param)] not in out
            out[names[id(param)]] = (group["lr"], group["weight_decay"])
    assert set(out) == {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    return out


@pytest.mark.one_thread
def test_layer_decay_scales_the_encoder_by_depth_and_keeps_adapters_and_heads(tiny_base, tmp_path):
    trainer = _trainer(tiny_base, tmp_path, learning_rates={**RATES, "layer_decay": 0.5}, weight_decay=0.01)
    lrs = _lrs(trainer, trainer.create_optimizer())
    # L = 2 layers: embeddings ξ^2, layer 0 ξ^1, layer 1 (the top) and the pooler ξ^0
    assert lrs[P + "embeddings.word_embeddings.weight"] == (pytest.approx(1e-4 * 0.25), 0.01)
    assert lrs[P + "embeddings.LayerNorm.weight"] == (pytest.approx(1e-4 * 0.25), 0.0)
    assert lrs[P + "encoder.layer.0.base_layer.attention.self.query.weight"] == (pytest.approx(1e-4 * 0.5), 0.01)
    assert lrs[P + "encoder.layer.0.base_layer.attention.self.query.bias"] == (pytest.approx(1e-4 * 0.5), 0.0)
    assert lrs[P + "encoder.layer.1.base_layer.output.dense.weight"] == (1e-4, 0.01)
    assert lrs[P + "pooler.dense.weight"] == (1e-4, 0.01)
    # a PAL module of layer i keeps the adapters' rate, the heads theirs
    assert lrs[P + "encoder.layer.0.pals_encoder.sst.weight"][0] == 1e-3
    assert lrs[P + "encoder.layer.0.pals_query.sts.weight"][0] == 1e-3
    assert lrs["heads.sst.classifier.weight"][0] == 2e-3


@pytest.mark.one_thread
def test_layer_decay_one_gives_the_groups_of_no_decay(tiny_base, tmp_path):
    def groups(rates):
        trainer = _trainer(tiny_base, tmp_path, learning_rates=rates, weight_decay=0.01)
        names = {id(p): n for n, p in trainer.model.named_parameters()}
        optimizer = trainer.create_optimizer()
        return [(g["lr"], g["weight_decay"], [names[id(p)] for p in g["params"]]) for g in optimizer.param_groups]

    plain = groups(RATES)
    assert groups({**RATES, "layer_decay": 1.0}) == plain
    assert len(groups({**RATES, "layer_decay": 0.9})) > len(plain)  # the encoder split by depth


@pytest.mark.one_thread
def test_the_scheduler_keeps_each_depth_s_rate(tiny_base, tmp_path):
    trainer = _trainer(tiny_base, tmp_path, max_steps=6, learning_rates={**RATES, "layer_decay": 0.5})
    optimizer = trainer.create_optimizer()
    scheduler = trainer.create_scheduler(num_training_steps=6, optimizer=optimizer)
    initial = [g["initial_lr"] for g in optimizer.param_groups]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(initial)
    optimizer.step()  # no gradients: nothing moves
    scheduler.step()
    lrs = _lrs(trainer, optimizer)
    for group, first in zip(optimizer.param_groups, initial):  # linear decay: every group by the same factor
        assert group["lr"] == pytest.approx(first * 5 / 6)
    embeddings = lrs[P + "embeddings.word_embeddings.weight"][0]
    top = lrs[P + "encoder.layer.1.base_layer.output.dense.weight"][0]
    assert embeddings / top == pytest.approx(0.25)
    assert lrs["heads.sst.classifier.weight"][0] == pytest.approx(2e-3 * 5 / 6)


def test_decay_exponent_of_a_model_without_adapters():
    assert decay_exponent("encoder.embeddings.word_embeddings.weight", 6) == 6
    assert decay_exponent("encoder.encoder.layer.0.attention.self.query.weight", 6) == 5
    assert decay_exponent("encoder.encoder.layer.5.output.dense.bias", 6) == 0
    assert decay_exponent("encoder.pooler.dense.weight", 6) == 0
    with pytest.raises(ValueError, match="layer 6, but the encoder has 6 layers"):
        decay_exponent("encoder.encoder.layer.6.output.dense.bias", 6)


@pytest.mark.parametrize("value", [0, 0.0, -0.5, 1.5, "0.9", True])
def test_bad_layer_decay_values_are_refused(value):
    with pytest.raises(ValueError, match=r"learning_rates.layer_decay must be a number with 0 < layer_decay <= 1"):
        check_layer_decay(value)


def _recipe(**learning_rates):
    values = yaml.safe_load(TINY.read_text())
    values["learning_rates"] = {**values["learning_rates"], **learning_rates}
    return values


def test_recipe_accepts_and_checks_layer_decay():
    assert parse_recipe(_recipe(layer_decay=0.9), source="r.yaml").learning_rates["layer_decay"] == 0.9
    with pytest.raises(RecipeError, match=r"r.yaml: learning_rates.layer_decay must be .* got 1.2"):
        parse_recipe(_recipe(layer_decay=1.2), source="r.yaml")
    with pytest.raises(RecipeError, match=r"r.yaml: learning_rates: unknown group\(s\) \['layer_decy'\]"):
        parse_recipe(_recipe(layer_decy=0.9), source="r.yaml")


@pytest.mark.one_thread
def test_trainer_refuses_a_bad_layer_decay(tiny_base, tmp_path):
    with pytest.raises(ValueError, match="layer_decay must be a number"):
        _trainer(tiny_base, tmp_path, learning_rates={**RATES, "layer_decay": 0})
