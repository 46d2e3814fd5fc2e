"""Pieces the benchmarks share: a real batch of CS224N text and a robust step timer."""

from __future__ import annotations

import resource
import statistics
import time
from typing import Callable

import torch


def real_pairs(data_dir: str, task: str, rows: int) -> list[dict]:
    """The first `rows` training rows of a CS224N task, with their task name."""
    from ..data import load_cs224n

    dataset = load_cs224n(data_dir, "train", tasks=[task])[task]
    return [dict(dataset[i], task=task) for i in range(rows)]


def interleaved_medians(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved rounds so that slow phases of
    the machine hit every candidate alike."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_step_fn(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], lr: float = 1e-4) -> Callable[[], None]:
    """One AdamW step (forward, backward, update) over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    return step
