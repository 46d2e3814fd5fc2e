"""Task sampling: which task each training step draws, and the batch sampler that follows it.

A task schedule gives the probability p_i of drawing task i at each optimizer step; the schedules differ
only in how p_i depends on the training-set sizes N_i and on the epoch e (1-based, of E):

    annealed      p_i ∝ N_i^alpha, alpha = 1 - 0.8 (e - 1) / (E - 1)   (Stickland & Murray, 2019; default)
    proportional  p_i ∝ N_i
    sqrt          p_i ∝ sqrt(N_i)
    temperature   p_i ∝ N_i^(1/T)
    uniform       p_i = 1 / n
    round_robin   the tasks in turn, step s -> task s mod n (no randomness)
    sequential    curriculum: each epoch is n contiguous blocks, one per task in order, block i ∝ N_i
                  (no randomness; without steps_per_epoch the whole run is task 1, then task 2, ...)
    hybrid        curriculum: odd epochs sequential (only the current task's own parameters train),
                  even epochs joint (every task every step, the largest task downsampled); needs
                  `hf_pals.training.curriculum.HybridTrainer`

or a user's function `fn(step, epoch, num_epochs, sizes) -> probabilities` (`sizes` is {task: N_i}; the
result is a sequence in the order of `sizes` or a {task: p} mapping, and need not be normalized), named
in a recipe as "module:function".

The task of a step is a pure function of (seed, step): every process of a distributed run draws the
same task at the same step, and a resumed run draws exactly the sequence an uninterrupted one would.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
from torch.utils.data import Sampler

from .length_grouping import group_by_length

#: A user's schedule: fn(step, epoch, num_epochs, sizes) -> probabilities.
ScheduleFunction = Callable[[int, int, int, dict], Union[Sequence[float], Mapping[str, float]]]


def annealed_alpha(epoch: int, num_epochs: int) -> float:
    """alpha = 1 - 0.8 (e - 1) / (E - 1) (Stickland & Murray, 2019), e 1-based; 1 when E == 1."""
    if num_epochs <= 1:
        return 1.0
    epoch = min(max(epoch, 1), num_epochs)
    return 1.0 - 0.8 * (epoch - 1) / (num_epochs - 1)


def annealed_probabilities(sizes: Sequence[int], epoch: int, num_epochs: int) -> np.ndarray:
    """p_i ∝ N_i^alpha: proportional to dataset size in the first epoch, flatter towards the last."""
    return _normalize(np.asarray(sizes, dtype=np.float64) ** annealed_alpha(epoch, num_epochs))


def _normalize(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


class TaskSchedule:
    """Base class: p_i ∝ N_i^alpha(e), with epochs of `steps_per_epoch` optimizer steps.

    Subclasses set a constant `exponent` or override `alpha(epoch)`; `round_robin` and user functions
    override `task_at` or `probabilities_at` instead. A step's task is drawn with a generator seeded
    by (seed, step).

    Args:
        task_sizes: task name -> number of training examples (N_i), in the order used for round robin.
        steps_per_epoch: optimizer steps in one epoch (default: the whole run is one epoch).
        num_steps: optimizer steps in the whole run; E = ceil(num_steps / steps_per_epoch).
        seed: the schedule's seed.
    """

    name = ""
    exponent: Optional[float] = None

    def __init__(
        self, task_sizes: Mapping[str, int], steps_per_epoch: Optional[int], num_steps: int, seed: int = 0
    ):
        if not task_sizes:
            raise ValueError("task sampling needs at least one task")
        empty = [name for name, size in task_sizes.items() if size <= 0]
        if empty:
            raise ValueError(f"task sampling: task(s) {empty} have no training examples")
        if num_steps <= 0:
            raise ValueError(f"task sampling needs a positive number of steps, got {num_steps}")
        steps_per_epoch = num_steps if steps_per_epoch is None else steps_per_epoch
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
            raise ValueError(f"sampling.steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
        self.tasks = list(task_sizes)
        self.sizes = [int(task_sizes[t]) for t in self.tasks]
        self.steps_per_epoch = steps_per_epoch
        self.num_steps = num_steps
        self.num_epochs = max(1, math.ceil(num_steps / steps_per_epoch))
        self.seed = seed
        self._epoch_probabilities: dict[int, np.ndarray] = {}

    def alpha(self, epoch: int) -> float:
        """The exponent of N_i in epoch `epoch` (1-based); `exponent` unless a schedule anneals it."""
        if self.exponent is None:
            raise NotImplementedError(f"{type(self).__name__} sets neither `exponent` nor `alpha`")
        return self.exponent

    def epoch_of(self, step: int) -> int:
        """1-based epoch of a 0-based optimizer step."""
        return min(step // self.steps_per_epoch + 1, self.num_epochs)

    def epoch_steps(self, epoch: int) -> range:
        """The 0-based optimizer steps of epoch `epoch` (the last epoch may be shorter)."""
        return range((epoch - 1) * self.steps_per_epoch, min(epoch * self.steps_per_epoch, self.num_steps))

    def probabilities_at(self, step: int) -> np.ndarray:
        """p_i at optimizer step `step`, in the order of `tasks`."""
        epoch = self.epoch_of(step)
        if epoch not in self._epoch_probabilities:
            self._epoch_probabilities[epoch] = _normalize(np.asarray(self.sizes, dtype=np.float64) ** self.alpha(epoch))
        return self._epoch_probabilities[epoch]

    def probabilities(self, epoch: int) -> dict[str, float]:
        """{task: p_i} of epoch `epoch` (1-based): the expected share of the epoch's steps."""
        return dict(zip(self.tasks, self.probabilities_at(self.epoch_steps(epoch)[0]).tolist()))

    def task_at(self, step: int) -> str:
        """The task of optimizer step `step` (0-based)."""
        draw = np.random.default_rng([self.seed, step]).random()
        index = int(np.searchsorted(np.cumsum(self.probabilities_at(step)), draw, side="right"))
        return self.tasks[min(index, len(self.tasks) - 1)]


class AnnealedTaskSchedule(TaskSchedule):
    """p_i ∝ N_i^alpha, alpha = 1 - 0.8 (e - 1) / (E - 1): from size-proportional to flatter (the paper's)."""

    name = "annealed"

    def alpha(self, epoch: int) -> float:
        return annealed_alpha(epoch, self.num_epochs)


class ProportionalTaskSchedule(TaskSchedule):
    """p_i ∝ N_i: every training example is equally likely to be seen."""

    name = "proportional"
    exponent = 1.0


class SqrtTaskSchedule(TaskSchedule):
    """p_i ∝ sqrt(N_i) (Stickland & Murray's "square root sampling")."""

    name = "sqrt"
    exponent = 0.5


class TemperatureTaskSchedule(TaskSchedule):
    """p_i ∝ N_i^(1/T): T = 1 is proportional, T = 2 sqrt, T -> infinity uniform."""

    name = "temperature"

    def __init__(self, task_sizes, steps_per_epoch, num_steps, seed=0, *, temperature: float):
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"sampling.temperature must be a positive number, got {temperature!r}")
        super().__init__(task_sizes, steps_per_epoch, num_steps, seed)
        self.temperature = float(temperature)
        self.exponent = 1.0 / self.temperature


class UniformTaskSchedule(TaskSchedule):
    """p_i = 1 / n, whatever the sizes."""

    name = "uniform"
    exponent = 0.0


class RoundRobinTaskSchedule(UniformTaskSchedule):
    """The tasks in turn: step s trains task s mod n (so each task gets 1 / n of the steps)."""

    name = "round_robin"

    def task_at(self, step: int) -> str:
        return self.tasks[step % len(self.tasks)]


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split `total` steps into len(weights) whole counts ∝ weights (largest remainder, ties to the
    earlier task); every weight gets at least one step when total >= len(weights)."""
    w = np.asarray(weights, dtype=np.float64)
    raw = total * w / w.sum()
    counts = np.floor(raw).astype(int)
    if total >= len(w):
        counts = np.maximum(counts, 1)
    order = np.argsort(-(raw - np.floor(raw)), kind="stable")
    i = 0
    while counts.sum() < total:
        counts[order[i % len(w)]] += 1
        i += 1
    while counts.sum() > total:
        counts[int(np.argmax(counts))] -= 1
    return counts.tolist()


class SequentialTaskSchedule(TaskSchedule):
    """Curriculum "sequential": task after task, in recipe order, with no randomness.

    Each sampling epoch is cut into n contiguous blocks, one per task in the order of `task_sizes`
    (the recipe's `tasks`); block i has a share N_i / sum_j N_j of the epoch's steps (`apportion`), so
    every task gets the same number of passes over its data. Without `steps_per_epoch` the run is one
    epoch, i.e. classic sequential fine-tuning: all of task 1, then all of task 2, ... With
    `steps_per_epoch` the order repeats every epoch (sst block, quora block, sts block, sst block, ...).
    """

    name = "sequential"
    exponent = 1.0

    def block_lengths(self, epoch: int) -> list[int]:
        """Steps of each task's block in epoch `epoch` (1-based), in task order."""
        return apportion(len(self.epoch_steps(epoch)), np.asarray(self.sizes, dtype=np.float64) ** self.alpha(epoch))

    def task_at(self, step: int) -> str:
        epoch = self.epoch_of(step)
        offset = step - self.epoch_steps(epoch).start
        index = int(np.searchsorted(np.cumsum(self.block_lengths(epoch)), offset, side="right"))
        return self.tasks[min(index, len(self.tasks) - 1)]

    def probabilities_at(self, step: int) -> np.ndarray:
        """One-hot: the step's task is certain."""
        return (np.asarray(self.tasks) == self.task_at(step)).astype(np.float64)

    def probabilities(self, epoch: int) -> dict[str, float]:
        lengths = np.asarray(self.block_lengths(epoch), dtype=np.float64)
        return dict(zip(self.tasks, (lengths / max(lengths.sum(), 1.0)).tolist()))


class HybridTaskSchedule(SequentialTaskSchedule):
    """Curriculum "hybrid" (CS224N report "Multi-BERT", 002): sequential and joint epochs alternate.

    - Odd epochs (1, 3, ...) are sequential: blocks of one task after another as in `sequential`, and
      only the current task's own parameters (its adapter and head) train; the shared encoder and the
      other tasks' parameters are held still, so no task disturbs another and the largest task gets
      the most steps.
    - Even epochs (2, 4, ...) are joint: every step trains every task (one batch of each, the losses
      combined as the recipe's `multitask` section says) and all parameters train. The largest task
      is downsampled to the size of the next largest: in each joint epoch its batches come from a
      seeded random pool (`joint_pool`) of `joint_sizes()[task]` rows, a new pool every joint epoch.

    `sampling.steps_per_epoch` is required (the phases alternate by epoch). Which tasks a step trains is
    a pure function of the step; the joint pools of (seed, epoch). `task_at` is None at a joint step
    (use `tasks_at`); the trainer for this schedule is `hf_pals.training.curriculum.HybridTrainer`.
    """

    name = "hybrid"

    def __init__(self, task_sizes, steps_per_epoch, num_steps, seed=0):
        if steps_per_epoch is None:
            raise ValueError(
                "sampling.steps_per_epoch is required by the hybrid curriculum (odd epochs sequential, even "
                "epochs joint)"
            )
        super().__init__(task_sizes, steps_per_epoch, num_steps, seed)

    def is_joint_epoch(self, epoch: int) -> bool:
        return epoch % 2 == 0

    def is_joint(self, step: int) -> bool:
        """Whether step `step` (0-based) trains every task at once."""
        return self.is_joint_epoch(self.epoch_of(step))

    def task_at(self, step: int) -> Optional[str]:
        """The one task of a sequential step; None at a joint step."""
        return None if self.is_joint(step) else super().task_at(step)

    def tasks_at(self, step: int) -> list[str]:
        """The tasks whose losses step `step` trains on."""
        return list(self.tasks) if self.is_joint(step) else [super().task_at(step)]

    def trains_only(self, step: int) -> Optional[str]:
        """At a sequential step the task whose own parameters alone train; None (everything trains) at a
        joint step."""
        return self.task_at(step)

    def probabilities_at(self, step: int) -> np.ndarray:
        """1 for every task a step trains (so all ones at a joint step)."""
        return np.isin(np.asarray(self.tasks), self.tasks_at(step)).astype(np.float64)

    def probabilities(self, epoch: int) -> dict[str, float]:
        """The share of the epoch's steps that train each task: block shares, or 1 in a joint epoch."""
        if self.is_joint_epoch(epoch):
            return dict.fromkeys(self.tasks, 1.0)
        return super().probabilities(epoch)

    def joint_sizes(self) -> dict[str, int]:
        """Rows each task draws from in a joint epoch: min(N_i, cap), cap the second largest N (the largest
        task shrinks to the size of the next largest; the others keep all their rows)."""
        ordered = sorted(self.sizes, reverse=True)
        cap = ordered[1] if len(ordered) > 1 else ordered[0]
        return {task: min(size, cap) for task, size in zip(self.tasks, self.sizes)}

    def joint_pool(self, task: str, epoch: int) -> np.ndarray:
        """The rows (0-based within `task`, sorted) that `task` draws from in joint epoch `epoch`."""
        index = self.tasks.index(task)
        size, keep = self.sizes[index], self.joint_sizes()[task]
        if keep >= size:
            return np.arange(size)
        return np.sort(np.random.default_rng([self.seed, 10_000 + index, epoch]).permutation(size)[:keep])


class FunctionTaskSchedule(TaskSchedule):
    """Probabilities from a user's function `fn(step, epoch, num_epochs, sizes)` (see the module doc)."""

    name = "function"

    def __init__(self, task_sizes, steps_per_epoch, num_steps, seed=0, *, function: ScheduleFunction):
        if not callable(function):
            raise ValueError(f"sampling.name: {function!r} is not callable")
        super().__init__(task_sizes, steps_per_epoch, num_steps, seed)
        self.function = function

    def probabilities_at(self, step: int) -> np.ndarray:
        where = f"task sampling function {getattr(self.function, '__qualname__', self.function)!r} at step {step}"
        out = self.function(step, self.epoch_of(step), self.num_epochs, dict(zip(self.tasks, self.sizes)))
        if isinstance(out, Mapping):
            unknown = sorted(set(out) - set(self.tasks))
            if unknown:
                raise ValueError(f"{where}: returned unknown task(s) {unknown}; the tasks are {self.tasks}")
            out = [out.get(task, 0.0) for task in self.tasks]
        p = np.asarray(out, dtype=np.float64)
        if p.shape != (len(self.tasks),) or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
            raise ValueError(
                f"{where}: expected {len(self.tasks)} finite non-negative weights (not all zero) for {self.tasks}, "
                f"got {out!r}"
            )
        return _normalize(p)

    def probabilities(self, epoch: int) -> dict[str, float]:
        mean = np.mean([self.probabilities_at(step) for step in self.epoch_steps(epoch)], axis=0)
        return dict(zip(self.tasks, mean.tolist()))


#: Schedules by the name a recipe uses (`sampling.name`).
TASK_SCHEDULES: dict[str, type[TaskSchedule]] = {
    cls.name: cls
    for cls in (
        AnnealedTaskSchedule,
        ProportionalTaskSchedule,
        SqrtTaskSchedule,
        TemperatureTaskSchedule,
        UniformTaskSchedule,
        RoundRobinTaskSchedule,
    )
}

#: Curricula: schedules with a fixed task order (the seed does not change which tasks a step trains),
#: named in a recipe's `sampling.name` like the schedules above.
CURRICULA: dict[str, type[TaskSchedule]] = {cls.name: cls for cls in (SequentialTaskSchedule, HybridTaskSchedule)}


def import_schedule_function(path: str) -> ScheduleFunction:
    """The callable named by "package.module:function" (attributes may be dotted: "module:Class.method")."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"sampling.name {path!r}: a function must be named as 'module:function'")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"sampling.name {path!r}: cannot import it ({err})") from err
    if not callable(target):
        raise ValueError(f"sampling.name {path!r} is not callable")
    return target


SamplingSpec = Union[None, str, ScheduleFunction, Mapping[str, Any], TaskSchedule]


def build_task_schedule(
    sampling: SamplingSpec,
    task_sizes: Mapping[str, int],
    num_steps: int,
    seed: int = 0,
    steps_per_epoch: Optional[int] = None,
) -> TaskSchedule:
    """A `TaskSchedule` from a spec, as a recipe's `sampling` section or the Python API give it.

    `sampling` is a `TaskSchedule` (returned as is), None (annealed), a name from `TASK_SCHEDULES`,
    "module:function", a function, or a mapping {"name": one of those, "steps_per_epoch": int,
    "temperature": float} (the recipe section). `steps_per_epoch` is used when the spec has none.
    """
    if isinstance(sampling, TaskSchedule):
        return sampling
    spec = dict(sampling) if isinstance(sampling, Mapping) else {"name": sampling}
    name = spec.pop("name", None) or "annealed"
    if spec.get("steps_per_epoch") is not None:
        steps_per_epoch = spec["steps_per_epoch"]
    spec.pop("steps_per_epoch", None)
    temperature = spec.pop("temperature", None)
    if spec:
        known = "name, steps_per_epoch, temperature"
        raise ValueError(f"sampling: unknown field(s) {sorted(spec)}; known fields are {known}")
    if (name == "temperature") != (temperature is not None):
        raise ValueError(
            "sampling.temperature is required by name 'temperature'"
            if temperature is None
            else f"sampling.temperature applies only to name 'temperature', not to {name!r}"
        )
    args = (task_sizes, steps_per_epoch, num_steps, seed)
    if callable(name):
        return FunctionTaskSchedule(*args, function=name)
    if not isinstance(name, str) or (name not in TASK_SCHEDULES and name not in CURRICULA and ":" not in name):
        raise ValueError(
            f"sampling.name must be one of {sorted(TASK_SCHEDULES) + sorted(CURRICULA)} or 'module:function', "
            f"got {name!r}"
        )
    if ":" in name:
        return FunctionTaskSchedule(*args, function=import_schedule_function(name))
    if name == "temperature":
        return TemperatureTaskSchedule(*args, temperature=temperature)
    if name in CURRICULA:
        return CURRICULA[name](*args)
    return TASK_SCHEDULES[name](*args)


class RowStream:
    """Rows of one task (`rows`, 0-based within the task) in a seeded random order, reshuffled after
    each pass; length-grouped with `lengths` (the task's per-row lengths). `take(n)` gives the next n
    rows as dataset indices (`offset` added). The order is a pure function of `seed` and the pass, so
    batch samplers built on it (joint and hybrid steps) give the same batches in every run and resume."""

    def __init__(self, rows: np.ndarray, offset: int, seed: Sequence[int], batch_size: int, lengths=None):
        self.rows, self.offset, self.seed = rows, offset, list(seed)
        self.batch_size, self.lengths = batch_size, lengths
        self.order: Optional[np.ndarray] = None
        self.position = 0
        self.passes = 0

    def take(self, count: int) -> list[int]:
        out: list[int] = []
        while len(out) < count:
            if self.order is None or self.position >= len(self.rows):
                rng = np.random.default_rng(self.seed + [self.passes])
                self.order = self.rows[rng.permutation(len(self.rows))]
                if self.lengths is not None:
                    self.order = group_by_length(self.order, self.lengths, self.batch_size, rng)
                self.position = 0
                self.passes += 1
            chunk = self.order[self.position : self.position + count - len(out)]
            out.extend(int(i) + self.offset for i in chunk)
            self.position += len(chunk)
        return out


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Yields batches of indices into a `MultiTaskDataset`, every batch from a single task.

    Batch b belongs to optimizer step b // (num_processes * gradient_accumulation_steps), so the
    `num_processes` consecutive batches that Accelerate deals out to the processes, and all micro-batches
    of one accumulated step, share one task. Within a task, examples are visited in a seeded random
    order, reshuffled after each pass over the task's data. With `lengths` (task -> length of each
    row), that order is length-grouped (`group_by_length`) so batches carry little padding.
    """

    def __init__(
        self,
        schedule: TaskSchedule,
        task_offsets: dict[str, int],
        batch_size: int,
        num_steps: int,
        num_processes: int = 1,
        gradient_accumulation_steps: int = 1,
        lengths: Optional[dict[str, Sequence[int]]] = None,
    ):
        self.schedule = schedule
        self.lengths = lengths or {}
        self.task_offsets = task_offsets
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.batches_per_step = num_processes * gradient_accumulation_steps

    def __len__(self) -> int:
        return self.num_steps * self.batches_per_step

    def __iter__(self) -> Iterator[list[int]]:
        order: dict[str, np.ndarray] = {}
        position = {task: 0 for task in self.schedule.tasks}
        passes = {task: 0 for task in self.schedule.tasks}
        sizes = dict(zip(self.schedule.tasks, self.schedule.sizes))
        for batch in range(len(self)):
            task = self.schedule.task_at(batch // self.batches_per_step)
            indices = []
            while len(indices) < self.batch_size:
                if task not in order or position[task] >= sizes[task]:
                    task_index = self.schedule.tasks.index(task)
                    rng = np.random.default_rng([self.schedule.seed, 1 + task_index, passes[task]])
                    order[task] = rng.permutation(sizes[task])
                    if task in self.lengths:
                        order[task] = group_by_length(order[task], self.lengths[task], self.batch_size, rng)
                    position[task] = 0
                    passes[task] += 1
                take = min(self.batch_size - len(indices), sizes[task] - position[task])
                chunk = order[task][position[task] : position[task] + take]
                indices.extend(int(i) + self.task_offsets[task] for i in chunk)
                position[task] += take
            yield indices
