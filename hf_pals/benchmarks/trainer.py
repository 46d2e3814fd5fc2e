"""Trainer benchmark (issue 4): how much of a training step is spent outside forward, backward and the
optimizer step with its gradient clipping (that is: task sampling, collation and tokenisation, batch
routing, logging), and the throughput of a 2-process CPU run (Accelerate, DDP over gloo) relative to
one process.

    hf-pals bench trainer --data-dir ../shared/data/cs224n [--steps 40]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

REPO_RECIPES = Path(__file__).resolve().parents[2] / "recipes"


class StepClock(TrainerCallback):
    """Wall time of whole step cycles (from the end of one step to the end of the next: data loading
    included) and of their optimizer part: from the end of the step's last forward+backward
    (`compute_ended`, set by the timed `training_step`) to the end of the optimizer step, so gradient
    clipping (`max_grad_norm`, ~6 ms of a MiniLM step: a norm over 23.5M gradients and their scaling),
    which the Trainer does before `on_pre_optimizer_step`, counts as the optimizer's, not as overhead."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.cycle = []
        self.optimizer = []
        self.compute_ended = None
        self._last_end = None

    def on_optimizer_step(self, args, state, control, **kwargs):
        if state.global_step >= self.warmup and self.compute_ended is not None:
            self.optimizer.append(time.perf_counter() - self.compute_ended)

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._last_end is not None and state.global_step > self.warmup:
            self.cycle.append(now - self._last_end)
        self._last_end = now


def overhead_share(data_dir: str, steps: int = 40, warmup: int = 5) -> dict[str, Any]:
    """Run the main recipe's setup for `steps` steps and split the step time."""
    from ..recipe import load_recipe
    from ..run import train

    from ..training import trainer as trainer_module

    compute: list[float] = []
    original = trainer_module.MultiTaskTrainer.training_step

    def timed_training_step(self, *args, **kwargs):
        start = time.perf_counter()
        result = original(self, *args, **kwargs)
        clock.compute_ended = time.perf_counter()
        if self.state.global_step >= warmup:
            compute.append(clock.compute_ended - start)
        return result

    clock = StepClock(warmup)
    with tempfile.TemporaryDirectory() as out:
        recipe = load_recipe(
            str(REPO_RECIPES / "cs224n_pals.yaml"),
            [
                f"data.dir={json.dumps(data_dir)}",
                f"output_dir={json.dumps(out)}",
                f"training.max_steps={steps}",
                'training.save_strategy="no"',
                "training.logging_steps=10",
                "data.max_eval_examples={sst: 8, quora: 8, sts: 8}",
            ],
        )
        trainer_module.MultiTaskTrainer.training_step = timed_training_step
        try:
            train(recipe, callbacks=[clock])
        finally:
            trainer_module.MultiTaskTrainer.training_step = original
    cycles = clock.cycle
    measured = len(cycles)
    fwd_bwd = sum(compute[-measured:])
    opt = sum(clock.optimizer[-measured:])
    total = sum(cycles)
    return {
        "steps_measured": measured,
        "seconds_per_step": round(total / measured, 4),
        "forward_backward_share": round(fwd_bwd / total, 4),
        "optimizer_share": round(opt / total, 4),
        "outside_share": round(1 - (fwd_bwd + opt) / total, 4),
        "target_outside_share": "<= 0.03",
    }


def two_process_throughput(data_dir: str, steps: int = 20) -> dict[str, Any]:
    """Examples per second of the tiny recipe's model on real data: 1 process (2 threads) against
    2 processes (1 thread each, DDP over gloo), same per-process batch."""
    results = {}
    overrides = [
        "--set", f"training.max_steps={steps}", "--set", 'training.save_strategy="no"',
        "--set", "training.per_device_train_batch_size=16",
        "--set", "data.max_train_examples={sst: 2000, quora: 2000, sts: 2000}",
        "--set", "data.max_eval_examples={sst: 8, quora: 8, sts: 8}",
    ]
    for processes in (1, 2):
        with tempfile.TemporaryDirectory() as out:
            env = dict(os.environ, OMP_NUM_THREADS=str(2 // processes))
            if processes == 1:
                cmd = [sys.executable, "-m", "hf_pals.cli"]
            else:
                cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--config_file",
                       str(REPO_RECIPES / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", "0",
                       "-m", "hf_pals.cli"]
            cmd += ["train", str(REPO_RECIPES / "tiny.yaml"), "--data-dir", data_dir, "--output-dir", out]
            subprocess.run(cmd + overrides, env=env, check=True, capture_output=True, text=True)
            report = json.loads((Path(out) / "eval_results.json").read_text())
            examples = steps * 16 * processes
            results[processes] = examples / report["timing"]["train_seconds"]
    return {
        "examples_per_s_1_process": round(results[1], 1),
        "examples_per_s_2_processes": round(results[2], 1),
        "two_over_one_process": round(results[2] / results[1], 3),
    }


def run(data_dir: str, steps: int = 40) -> dict[str, Any]:
    return {"step_time_split": overhead_share(data_dir, steps), "distributed_cpu": two_process_throughput(data_dir)}
