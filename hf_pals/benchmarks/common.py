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


def interleaved_times(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of each call of each function, measured in interleaved rounds (one call of each function
    per round), so that slow phases of the machine hit every candidate alike."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """The median of each candidate's times (from `interleaved_times`)."""
    return {name: statistics.median(values) for name, values in times.items()}


def interleaved_medians(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, from `interleaved_times`."""
    return medians(interleaved_times(steps, warmup, repeats))


def paired_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of numerator/denominator, each ratio from two calls timed side by side in one
    round: on a machine whose speed drifts (shared cores, page-fault bursts) this is steadier than the
    ratio of the two medians, whose calls may come from different slow or fast phases."""
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark of this process (Linux `clear_refs` 5) and return the current
    RSS in MiB, so that a later `peak_rss_mib()` measures only what follows (loading the model may have
    peaked higher than training does)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    """Peak resident memory of this process since the last `reset_peak_rss` (VmHWM, Linux)."""
    try:
        return _status_kib("VmHWM") / 1024
    except (OSError, RuntimeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_step_fn(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], lr: float = 1e-4) -> Callable[[], None]:
    """One AdamW step (forward, backward, update) over the model's trainable parameters, with the
    optimizer `transformers.Trainer` uses by default (`optim="adamw_torch_fused"`: one fused kernel over
    all parameters instead of a Python loop of per-tensor operations)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, fused=True)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    return step
