"""A run killed with SIGKILL after its first checkpoint resumes (`--resume`) to the weights of a run that
was never interrupted, bit for bit (CPU): the tiny recipe, in real subprocesses of `hf-pals train`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "tiny.yaml")  # 8 steps, a checkpoint every 4


def _train(out: Path, data_dir, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hf_pals.cli", "train", TINY, "--data-dir", str(data_dir), "--output-dir", str(out)]
    return subprocess.Popen(
        [*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _finish(proc: subprocess.Popen, timeout: float = 400) -> None:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    assert proc.returncode == 0, output[-3000:]


def _complete_state(path: Path) -> bool:
    """True once the trainer state, the last file of a checkpoint, is fully written."""
    try:
        return json.loads(path.read_text())["global_step"] > 0
    except (OSError, ValueError, KeyError):
        return False


def _weights(bundle: Path) -> dict[str, torch.Tensor]:
    weights = {}
    for path in sorted(bundle.glob("**/*.safetensors")):
        if "checkpoint-" not in str(path.relative_to(bundle)):
            weights.update({f"{path.relative_to(bundle)}:{k}": v for k, v in load_file(path).items()})
    return weights


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_weights(tmp_path, data_dir, minilm_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _finish(_train(straight, data_dir))

    proc = _train(killed, data_dir)
    state = killed / "checkpoint-4" / "trainer_state.json"
    deadline = time.monotonic() + 400
    while not _complete_state(state):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint-4 after 400 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "eval_results.json").exists() and not (killed / "checkpoint-8").exists()

    _finish(_train(killed, data_dir, "--resume"))
    expected, got = _weights(straight), _weights(killed)
    assert expected and set(got) == set(expected)
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    assert json.loads((killed / "checkpoint-8" / "trainer_state.json").read_text())["global_step"] == 8
