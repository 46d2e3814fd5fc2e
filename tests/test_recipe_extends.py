"""`extends:` recipes: a recipe written against another holds only what it changes; mappings merge key
by key, other values replace, `--set` applies last, and a missing base or a circle is an error naming
the file. The shipped lever recipes are the levers' fixed baseline plus exactly their lever, and the main
recipe is that baseline plus the levers it adopted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hf_pals.recipe import RecipeError, load_recipe, merge_recipe_values, read_recipe_values

REPO = Path(__file__).resolve().parents[1]
MAIN = REPO / "recipes" / "cs224n_pals.yaml"
LEVERS = REPO / "recipes" / "levers"
BASELINE = LEVERS / "baseline.yaml"


def _write(path: Path, values) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _diff(base, other, prefix=""):
    """The dotted keys where two nested mappings differ."""
    keys = set(base) | set(other)
    out = set()
    for key in keys:
        a, b = base.get(key), other.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out |= _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.add(f"{prefix}{key}")
    return out


def test_merge_mappings_key_by_key_and_replace_the_rest():
    base = {"tasks": {"sst": {"pooling": "mean"}, "sts": {"head": "cosine"}}, "freeze": ["a"], "max_length": 128}
    over = {"tasks": {"sst": {"top_layer": True}}, "freeze": ["b"], "max_length": None}
    merged = merge_recipe_values(base, over)
    assert merged == {
        "tasks": {"sst": {"pooling": "mean", "top_layer": True}, "sts": {"head": "cosine"}},
        "freeze": ["b"],
        "max_length": None,
    }
    assert base["tasks"]["sst"] == {"pooling": "mean"}  # the base is not changed


def test_extends_reads_the_base_relative_to_the_recipe(tmp_path):
    base = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    _write(tmp_path / "base" / "tiny.yaml", base)
    path = _write(tmp_path / "levers" / "lever.yaml",
                  {"extends": "../base/tiny.yaml", "output_dir": "runs/lever", "tasks": {"sts": {"pooling": "cls"}},
                   "training": {"max_steps": 3}})
    recipe = load_recipe(path, ["training.logging_steps=1"])
    assert recipe.output_dir == "runs/lever"
    assert set(recipe.tasks) == {"sst", "quora", "sts"}
    specs = recipe.task_specs()
    assert specs["sts"].pooling == "cls" and specs["sts"].pair_encoding == "siamese"  # merged, not replaced
    args = recipe.training_arguments()
    assert (args.max_steps, args.logging_steps, args.per_device_train_batch_size) == (3, 1, 8)
    assert "extends" not in read_recipe_values(path)


def test_a_chain_of_bases(tmp_path):
    base = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    _write(tmp_path / "a.yaml", base)
    _write(tmp_path / "b.yaml", {"extends": "a.yaml", "max_length": 32, "training": {"max_steps": 5}})
    path = _write(tmp_path / "c.yaml", {"extends": "b.yaml", "training": {"max_steps": 7}})
    values = read_recipe_values(path)
    assert values["max_length"] == 32 and values["training"]["max_steps"] == 7
    assert values["training"]["seed"] == base["training"]["seed"]


def test_a_circle_is_an_error_naming_the_files(tmp_path):
    a = _write(tmp_path / "a.yaml", {"extends": "b.yaml", "base_model": "x"})
    _write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(RecipeError, match="circle") as err:
        load_recipe(a)
    assert "a.yaml" in str(err.value) and "b.yaml" in str(err.value)


@pytest.mark.parametrize("extends, message", [("missing.yaml", "does not exist"), (3, "expected the path"), ("", "expected the path")])
def test_a_bad_base_is_an_error_naming_the_recipe(tmp_path, extends, message):
    path = _write(tmp_path / "lever.yaml", {"extends": extends})
    with pytest.raises(RecipeError, match=message) as err:
        load_recipe(path)
    assert str(path) in str(err.value)


EXPECTED_LEVERS = {
    "ema.yaml": {"weight_averaging"},
    "layer_decay.yaml": {"learning_rates.layer_decay"},
    "top_layer.yaml": {"tasks.sst.top_layer", "tasks.quora.top_layer", "tasks.sts.top_layer"},
    "mlm_base.yaml": {"base_model"},
    "sqrt_sampling.yaml": {"sampling.name"},
    "quora_siamese.yaml": {"tasks.quora.pair_encoding"},
    "pal_size_204.yaml": {"adapter.pal_hidden_size"},
    "quora_both.yaml": {"tasks.quora.pair_encoding"},
    "proportional_sampling.yaml": {"sampling.name"},
    "eda.yaml": {"augment"},
    "smart.yaml": {"smart"},
    "double_steps.yaml": {"sampling.steps_per_epoch", "training.max_steps", "training.warmup_steps"},
    "quora_swap.yaml": {"pair_swap"},
    "encoder_lr_1e4.yaml": {"learning_rates.encoder"},
    "encoder_lr_2e4.yaml": {"learning_rates.encoder"},
    "encoder_lr_1_5e4.yaml": {"learning_rates.encoder", "tasks.quora.predict_both_orders"},
    "batch16.yaml": {
        "learning_rates.encoder", "tasks.quora.predict_both_orders", "sampling.steps_per_epoch",
        "training.max_steps", "training.warmup_steps", "training.per_device_train_batch_size",
    },
    "sts_cosent.yaml": {"learning_rates.encoder", "tasks.quora.predict_both_orders", "tasks.sts.loss"},
    "sst_label_smoothing.yaml": {"learning_rates.encoder", "tasks.quora.predict_both_orders", "tasks.sst.label_smoothing"},
    "quora_linear_cosine.yaml": {
        "learning_rates.encoder", "tasks.quora.predict_both_orders", "tasks.quora.pair_encoding", "tasks.quora.head",
    },
    "selection.yaml": {
        "learning_rates.encoder", "tasks.quora.predict_both_orders", "data.validation_fraction",
        "data.selection_split", "training.eval_strategy", "training.eval_steps", "training.load_best_model_at_end",
        "training.metric_for_best_model",
    },
    "adapters_lr_3e4.yaml": {"learning_rates.encoder", "tasks.quora.predict_both_orders", "learning_rates.adapters"},
    "heads_lr_3e4.yaml": {"learning_rates.encoder", "tasks.quora.predict_both_orders", "learning_rates.heads"},
    "pal_dropout_0.yaml": {"learning_rates.encoder", "tasks.quora.predict_both_orders", "adapter.pal_dropout"},
    "pal_dropout_02.yaml": {"learning_rates.encoder", "tasks.quora.predict_both_orders", "adapter.pal_dropout"},
    "heads_lr_1e4.yaml": {"learning_rates.encoder", "tasks.quora.predict_both_orders", "learning_rates.heads"},
    "sst_r_drop.yaml": {"learning_rates.encoder", "tasks.quora.predict_both_orders", "r_drop"},
    "sst_loss_weight_2.yaml": {"learning_rates.encoder", "tasks.quora.predict_both_orders", "tasks.sst.loss_weight"},
    "cosine_schedule.yaml": {"learning_rates.encoder", "tasks.quora.predict_both_orders", "training.lr_scheduler_type"},
    "uniform_sampling.yaml": {"learning_rates.encoder", "tasks.quora.predict_both_orders", "sampling.name"},
    "combined.yaml": {
        "learning_rates.encoder", "tasks.quora.pair_encoding", "tasks.quora.predict_both_orders", "augment"
    },
}


#: The levers the main recipe has taken from the measured ones (README, "Quality over seeds").
ADOPTED = {"learning_rates.encoder", "tasks.quora.predict_both_orders"}


def test_every_lever_recipe_is_listed():
    assert sorted(p.name for p in LEVERS.glob("*.yaml")) == sorted([*EXPECTED_LEVERS, "baseline.yaml"])


@pytest.mark.parametrize("lever", sorted(EXPECTED_LEVERS))
def test_a_lever_recipe_is_the_baseline_plus_its_lever(lever):
    baseline, values = read_recipe_values(str(BASELINE)), read_recipe_values(str(LEVERS / lever))
    assert _diff(baseline, values) == EXPECTED_LEVERS[lever] | {"output_dir"}
    recipe = load_recipe(str(LEVERS / lever))  # and it passes every check
    assert set(recipe.task_specs()) == {"sst", "quora", "sts"}
    expected_steps = 3000 if lever in ("double_steps.yaml", "batch16.yaml") else 1500
    assert recipe.training_arguments().max_steps == expected_steps


def test_the_main_recipe_is_the_baseline_plus_the_adopted_levers():
    main, baseline = read_recipe_values(str(MAIN)), read_recipe_values(str(BASELINE))
    assert _diff(baseline, main) == ADOPTED | {"output_dir"}
