"""Task-count benchmark (issue 15): how a PAL model's cost grows with its number of tasks N, against N
separate fine-tuned models (what a user does without PALs: N copies of the encoder, one head each).

For each encoder shape and each N, a `MultiTaskModel` of the main recipe (PALs with 6 heads and shared
V_E/V_D, encoder trained, fast dropout, mean pooling) with N classification tasks of 2-5 labels:

- parameters: trainable and total, and each task's own (its PALs and head);
- the bundle on disk (`save_pretrained` with the tokenizer): bytes, and bytes added per task;
- memory (fresh child processes, `tasks_memory`): RSS of the loaded model after a mixed-task forward,
  and of three training steps; the same serving figure for the N separate models;
- a single-task training step (fused AdamW over all trainable parameters, one batch of real SST rows
  of task 0): it should not grow with N, since a step only runs its task's adapter;
- inference (`torch.inference_mode`, eval): one forward over a batch whose rows are spread over all N
  tasks, against one single-task forward over the same rows, and against the N separate models each
  running its own task's rows.

Timings are medians of interleaved rounds in one process (`common.interleaved_times`): the training
steps of all N side by side, then per N the three inference candidates side by side. Ratios are of the
reported medians; `paired` holds the medians of per-round ratios (steadier on a drifting machine).

    hf-pals bench tasks --data-dir ../shared/data/cs224n [--tasks 1,3,8,16] [--shapes minilm,bert-base]

Shapes (`tasks_models.SHAPES`): "minilm" is the base model's own weights (`--base-model`,
all-MiniLM-L6-v2); "bert-base" BERT-base's shape with random weights and MiniLM's tokenizer (as `bench
adapters --architecture bert-base`; a step's time does not depend on the weights' values); "tiny" a
2-layer, 48-wide encoder for tests.
"""

from __future__ import annotations

import gc
import math
import sys
from typing import Any, Sequence

import torch
from transformers import AutoTokenizer

from ..tuner import PALConfig
from .common import available_mib, interleaved_times, medians, paired_ratio, quiet_loading, significant, train_step_fn
from .tasks_models import (
    PAL_SETTINGS,
    SHAPES,
    build_model,
    bundle_bytes,
    inference_steps,
    make_batch,
    parameter_counts,
    plain_model_size,
    separate_models,
    shape_base,
    training_loss,
)

DEFAULT_TASKS = (1, 3, 8, 16)
DEFAULT_SHAPES = ("minilm", "bert-base")
#: Rough seconds of one training step on 2048 tokens on 2 cores, and of loading one copy, for the plan.
STEP_SECONDS = {"minilm": 0.55, "bert-base": 3.6, "tiny": 0.01}
LOAD_SECONDS = {"minilm": 0.3, "bert-base": 1.5, "tiny": 0.05}
SEPARATE_MODES = ("auto", "measured", "estimated")


def separate_mode(requested: str, n: int, plain_parameters: int) -> str:
    """"measured" (N distinct copies, in a child and in the timing) when asked, or under "auto" when N
    float32 copies (+10%) take under 60% of the memory available now (16 BERT-base copies, ~7.3 GiB, on a
    machine with 24 GiB); else "estimated" (one copy, N x its memory)."""
    if requested not in SEPARATE_MODES:
        raise ValueError(f"unknown separate-models mode {requested!r}; choose from {', '.join(SEPARATE_MODES)}")
    if requested != "auto":
        return requested
    needed_mib = n * plain_parameters * 4 * 1.1 / 2**20
    return "measured" if needed_mib < 0.6 * available_mib() else "estimated"


def plan(shapes: Sequence[str], tasks: Sequence[int], repeats: int, rows: int, max_length: int, memory: bool) -> str:
    """A line saying what will run and roughly how long it takes (from `STEP_SECONDS`)."""
    seconds = 0.0
    for shape in shapes:
        step = STEP_SECONDS.get(shape, 1.0) * rows * max_length / 2048
        load = LOAD_SECONDS.get(shape, 1.0)
        seconds += len(tasks) * (repeats + 1) * step + 4 * load  # training steps, models built
        seconds += sum((repeats + 1) * 1.1 * step + n * load for n in tasks)  # inference rounds, separate copies
        if memory:
            seconds += sum(2 * 5 + 4 * step + (n + 2) * load for n in tasks)  # two children per N
    return (
        f"bench tasks: shapes {','.join(shapes)}, N = {','.join(map(str, tasks))}, {rows} rows x {max_length} tokens, "
        f"{repeats} rounds, memory {'on' if memory else 'off'}: about {math.ceil(seconds / 60)} min"
    )


def run(
    data_dir: str,
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2",
    tasks: Sequence[int] = DEFAULT_TASKS,
    shapes: Sequence[str] = DEFAULT_SHAPES,
    batch_size: int = 32,
    max_length: int = 64,
    repeats: int = 5,
    separate: str = "auto",
    memory: bool = True,
) -> dict[str, Any]:
    """The figures of the module docstring, per shape and per N (`tasks`, sorted)."""
    tasks = sorted(set(int(n) for n in tasks))
    if not tasks or tasks[0] < 1:
        raise ValueError(f"--tasks takes task counts >= 1, got {tasks}")
    for shape in shapes:
        if shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    separate_mode(separate, 1, 0)  # refuses an unknown mode before anything runs
    print(plan(shapes, tasks, repeats, batch_size, max_length, memory), file=sys.stderr, flush=True)
    result = {
        "batch": {"task": "sst", "split": "train", "rows": batch_size, "max_length": max_length,
                  "threads": torch.get_num_threads()},
        "pal_config": dict(PAL_SETTINGS, encoder_trained=True, fast_dropout=True, pooling="mean"),
        "repeats": repeats,
        "shapes": {},
    }
    for shape in shapes:
        with quiet_loading(), shape_base(shape, base_model) as (base, label):
            figures = run_shape(data_dir, base, tasks, batch_size, max_length, repeats, separate, memory)
            result["shapes"][shape] = {"base_model": label, **figures}
    return result


def run_shape(data_dir, base, tasks, batch_size, max_length, repeats, separate, memory) -> dict[str, Any]:
    """The figures of one encoder (directory `base`)."""
    from . import tasks_memory

    tokenizer = AutoTokenizer.from_pretrained(base)
    batch, labels = make_batch(base, data_dir, batch_size, max_length)
    plain_bytes, plain_parameters = plain_model_size(base)
    modes = {n: separate_mode(separate, n, plain_parameters) for n in tasks}
    by_n: dict[int, dict[str, Any]] = {n: {} for n in tasks}
    if memory:  # first, while this process is small: each child has the machine's memory to itself
        for n in tasks:
            by_n[n]["memory_mib"] = tasks_memory.measure(base, data_dir, n, batch_size, max_length, modes[n])
    models = {n: build_model(base, n) for n in tasks}
    for n, model in models.items():
        by_n[n]["tasks"] = {name: spec.num_labels for name, spec in model.tasks.items()}
        by_n[n]["parameters"] = parameter_counts(model)
        by_n[n]["bundle"] = bundle_bytes(model, tokenizer)

    steps = {n: train_step_fn(model.train(), training_loss(model, batch, labels)) for n, model in models.items()}
    rounds = interleaved_times(steps, warmup=1, repeats=repeats)
    del steps
    step_times = medians(rounds)
    first = tasks[0]
    for n in tasks:
        by_n[n]["train_step_seconds"] = significant(step_times[n])
        by_n[n]["train_step_over_fewest_tasks"] = significant(step_times[n] / step_times[first])
        by_n[n]["train_step_over_fewest_tasks_paired"] = significant(paired_ratio(rounds, n, first))
    for n, model in models.items():
        model.zero_grad(set_to_none=True)
        by_n[n]["inference"] = inference_figures(model.eval(), base, batch, n, modes[n], repeats)
        by_n[n]["separate_models"] = separate_figures(by_n[n], n, modes[n], plain_bytes)
        gc.collect()
    hidden, layers = models[first].bert.config.hidden_size, models[first].bert.config.num_hidden_layers
    return {
        "hidden_size": hidden,
        "num_layers": layers,
        "pal_parameters_per_task": PALConfig(**PAL_SETTINGS).parameter_count(hidden, layers),
        "plain_model_bytes": plain_bytes,
        "plain_model_parameters": plain_parameters,
        "by_tasks": {str(n): by_n[n] for n in tasks},
        "growth": growth(by_n, tasks),
    }


def inference_figures(model, base, batch, n, mode, repeats) -> dict[str, Any]:
    """Interleaved median seconds of the mixed, single-task and separate-model forwards, and ratios."""
    plain = separate_models(base, n, mode)
    rounds = interleaved_times(inference_steps(model, plain, batch), warmup=1, repeats=repeats)
    del plain
    times = medians(rounds)
    rows = batch["input_ids"].shape[0]
    return {
        "rows": rows,
        "rows_per_task": [len(range(i, rows, n)) for i in range(n)],
        "seconds": {k: significant(v) for k, v in times.items()},
        "rows_per_s": {k: significant(rows / v) for k, v in times.items()},
        "mixed_over_single_task_time": significant(times["mixed"] / times["single_task"]),
        "separate_models_over_mixed_time": significant(times["separate_models"] / times["mixed"]),
        "paired": {
            "mixed_over_single_task_time": significant(paired_ratio(rounds, "mixed", "single_task")),
            "separate_models_over_mixed_time": significant(paired_ratio(rounds, "separate_models", "mixed")),
        },
    }


def separate_figures(entry: dict, n: int, mode: str, plain_bytes: int) -> dict[str, Any]:
    """The N separate models against the PAL model: disk, memory (if measured) and throughput."""
    out: dict[str, Any] = {
        "method": "measured: N distinct copies" if mode == "measured" else "estimated: N x one measured copy",
        "disk_bytes": n * plain_bytes,
        "disk_over_pal_bundle": round(n * plain_bytes / entry["bundle"]["bytes"], 3),
        # The PAL model's throughput gain: the separate models' time over the one mixed forward's.
        "pal_throughput_gain": entry["inference"]["separate_models_over_mixed_time"],
    }
    memory = entry.get("memory_mib")
    if memory is not None:
        out["serving_mib"] = memory["separate_models_serving"]
        out["pal_memory_saving"] = round(memory["separate_models_serving"] / memory["pal_serving"], 3)
    return out


def growth(by_n: dict[int, dict], tasks: list[int]) -> dict[str, Any]:
    """What each task beyond the fewest adds (from the fewest to the most tasks measured)."""
    first, last = tasks[0], tasks[-1]
    if first == last:
        return {"note": "one task count measured: nothing to compare"}
    added = last - first

    def per_task(key):
        return round((key(by_n[last]) - key(by_n[first])) / added, 1)

    out = {
        "from_tasks": first,
        "to_tasks": last,
        "trainable_parameters_per_added_task": per_task(lambda e: e["parameters"]["trainable"]),
        "bundle_bytes_per_added_task": per_task(lambda e: e["bundle"]["bytes"]),
        "train_step_most_over_fewest_tasks": by_n[last]["train_step_over_fewest_tasks"],
        "mixed_over_single_task_time_at_most_tasks": by_n[last]["inference"]["mixed_over_single_task_time"],
    }
    if "memory_mib" in by_n[first]:
        out["pal_serving_mib_per_added_task"] = per_task(lambda e: e["memory_mib"]["pal_serving"])
        out["pal_training_mib_per_added_task"] = per_task(lambda e: e["memory_mib"]["pal_training"])
    return out
