"""Each CS224N report's recipe runs end to end as a tiny smoke run (real MiniLM, real data, 2 steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_pals.cli import main

REPORTS = Path(__file__).resolve().parents[1] / "recipes" / "reports"
SMOKE = [
    "--max-steps", "2",
    "--set", "training.save_steps=2",
    "--set", "training.per_device_train_batch_size=4",
    "--set", "data.max_train_examples={sst: 48, quora: 48, sts: 48}",
    "--set", "data.max_eval_examples={sst: 16, quora: 16, sts: 16}",
    "--set", "sampling.steps_per_epoch=1",
]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(p.name for p in REPORTS.glob("*.yaml")))
def test_report_recipe_smoke_run(recipe, data_dir, minilm_path, tmp_path):
    args = ["train", str(REPORTS / recipe), "--data-dir", str(data_dir), "--output-dir", str(tmp_path)] + SMOKE
    assert main(args) == 0
    report = json.loads((tmp_path / "eval_results.json").read_text())
    r = report["sts"]["pearson"]
    assert report["overall"] == pytest.approx((report["sst"]["accuracy"] + report["quora"]["accuracy"] + (r + 1) / 2) / 3)
    assert (tmp_path / "hf_pals_config.json").exists()
