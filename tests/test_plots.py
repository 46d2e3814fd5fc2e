"""`hf-pals plot` draws a tiny run's losses, dev metrics and task sampling as real PNG files."""

from __future__ import annotations

import json

import pytest

from hf_pals.cli import main
from hf_pals.plots import find_trainer_state

from test_trainer import _trainer

pytest.importorskip("matplotlib")


def test_plot_renders_loss_eval_and_sampling_pngs(tiny_base, tmp_path, capsys):
    from matplotlib.image import imread

    run = tmp_path / "run"
    _trainer(tiny_base, run, sampling="sqrt", eval_strategy="steps", eval_steps=3).train()
    assert find_trainer_state(run) == run / "checkpoint-6" / "trainer_state.json"  # newest of checkpoint-3, -6

    capsys.readouterr()  # drop the training logs
    assert main(["plot", str(run)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["plots"]) == {"loss", "eval", "sampling"}
    for kind, path in result["plots"].items():
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", kind
        image = imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 300, kind
        assert image[..., :3].std() > 0.05, f"{kind}.png is blank"
    assert result["plots"]["loss"] == str(run / "plots" / "loss.png")


def test_plot_without_a_trainer_state_fails_cleanly(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no trainer_state.json" in capsys.readouterr().err
