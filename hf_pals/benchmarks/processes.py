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
import copy
import functools
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Callable, Optional

import torch

from .common import medians, quiet_loading, significant
from .tasks_models import PAL_SETTINGS, SHAPES, build_model, make_batch, shape_base

WORLD_SIZE = 2
#: Environment variables that change how threads run (reported with the figures).
THREAD_ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
#: The main recipe's task count; the timed steps train the first task's adapter and head.
TASKS = 3
TASK = "task00"
WARMUP = 2
#: Micro-batches per optimizer step of the accumulation runs (1 is the plain DDP step).
ACCUMULATION = 4
#: The all-reduce bucket sizes timed besides one flat tensor (25 MB: DDP's default `bucket_cap_mb`).
ALL_REDUCE_BUCKETS_MB = (25, 100)
#: A peer that died leaves the other waiting in a collective: give up after this.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
#: Rough figures for the plan: seconds of one 1-thread training step on 1024 tokens on 2 cores, of a
#: process's start (imports, model building) and of a gloo all-reduce per MB, and trainable parameters.
STEP_SECONDS = {"minilm": 0.5, "bert-base": 3.3, "tiny": 0.005}
START_SECONDS = {"minilm": 30, "bert-base": 80, "tiny": 15}
PARAMETERS = {"minilm": 23.5e6, "bert-base": 115e6, "tiny": 1.5e6}
ALL_REDUCE_SECONDS_PER_MB = 0.0011


@dataclass(frozen=True)
class DDPConfig:
    """One DDP configuration: `DistributedDataParallel` arguments (`bucket_cap_mb` None: DDP's default,
    25 MB buckets after a 1 MiB first one, as Accelerate and the Trainer leave it), micro-batches per
    optimizer step (`ddp.no_sync()` on all but the last) and torch threads per process."""

    bucket_cap_mb: Optional[float] = None
    gradient_as_bucket_view: bool = False
    accumulation_steps: int = 1
    threads: int = 1


DDP_CONFIGS = {
    "bucket_25mb": DDPConfig(),
    "bucket_200mb": DDPConfig(bucket_cap_mb=200),
    "bucket_25mb_gradient_as_bucket_view": DDPConfig(gradient_as_bucket_view=True),
    "bucket_25mb_2_threads_each": DDPConfig(threads=2),
    f"bucket_25mb_accumulate_{ACCUMULATION}": DDPConfig(accumulation_steps=ACCUMULATION),
}
#: The configurations whose gradients `checks` compares with a single-process step.
CHECKED_CONFIGS = ("bucket_25mb", "bucket_25mb_gradient_as_bucket_view")
#: Candidates without communication: name -> (ranks that train, threads, micro-batches per step).
COMPUTE = {
    "one_process_2_threads": ((0,), 2, 1),
    "one_process_1_thread": ((0,), 1, 1),
    "two_independent_processes": ((0, 1), 1, 1),
    f"one_process_2_threads_accumulate_{ACCUMULATION}": ((0,), 2, ACCUMULATION),
}
BASELINE = "one_process_2_threads"
INDEPENDENT = "two_independent_processes"


def all_reduce_names() -> list[str]:
    return ["flat"] + [f"buckets_{mb}mb" for mb in ALL_REDUCE_BUCKETS_MB]


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


def loss_of(module: torch.nn.Module, batch: dict, target: torch.Tensor) -> torch.Tensor:
    """Task 0's loss: `module` is the `MultiTaskModel` or the DDP wrapping it."""
    return module(task=TASK, labels=target, **batch)["loss"]


@functools.lru_cache(maxsize=None)
def adamw_kwargs() -> tuple[tuple[str, bool], ...]:
    """AdamW's implementation, as `transformers.Trainer` uses it by default (`adamw_torch_fused`: one
    fused kernel over all parameters), or the foreach one where this torch has no fused CPU kernel."""
    try:
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)], fused=True)
        return (("fused", True),)
    except (RuntimeError, ValueError):
        return (("foreach", True),)


def optimizer_name() -> str:
    return "torch.optim.AdamW(" + ", ".join(f"{k}={v}" for k, v in adamw_kwargs()) + ")"


def adamw(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(list(params), lr=1e-5, **dict(adamw_kwargs()))


def train_step(module, optimizer, loss: Callable[[], torch.Tensor], accumulation: int = 1, no_sync=None) -> Callable[[], None]:
    """One optimizer step over `accumulation` micro-batches (each `loss()` divided by their number, as
    the Trainer scales it), the backward of all but the last inside `no_sync()` when given (DDP: the
    gradients are all-reduced once, in the last backward)."""

    def step():
        optimizer.zero_grad(set_to_none=True)
        for i in range(accumulation):
            last = i == accumulation - 1
            with contextlib.nullcontext() if last or no_sync is None else no_sync():
                (loss() / accumulation).backward()
        optimizer.step()

    return step


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to `n` meanwhile (the worker runs with 1 otherwise)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ddp_model(pristine, config: DDPConfig):
    """A copy of `pristine` wrapped in DDP per `config` (find_unused_parameters: the other tasks' parts
    get no gradient, as in `MultiTaskTrainer`)."""
    from torch.nn.parallel import DistributedDataParallel

    buckets = {} if config.bucket_cap_mb is None else {"bucket_cap_mb": config.bucket_cap_mb}
    return DistributedDataParallel(
        copy.deepcopy(pristine),
        gradient_as_bucket_view=config.gradient_as_bucket_view,
        find_unused_parameters=True,
        **buckets,
    )


class WaitingClock:
    """CPU and wall seconds a rank spends waiting while the other trains alone: that rank must be idle
    for the one-process candidates to be one process on the machine."""

    def __init__(self):
        self.cpu = self.wall = 0.0

    def wait(self, barrier: Callable[[], Any]) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        barrier()
        self.cpu += time.process_time() - cpu
        self.wall += time.perf_counter() - wall

    def share(self) -> Optional[float]:
        return self.cpu / self.wall if self.wall > 0 else None


def candidates(pristine, mine, elements: int, rank: int):
    """(name -> one call of each candidate on this rank, the waiting clock, name -> DDP model)."""
    import torch.distributed as dist

    batch, target = mine
    plain = copy.deepcopy(pristine).train()
    optimizer = adamw(p for p in plain.parameters() if p.requires_grad)  # one for all: one AdamW state
    waiting = WaitingClock()
    steps: dict[str, Callable[[], None]] = {}
    for name, (ranks, threads, micro) in COMPUTE.items():
        step = train_step(plain, optimizer, lambda: loss_of(plain, batch, target), micro)
        steps[name] = compute_call(step, rank in ranks, threads, alone=len(ranks) == 1, waiting=waiting)
    steps.update(all_reduce_calls(elements))
    ddps = {}
    for name, config in DDP_CONFIGS.items():
        ddp = ddps[name] = ddp_model(pristine, config).train()
        optimizer = adamw(p for p in ddp.parameters() if p.requires_grad)
        step = train_step(ddp, optimizer, (lambda d=ddp: loss_of(d, batch, target)), config.accumulation_steps, ddp.no_sync)
        steps[name] = threaded(step, config.threads)
    dist.barrier()
    return steps, waiting, ddps


def compute_call(step, trains: bool, threads: int, alone: bool, waiting: WaitingClock) -> Callable[[], None]:
    """A candidate without communication: this rank trains (with `threads`) or, when the other trains
    `alone`, waits for it in a barrier; with `alone` the trainer releases the waiter when done."""
    import torch.distributed as dist

    if not trains:
        return lambda: waiting.wait(dist.barrier)

    def call():
        with torch_threads(threads):
            step()
        if alone:
            dist.barrier()

    return call


def threaded(step, threads: int) -> Callable[[], None]:
    def call():
        with torch_threads(threads):
            step()

    return call


def bucket_elements(bucket_mb: float) -> int:
    return int(bucket_mb * 2**20) // 4


def all_reduce_calls(elements: int) -> dict[str, Callable[[], None]]:
    """The all-reduce candidates over a float32 tensor of `elements` (zeros: the sums stay finite)."""
    flat = torch.zeros(elements)
    calls = {"flat": lambda: all_reduce_chunks([flat])}
    for mb in ALL_REDUCE_BUCKETS_MB:
        chunks = list(torch.split(flat, bucket_elements(mb)))
        calls[f"buckets_{mb}mb"] = lambda chunks=chunks: all_reduce_chunks(chunks)
    return calls


def all_reduce_chunks(chunks: list[torch.Tensor]) -> None:
    """All-reduce every chunk, launched asynchronously and then waited for (as DDP's reducer does)."""
    import torch.distributed as dist

    works = [dist.all_reduce(chunk, async_op=True) for chunk in chunks]
    for work in works:
        work.wait()


def all_reduce_of_ones(elements: int) -> dict[str, float]:
    """The reduced values of an all_reduce of ones over `elements` values (all must be the world size)."""
    ones = torch.ones(elements)
    all_reduce_chunks([ones])
    return {"min": ones.min().item(), "max": ones.max().item(), "world_size": WORLD_SIZE}


def ddp_gradient_check(pristine, whole: tuple, mine: tuple, rank: int) -> dict[str, dict]:
    """For each of `CHECKED_CONFIGS`: one DDP backward (eval mode: no dropout), this rank on its rows,
    against one single-process backward on all ranks' rows (rank 0 compares; the loss is a mean over
    equal halves, so DDP's average of the two gradients is the whole batch's gradient)."""
    reference = None
    if rank == 0:
        model = copy.deepcopy(pristine).eval()
        loss_of(model, *whole).backward()
        reference = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    out = {}
    for name in CHECKED_CONFIGS:
        ddp = ddp_model(pristine, DDP_CONFIGS[name]).eval()
        loss_of(ddp, *mine).backward()
        if rank == 0:
            out[name] = gradient_difference(dict(ddp.module.named_parameters()), reference)
        del ddp
    return out


def gradient_difference(params: dict, reference: dict) -> dict[str, float]:
    """The largest absolute difference between `params`' gradients and `reference`, the largest
    reference gradient, and how many parameters got a gradient where the reference has none or none
    where it has one (the other tasks' parts: DDP must leave them without, or zero)."""
    difference = largest = 0.0
    mismatched = 0
    for name, expected in reference.items():
        grad = params[name].grad
        if expected is None or grad is None:
            present = grad if expected is None else expected
            if present is not None and present.abs().max().item() > 0:
                mismatched += 1
            continue
        difference = max(difference, (grad - expected).abs().max().item())
        largest = max(largest, expected.abs().max().item())
    return {"max_abs_difference": difference, "max_abs_gradient": largest, "mismatched_parameters": mismatched}


def bucket_sizes(ddp) -> list[int]:
    """The bytes of each gradient bucket DDP uses, from its logging data (DDP rebuilds its buckets after
    the first step only without `find_unused_parameters`)."""
    data = ddp._get_ddp_logging_data()
    sizes = data.get("rebuilt_bucket_sizes") or data.get("bucket_sizes") or ""
    return [int(size) for size in str(sizes).split(",") if size.strip()]


def lockstep_times(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """`common.interleaved_times` across the processes of the group: one call of each candidate per
    round, every call started on all ranks together after a barrier (not timed), so each rank's time is
    its own call's, and the rounds of the two ranks line up."""
    import torch.distributed as dist

    for _ in range(warmup):
        for fn in steps.values():
            dist.barrier()
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            dist.barrier()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    dist.barrier()
    return times


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
