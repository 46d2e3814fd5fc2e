"""`accelerate launch` with two real CPU processes (DDP over gloo) on the tiny recipe.

Every process logs the task and a digest of each batch it trained on, then a digest of its final
weights (`HF_PALS_TASK_LOG`): the ranks must draw the same task at every step, train on different
examples, and end with the same weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
CONFIGS = REPO / "recipes" / "accelerate"


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_accelerate_configs_load(config):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(CONFIGS / config))
    assert loaded.num_processes == yaml.safe_load((CONFIGS / config).read_text())["num_processes"]


def _run(cmd, env, timeout):
    """Runs `cmd` in its own process group and kills the whole group (launcher and workers) on timeout."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"accelerate launch hung for {timeout} s:\n{output[-3000:]}")
    return proc.returncode, output


@pytest.mark.slow
def test_two_processes_draw_the_same_task_and_end_with_the_same_weights(tmp_path, data_dir, minilm_path):
    out = tmp_path / "run"
    overrides = {
        "training.max_steps": 3,
        "training.gradient_accumulation_steps": 2,  # micro-batches under DDP no_sync, with unused adapters
        "training.per_device_train_batch_size": 4,
        "training.save_steps": 3,
        "training.logging_steps": 1,
        "sampling.steps_per_epoch": 1,
        "data.max_eval_examples": "{sst: 8, quora: 8, sts: 8}",
    }
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch"]
    cmd += ["--config_file", str(CONFIGS / "cpu_2proc.yaml"), "--main_process_port", "0"]
    cmd += ["-m", "hf_pals.cli", "train", str(TINY), "--data-dir", str(data_dir), "--output-dir", str(out)]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "HF_PALS_TASK_LOG": "1", "OMP_NUM_THREADS": "1"}
    code, output = _run(cmd, env, timeout=540)
    assert code == 0, output[-3000:]

    logs = [[json.loads(line) for line in (out / f"task_log.rank{k}.jsonl").read_text().splitlines()] for k in (0, 1)]
    batches = [[r for r in log if "task" in r] for log in logs]
    assert [len(b) for b in batches] == [6, 6]  # 3 steps x 2 micro-batches on each rank
    for first, second in zip(*batches):
        assert (first["step"], first["task"]) == (second["step"], second["task"])
        assert first["batch"] != second["batch"]  # each rank trains on its own examples
    assert {r["task"] for r in batches[0]} <= {"sst", "quora", "sts"}
    final = [log[-1] for log in logs]
    assert final[0]["step"] == final[1]["step"] == 3
    assert final[0]["weights"] == final[1]["weights"]
    assert (out / "checkpoint-3" / "trainer_state.json").exists()
    assert json.loads((out / "eval_results.json").read_text())["overall"] > 0
