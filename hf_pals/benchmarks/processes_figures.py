"""The figures of `hf-pals bench processes` (`processes.py`): examples/s and ratios of every candidate,
the all-reduce's seconds and bytes/s, the checks, and `reading`, what they say, computed from the
workers' raw medians."""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict
from typing import Any

from .common import significant
from .processes_steps import (
    ALL_REDUCE_BUCKETS_MB, BASELINE, COMPUTE, DDP_CONFIGS, INDEPENDENT, TASK, TASKS, WARMUP, WORLD_SIZE,
    bucket_elements,
)
from .tasks_models import PAL_SETTINGS

#: Environment variables that change how threads run (reported with the figures).
THREAD_ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


# -------------------------------------------------------------------------------------- figures
def figures(ranks: list[dict], label: str, shape: str, batch_size: int, max_length: int, steps: int) -> dict[str, Any]:
    """The JSON of the module docstring, from the workers' raw medians."""
    elements = ranks[0]["trainable_parameters"]
    compute = compute_figures(ranks, batch_size)
    communication = communication_figures(ranks, elements)
    ddp = ddp_figures(ranks, batch_size, compute)
    result = {
        "base_model": label,
        "shape": shape,
        "batch": {"task": "sst", "split": "train", "rows_per_process": batch_size, "max_length": max_length},
        "model": {"tasks": TASKS, "trained_task": TASK, "pal_config": dict(PAL_SETTINGS), "fast_dropout": True,
                  "trainable_parameters": elements},
        "optimizer": ranks[0]["optimizer"],
        "processes": WORLD_SIZE,
        "rounds": {"warmup": WARMUP, "timed": steps},
        "compute_scaling": compute,
        "communication": communication,
        "ddp": ddp,
        "checks": check_figures(ranks),
        "environment": {"cpu_count": os.cpu_count(), **{name: os.environ.get(name) for name in THREAD_ENVIRONMENT}},
    }
    result["reading"] = reading(result)
    return result


def rank_medians(ranks: list[dict], name: str) -> list[float]:
    return [r["medians"][name] for r in ranks]


def compute_figures(ranks: list[dict], batch_size: int) -> dict[str, Any]:
    """Examples/s of the candidates without communication, and the ratios to one process with 2 threads."""
    out: dict[str, Any] = {}
    for name, (training, threads, micro) in COMPUTE.items():
        seconds = [ranks[r]["medians"][name] for r in training]
        out[name] = {
            "processes": len(training),
            "threads_per_process": threads,
            "micro_batches_per_step": micro,
            "step_seconds": [significant(s) for s in seconds],
            "examples_per_s": significant(sum(micro * batch_size / s for s in seconds)),
        }
    rate = {name: sum(micro * batch_size / ranks[r]["medians"][name] for r in training)
            for name, (training, _, micro) in COMPUTE.items()}
    out["ratios"] = {
        "one_thread_over_two_threads": significant(rate["one_process_1_thread"] / rate[BASELINE]),
        # The upper bound of any 2-process DDP run: (c)/(a).
        "two_independent_over_one_process_2_threads": significant(rate[INDEPENDENT] / rate[BASELINE]),
        "two_independent_over_one_process_1_thread": significant(rate[INDEPENDENT] / rate["one_process_1_thread"]),
    }
    return out


def communication_figures(ranks: list[dict], elements: int) -> dict[str, Any]:
    """Seconds of each all-reduce candidate (the slower rank's median) and bytes reduced per second."""
    nbytes = 4 * elements
    out: dict[str, Any] = {"elements": elements, "dtype": "float32", "bytes": nbytes, "all_reduce": {}}
    sizes = {"flat": None, **{f"buckets_{mb}mb": mb for mb in ALL_REDUCE_BUCKETS_MB}}
    for name, mb in sizes.items():
        seconds = max(rank_medians(ranks, name))
        out["all_reduce"][name] = {
            "bucket_mb": mb,
            "buckets": 1 if mb is None else math.ceil(elements / bucket_elements(mb)),
            "seconds": significant(seconds),
            "seconds_per_rank": [significant(s) for s in rank_medians(ranks, name)],
            "bytes_per_s": significant(nbytes / seconds),
        }
    return out


def ddp_figures(ranks: list[dict], batch_size: int, compute: dict) -> dict[str, Any]:
    """Examples/s of each DDP configuration, and its ratios to the candidates without communication."""
    out = {}
    baseline = compute[BASELINE]["examples_per_s"]
    same_accumulation = {micro: compute[name]["examples_per_s"] for name, (training, threads, micro) in COMPUTE.items()
                         if training == (0,) and threads == 2}
    for name, config in DDP_CONFIGS.items():
        seconds = rank_medians(ranks, name)
        rate = sum(config.accumulation_steps * batch_size / s for s in seconds)
        out[name] = {
            **asdict(config),
            "bucket_sizes_bytes": ranks[0]["bucket_sizes_bytes"][name],
            "step_seconds": [significant(s) for s in seconds],
            "examples_per_step": WORLD_SIZE * config.accumulation_steps * batch_size,
            "examples_per_s": significant(rate),
            "over_one_process_2_threads": significant(rate / baseline),
            "over_one_process_same_accumulation": significant(rate / same_accumulation[config.accumulation_steps]),
            "over_two_independent_processes": significant(rate / compute[INDEPENDENT]["examples_per_s"]),
        }
    return out


def check_figures(ranks: list[dict]) -> dict[str, Any]:
    ones = [r["checks"]["all_reduce_of_ones"] for r in ranks]
    return {
        "world_size": WORLD_SIZE,
        "all_reduce_of_ones": {"min": min(o["min"] for o in ones), "max": max(o["max"] for o in ones)},
        "all_reduce_sums": all(o["min"] == o["max"] == WORLD_SIZE for o in ones),
        "ddp_gradients_vs_single_process": ranks[0]["checks"]["ddp_gradients"],
        "waiting_rank_cpu_share": None if ranks[1]["waiting_cpu_share"] is None else significant(ranks[1]["waiting_cpu_share"], 3),
    }


def reading(result: dict) -> dict[str, Any]:
    """What the figures say, computed from them (module docstring)."""
    compute, ddp = result["compute_scaling"], result["ddp"]
    bound = compute["ratios"]["two_independent_over_one_process_2_threads"]
    default = ddp["bucket_25mb"]
    all_reduce = result["communication"]["all_reduce"]["buckets_25mb"]["seconds"]
    ddp_step = statistics.mean(default["step_seconds"])
    independent_step = statistics.mean(compute[INDEPENDENT]["step_seconds"])
    hidden = 1 - (ddp_step - independent_step) / all_reduce
    best = max(ddp, key=lambda name: ddp[name]["over_one_process_2_threads"])
    best_ratio = ddp[best]["over_one_process_2_threads"]
    extra = ddp_step - independent_step
    if hidden >= 0:
        hiding = f"the DDP step hides {hidden:.0%} of it behind the backward"
    else:
        hiding = f"the DDP step takes {extra:.3g} s more than an independent step, more than the all-reduce itself"
    if bound < 1:
        verdict = (f"two independent processes without any communication reach {bound:.2f}x one process with 2 "
                   "threads, so no 2-process configuration can beat one process on this machine")
    else:
        verdict = (f"two independent processes without any communication reach {bound:.2f}x one process with 2 "
                   f"threads: what DDP loses below that is communication")
    summary = (
        f"{verdict}; the all-reduce of the {result['communication']['elements'] / 1e6:.1f}M gradients in 25 MB buckets "
        f"takes {all_reduce:.3g} s, {all_reduce / ddp_step:.0%} of a default DDP step ({ddp_step:.3g} s); {hiding}; "
        f"the best DDP configuration, {best}, reaches {best_ratio:.2f}x one process "
        f"({ddp[best]['over_one_process_same_accumulation']:.2f}x one process with the same accumulation)"
    )
    return {
        "upper_bound_of_two_processes": bound,
        "no_two_process_configuration_can_beat_one_process": bound < 1,
        "all_reduce_share_of_ddp_step": significant(all_reduce / ddp_step),
        "all_reduce_hidden_share": significant(hidden),
        "best_ddp_configuration": best,
        "best_ddp_over_one_process_2_threads": best_ratio,
        "two_processes_at_least_one_process": best_ratio >= 1,
        "summary": summary,
    }
