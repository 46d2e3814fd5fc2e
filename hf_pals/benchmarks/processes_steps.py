"""The ranks' side of `hf-pals bench processes` (`processes.py` has the whole story): the candidates
each worker times (the training steps without communication, the gloo all-reduces, the DDP
configurations), the checks of the all-reduce and of DDP's gradients, and `lockstep_times`, which times
them in rounds that start together on both ranks."""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

WORLD_SIZE = 2
#: The main recipe's task count; the timed steps train the first task's adapter and head.
TASKS = 3
TASK = "task00"
WARMUP = 2
#: Micro-batches per optimizer step of the accumulation runs (1 is the plain DDP step).
ACCUMULATION = 4
#: The all-reduce bucket sizes timed besides one flat tensor (25 MB: DDP's default `bucket_cap_mb`).
ALL_REDUCE_BUCKETS_MB = (25, 100)
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
