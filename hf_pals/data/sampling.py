"""Task sampling: which task each training step draws, and the batch sampler that follows it.

The task of a step is a pure function of (seed, step): every process of a distributed run draws the
same task at the same step, and a resumed run draws exactly the sequence an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def annealed_alpha(epoch: int, num_epochs: int) -> float:
    """alpha = 1 - 0.8 (e - 1) / (E - 1) (Stickland & Murray, 2019), e 1-based; 1 when E == 1."""
    if num_epochs <= 1:
        return 1.0
    epoch = min(max(epoch, 1), num_epochs)
    return 1.0 - 0.8 * (epoch - 1) / (num_epochs - 1)


def annealed_probabilities(sizes: Sequence[int], epoch: int, num_epochs: int) -> np.ndarray:
    """p_i ∝ N_i^alpha: proportional to dataset size in the first epoch, flatter towards the last."""
    weights = np.asarray(sizes, dtype=np.float64) ** annealed_alpha(epoch, num_epochs)
    return weights / weights.sum()


class AnnealedTaskSchedule:
    """Annealed sampling over tasks, with epochs of `steps_per_epoch` optimizer steps.

    Args:
        task_sizes: task name -> number of training examples (N_i).
        steps_per_epoch: optimizer steps in one epoch (an "epoch" is a number of steps, set in the recipe).
        num_steps: optimizer steps in the whole run; E = ceil(num_steps / steps_per_epoch).
        seed: the schedule's seed.
    """

    def __init__(self, task_sizes: dict[str, int], steps_per_epoch: int, num_steps: int, seed: int = 0):
        if not task_sizes:
            raise ValueError("task sampling needs at least one task")
        empty = [name for name, size in task_sizes.items() if size <= 0]
        if empty:
            raise ValueError(f"task sampling: task(s) {empty} have no training examples")
        if steps_per_epoch <= 0:
            raise ValueError(f"sampling.steps_per_epoch must be positive, got {steps_per_epoch}")
        self.tasks = list(task_sizes)
        self.sizes = [task_sizes[t] for t in self.tasks]
        self.steps_per_epoch = steps_per_epoch
        self.num_epochs = max(1, math.ceil(num_steps / steps_per_epoch))
        self.seed = seed
        self._probabilities = [
            annealed_probabilities(self.sizes, e, self.num_epochs) for e in range(1, self.num_epochs + 1)
        ]

    def epoch_of(self, step: int) -> int:
        """1-based epoch of a 0-based optimizer step."""
        return min(step // self.steps_per_epoch + 1, self.num_epochs)

    def probabilities(self, epoch: int) -> dict[str, float]:
        return dict(zip(self.tasks, self._probabilities[epoch - 1].tolist()))

    def task_at(self, step: int) -> str:
        """The task of optimizer step `step` (0-based)."""
        probs = self._probabilities[self.epoch_of(step) - 1]
        draw = np.random.default_rng([self.seed, step]).random()
        index = int(np.searchsorted(np.cumsum(probs), draw, side="right"))
        return self.tasks[min(index, len(self.tasks) - 1)]


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Yields batches of indices into a `MultiTaskDataset`, every batch from a single task.

    Batch b belongs to optimizer step b // (num_processes * gradient_accumulation_steps), so the
    `num_processes` consecutive batches that Accelerate deals out to the processes, and all micro-batches
    of one accumulated step, share one task. Within a task, examples are visited in a seeded random
    order, reshuffled after each pass over the task's data.
    """

    def __init__(
        self,
        schedule: AnnealedTaskSchedule,
        task_offsets: dict[str, int],
        batch_size: int,
        num_steps: int,
        num_processes: int = 1,
        gradient_accumulation_steps: int = 1,
    ):
        self.schedule = schedule
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
                    position[task] = 0
                    passes[task] += 1
                take = min(self.batch_size - len(indices), sizes[task] - position[task])
                chunk = order[task][position[task] : position[task] + take]
                indices.extend(int(i) + self.task_offsets[task] for i in chunk)
                position[task] += take
            yield indices
