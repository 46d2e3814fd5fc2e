"""`training.bf16: auto` and bf16 on a CPU-only machine (hf_pals.mixed_precision), through the recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from hf_pals import mixed_precision
from hf_pals.recipe import RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[1]


def _arguments(tmp_path, **training):
    values = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    values["training"].update(training)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return load_recipe(str(path)).training_arguments()


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_cpu_bf16_units(tmp_path, monkeypatch, cpu_only, native):
    monkeypatch.setattr(mixed_precision, "cpu_has_native_bf16", lambda: native)
    args = _arguments(tmp_path, bf16="auto")
    assert args.bf16 is native
    assert args.use_cpu is native  # CPU autocast needs use_cpu; float32 leaves it at its default


def test_bf16_true_without_cuda_sets_use_cpu(tmp_path, cpu_only):
    args = _arguments(tmp_path, bf16=True)
    assert args.bf16 and args.use_cpu


def test_an_explicit_use_cpu_is_kept(tmp_path, cpu_only):
    with pytest.raises(RecipeError, match="bf16"):  # transformers' own refusal, naming the recipe
        _arguments(tmp_path, bf16=True, use_cpu=False)


def test_float32_recipes_are_untouched(tmp_path, cpu_only):
    args = _arguments(tmp_path)
    assert not args.bf16 and not args.use_cpu


def test_with_cuda_auto_asks_the_gpu_and_leaves_use_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert mixed_precision.resolve_bf16({"bf16": "auto"}) == {"bf16": False}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert mixed_precision.resolve_bf16({"bf16": "AUTO"}) == {"bf16": True}


def test_cpu_check_matches_torch():
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert mixed_precision.cpu_has_native_bf16() is bool(expected)
