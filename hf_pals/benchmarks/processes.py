"""Process benchmark (issue 15, item 4): why 2 CPU processes (DDP over gloo, 1 thread each) train
slower than 1 process with 2 threads, and which 2-process configuration comes closest.

The model is the main recipe's (`tasks_models.build_model`: PALs with 6 heads and shared V_E/V_D on
all-MiniLM-L6-v2, encoder trained, fast dropout, 3 classification tasks); every step trains task 0 on
one real batch of SST train rows (`--batch-size` rows per process, padded to `--max-length`): forward,
backward and a `torch.optim.AdamW(fused=True)` step over all trainable parameters. As in the Trainer
(`MultiTaskTrainer` sets `ddp_find_unused_parameters`), DDP runs with `find_unused_parameters=True`,
since the other tasks' adapters and heads take no part in the step, and every bucket still carries all
of the model's trainable gradients.

Everything runs in one pair of fresh processes (rank 0 and 1 of a gloo process group on localhost),
in interleaved rounds (`lockstep_times`: one call of every candidate per round, both ranks starting
each call together after a barrier), so that slow phases of the machine hit every candidate alike:

- `compute_scaling`, no communication at all: (a) `one_process_2_threads`: rank 0 trains with 2 torch
  threads while rank 1 waits blocked in a barrier (`checks.waiting_rank_cpu_share` says how idle it
  was); (b) `one_process_1_thread`, the same with 1 thread; (c) `two_independent_processes`: both ranks
  train their own model with 1 thread each at the same time, examples/s summed over the ranks. (c)/(a)
  (`two_independent_over_one_process_2_threads`) is the upper bound of any 2-process DDP run on this
  machine: DDP adds communication to (c), never removes work. Below 1, no 2-process configuration can
  beat one process: two processes share the cores (and the memory bandwidth) worse than two threads do.
  `one_process_2_threads_accumulate_4` is (a) with 4 micro-batches per optimizer step, the fair
  baseline of the DDP accumulation run (which also takes one optimizer step per 4 micro-batches).
- `communication`: a gloo `all_reduce` of as many float32 values as the model has trainable gradients
  (what DDP reduces per optimizer step), between the 2 ranks (1 thread each, nothing else running): as
  one flat tensor, and split into DDP-sized buckets (25 MB, DDP's default `bucket_cap_mb`, and 100 MB),
  launched asynchronously and waited for as DDP's reducer does; seconds (the slower rank's median) and
  the bytes reduced per second.
- `ddp`: `DistributedDataParallel` steps, per configuration: DDP's default buckets (`bucket_cap_mb` not
  given: 25 MB, after a 1 MiB first bucket), bucket_cap_mb=200 (an explicit cap also caps the first
  bucket: one bucket for MiniLM's ~94 MB), `gradient_as_bucket_view=True`, 2 torch threads per process
  (4 threads on 2 cores), and gradient accumulation of 4 micro-batches with `ddp.no_sync()` on all but
  the last (as Accelerate and the Trainer accumulate; the loss divided by 4). examples/s is the sum over the
  ranks of (micro-batches x rows) / median step seconds; `over_one_process_2_threads` is its ratio to (a),
  `over_one_process_same_accumulation` to (a) with the same accumulation, `over_two_independent_processes`
  to (c); `bucket_sizes_bytes` are the buckets DDP built (after its rebuild in the first steps).
- `checks`: the reduced value of an all_reduce of ones over the gradient-sized tensor (must equal the
  world size), and the largest difference between the gradients of one DDP step (each rank on its half
  of the rows, eval mode: no dropout) and those of one single-process step on all the rows.
- `reading`: what the figures say, computed from them: the upper bound (c)/(a), the all-reduce as a
  share of the DDP step, how much of it the step hid behind the backward (`all_reduce_hidden_share`:
  1 - (DDP step - independent step) / all-reduce seconds; on 2 busy cores there is no idle core to
  overlap it with), and the best DDP configuration.

    hf-pals bench processes --data-dir ../shared/data/cs224n [--batch-size 16] [--max-length 64] [--steps 10]

Each worker holds 7 copies of the model (DDP's with gradients, buckets and AdamW state): about 3 GB per
worker at MiniLM.

The ranks' candidates and checks are in `processes_steps.py`, the figures and their reading in
`processes_figures.py`.

`--shapes tiny` (one shape of `tasks_models.SHAPES`) runs a 2-layer, 48-wide random encoder, for tests;
`--shapes bert-base` BERT-base's shape with random weights.

The timings mean something only on an otherwise idle machine. With more busy threads than cores
(another job running, or `bucket_25mb_2_threads_each`), OpenMP's spin-waiting at the end of each
parallel region can make every 2-thread step many times slower (a descheduled thread holds all the
others up); `OMP_WAIT_POLICY=passive` in the environment (passed on to the workers, and reported in
`environment`) makes the waiting threads sleep instead, at some cost on an idle machine.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any, Optional

import torch

from .common import medians, quiet_loading
from .processes_figures import figures
from .processes_steps import (
    CHECKED_CONFIGS, COMPUTE, DDP_CONFIGS, TASK, TASKS, WARMUP, WORLD_SIZE, all_reduce_names, all_reduce_of_ones,
    bucket_sizes, candidates, ddp_gradient_check, lockstep_times, optimizer_name,
)
from .tasks_models import SHAPES, build_model, make_batch, shape_base

#: A peer that died leaves the other waiting in a collective: give up after this.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
#: Rough figures for the plan: seconds of one 1-thread training step on 1024 tokens on 2 cores, of a
#: process's start (imports, model building) and of a gloo all-reduce per MB, and trainable parameters.
STEP_SECONDS = {"minilm": 0.5, "bert-base": 3.3, "tiny": 0.005}
START_SECONDS = {"minilm": 30, "bert-base": 80, "tiny": 15}
PARAMETERS = {"minilm": 23.5e6, "bert-base": 115e6, "tiny": 1.5e6}
ALL_REDUCE_SECONDS_PER_MB = 0.0011



# ------------------------------------------------------------------------------------------ plan
def plan(shape: str, batch_size: int, max_length: int, steps: int) -> str:
    """A line saying what will run and roughly how long it takes (from `STEP_SECONDS` and friends)."""
    step = STEP_SECONDS.get(shape, 1.0) * batch_size * max_length / 1024
    all_reduce = ALL_REDUCE_SECONDS_PER_MB * PARAMETERS.get(shape, 1e8) * 4 / 2**20
    round_seconds = sum(  # 2 threads on one process: ~0.55 of a 1-thread step
        (0.55 if threads == 2 else 1.0) * micro * step for _, threads, micro in COMPUTE.values()
    )
    round_seconds += sum(c.accumulation_steps * step + all_reduce for c in DDP_CONFIGS.values())
    round_seconds += len(all_reduce_names()) * all_reduce
    checks = 4 * step + len(CHECKED_CONFIGS) * all_reduce
    seconds = START_SECONDS.get(shape, 60) + checks + (WARMUP + steps) * round_seconds
    return (
        f"bench processes: shape {shape}, {WORLD_SIZE} processes, {batch_size} rows x {max_length} tokens per "
        f"process, {WARMUP} + {steps} rounds of {len(COMPUTE)} compute, {len(all_reduce_names())} all-reduce and "
        f"{len(DDP_CONFIGS)} DDP candidates: about {math.ceil(seconds / 60)} min"
    )


# --------------------------------------------------------------------------------------- parent
def run(
    data_dir: str,
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2",
    shape: str = "minilm",
    batch_size: int = 16,
    max_length: int = 64,
    steps: int = 10,
) -> dict[str, Any]:
    """The figures of the module docstring, from one pair of worker processes."""
    check_arguments(shape, batch_size, max_length, steps)
    print(plan(shape, batch_size, max_length, steps), file=sys.stderr, flush=True)
    with quiet_loading(), shape_base(shape, base_model) as (base, label):
        make_batch(base, data_dir, WORLD_SIZE * batch_size, max_length)  # a bad --data-dir fails here, not in a worker
        init_method = f"tcp://127.0.0.1:{free_port()}"
        common = dict(base=base, data_dir=data_dir, batch_size=batch_size, max_length=max_length, steps=steps,
                      init_method=init_method)
        ranks = run_workers([dict(common, rank=rank) for rank in range(WORLD_SIZE)])
    return figures(ranks, label, shape, batch_size, max_length, steps)


def check_arguments(shape: str, batch_size: int, max_length: int, steps: int) -> None:
    """A ValueError naming the flag for a value the benchmark cannot run with."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    for flag, value, least in (("--batch-size", batch_size, 1), ("--max-length", max_length, 8), ("--steps", steps, 1)):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"bench processes: {flag} must be an integer >= {least}, got {value!r}")


def free_port() -> int:
    """A TCP port of localhost no one listens on now (rank 0's rendezvous store binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_env() -> dict[str, str]:
    """The workers' environment: gloo on the loopback interface (Linux's "lo") unless told otherwise,
    so that a machine whose host name does not resolve still runs; torch threads are set by the worker."""
    env = dict(os.environ)
    loopback = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    if "GLOO_SOCKET_IFNAME" not in env and loopback:
        env["GLOO_SOCKET_IFNAME"] = loopback[0]
    return env


def run_workers(kwargs: list[dict]) -> list[dict]:
    """`worker(**k)` for each `k`, each in a fresh Python process, all at once; their JSON results (each
    child's last line of stdout) in order. When one fails, the others (left waiting in a collective)
    are stopped and its stderr raised."""
    code = (
        "import json, sys; from hf_pals.benchmarks.processes import worker; "
        "print(json.dumps(worker(**json.loads(sys.argv[1]))))"
    )
    with tempfile.TemporaryDirectory(prefix="hf_pals_processes_") as directory, contextlib.ExitStack() as files:
        children = []
        for k in kwargs:
            out = files.enter_context(open(os.path.join(directory, f"rank{k['rank']}.out"), "w+"))
            err = files.enter_context(open(os.path.join(directory, f"rank{k['rank']}.err"), "w+"))
            process = subprocess.Popen([sys.executable, "-c", code, json.dumps(k)], stdout=out, stderr=err, env=worker_env())
            children.append((process, out, err))
        try:
            failed = wait_all([process for process, _, _ in children])
        finally:
            for process, _, _ in children:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        for rank, (process, out, err) in enumerate(children):
            if rank == failed:
                err.seek(0)
                raise RuntimeError(f"bench processes: the worker of rank {rank} failed:\n{err.read()[-3000:]}")
        results = []
        for _, out, _ in children:
            out.seek(0)
            results.append(json.loads(out.read().strip().splitlines()[-1]))
        return results


def wait_all(processes: list[subprocess.Popen]) -> Optional[int]:
    """Wait until every process has ended, or one has failed: then its index (else None)."""
    while True:
        codes = [p.poll() for p in processes]
        for index, code in enumerate(codes):
            if code not in (None, 0):
                return index
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.1)


# --------------------------------------------------------------------------------------- worker
def worker(base: str, data_dir: str, batch_size: int, max_length: int, steps: int, init_method: str, rank: int) -> dict:
    """One rank's part: joins the gloo group, checks the all-reduce and DDP's gradients, then times
    every candidate in `lockstep_times` rounds; returns its median times, DDP's buckets and the checks."""
    import torch.distributed as dist

    from ..allocator import keep_freed_memory

    keep_freed_memory()  # as `hf-pals` does in its own process
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    quiet_loading().__enter__()  # this process's only job
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD_SIZE, timeout=COLLECTIVE_TIMEOUT)
    try:
        pristine = build_model(base, TASKS, max_length=max_length)
        batch, labels = make_batch(base, data_dir, WORLD_SIZE * batch_size, max_length)
        target = labels % pristine.tasks[TASK].num_labels
        rows = slice(rank * batch_size, (rank + 1) * batch_size)
        mine = ({k: v[rows] for k, v in batch.items()}, target[rows])
        elements = sum(p.numel() for p in pristine.parameters() if p.requires_grad)
        checks = {"all_reduce_of_ones": all_reduce_of_ones(elements)}
        checks["ddp_gradients"] = ddp_gradient_check(pristine, (batch, target), mine, rank)
        steps_by_name, waiting, buckets = candidates(pristine, mine, elements, rank)
        times = lockstep_times(steps_by_name, WARMUP, steps)
        return {
            "rank": rank,
            "trainable_parameters": elements,
            "medians": medians(times),
            "waiting_cpu_share": waiting.share(),
            "bucket_sizes_bytes": {name: bucket_sizes(ddp) for name, ddp in buckets.items()},
            "checks": checks,
            "optimizer": optimizer_name(),
        }
    finally:
        dist.destroy_process_group()
