"""Pieces the benchmarks share: a real batch of CS224N text, a robust step timer, memory readings (this
process's, or a fresh child process's)."""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

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


def rss_mib() -> float:
    """Resident memory of this process now (VmRSS, Linux), in MiB."""
    return _status_kib("VmRSS") / 1024


def available_mib() -> float:
    """Memory the machine can still give without swapping (MemAvailable, Linux), in MiB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable")


def in_child(module: str, function: str, **kwargs: Any) -> Any:
    """`module.function(**kwargs)` run in a fresh Python process, its JSON result returned: memory read
    there is that one measurement's, not what this process has already allocated (or keeps freed).
    `kwargs` must be JSON values; the child's last line of stdout is its result."""
    code = (
        "import json, sys, importlib; from hf_pals.allocator import keep_freed_memory; keep_freed_memory(); "
        f"fn = getattr(importlib.import_module({module!r}), {function!r}); "
        "print(json.dumps(fn(**json.loads(sys.argv[1]))))"
    )
    out = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{module}.{function} failed in a child process:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_list(text: str, flag: str, cast: Callable = str) -> list:
    """A comma-separated command-line list ("1,3,8,16"), each item through `cast`; a ValueError names
    the flag and the text when an item does not parse."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"{flag} needs a comma-separated list, got {text!r}")
    try:
        return [cast(item) for item in items]
    except ValueError:
        raise ValueError(f"{flag} takes a comma-separated list of {cast.__name__} values, got {text!r}") from None


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' load reports (a new head's weights are "MISSING") and progress bars off meanwhile:
    a benchmark loads many models, and its JSON is what matters."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def significant(value: float, digits: int = 5) -> float:
    """`value` rounded to `digits` significant digits (times of tiny and large models alike stay exact
    enough for ratios computed from the reported figures)."""
    return float(f"{value:.{digits}g}")


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
