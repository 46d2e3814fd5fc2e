"""Recipes fail early with errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hf_pals.recipe import RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path, values) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _base():
    return yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes").glob("*.yaml")))
def test_shipped_recipes_parse(recipe):
    parsed = load_recipe(str(REPO / "recipes" / recipe))
    assert parsed.task_specs()
    assert parsed.training_arguments().max_steps > 0


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.update(epochs=3), "unknown field(s) ['epochs']"),
        (lambda r: r["tasks"].update(mnli={}), "unknown task(s) ['mnli']"),
        (lambda r: r["tasks"]["sst"].update(pooling="avg"), "pooling must be one of"),
        (lambda r: r["tasks"]["sst"].update(colour="red"), "unknown field(s) ['colour']"),
        (lambda r: r.update(adapter={"pal_num_heads": 5, "pal_hidden_size": 12}), "divisible"),
        (lambda r: r.update(adapter={"rank": 4}), "adapter"),
        (lambda r: r["training"].update(learning_rat=1.0), "training"),
        (lambda r: r["training"].pop("max_steps"), "max_steps"),
        (lambda r: r.update(learning_rates={"pals": 1e-3}), "unknown group(s) ['pals']"),
        (lambda r: r["data"].update(on_bad_rows="ignore"), "on_bad_rows"),
        (lambda r: r.pop("base_model"), "base_model"),
    ],
)
def test_bad_recipes_name_file_and_field(tmp_path, mutate, message):
    values = _base()
    mutate(values)
    path = _write(tmp_path, values)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert path in str(err.value)
    assert message in str(err.value)


def test_overrides_apply(tmp_path):
    path = _write(tmp_path, _base())
    recipe = load_recipe(path, ["training.max_steps=3", "tasks.sts.pooling=cls", 'output_dir="/tmp/x"'])
    assert recipe.training["max_steps"] == 3
    assert recipe.task_specs()["sts"].pooling == "cls"
    assert recipe.output_dir == "/tmp/x"


def test_missing_recipe_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_recipe(str(tmp_path / "nope.yaml"))
