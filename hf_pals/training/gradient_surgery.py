"""Gradient surgery for joint multi-task steps: combine the tasks' gradients of the shared parameters.

Both methods take the per-task gradients of one step as the rows of a matrix G (T tasks x N shared
parameters, flattened) and return the update direction (N). Only parameters that two or more tasks
update are "shared"; a task's own adapter and head keep their plain gradient (see `joint.JointTraining`).

    pcgrad  Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020 (PCGrad, Algorithm 1):
            for each task i, g_i^PC = g_i; for each other task j, in random order: if g_i^PC · g_j < 0,
            g_i^PC -= (g_i^PC · g_j / ‖g_j‖²) g_j  (projection onto the normal plane of g_j). Update: Σ_i g_i^PC.
    agem    Chaudhry et al., "Efficient Lifelong Learning with A-GEM", ICLR 2019, the fast form of gradient
            episodic memory (Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning",
            NeurIPS 2017): an `EpisodicMemory` holds a fixed, seeded set of examples of every task; before
            each update the gradient m_j of each task's memory loss is computed, and each task's gradient
            g_i is projected against the average memory gradient of the other tasks,
            g_ref = mean_{j≠i} m_j:  g̃ = g - (g · g_ref / g_ref · g_ref) g_ref  if g · g_ref < 0, else g.
            Update: Σ_i g̃_i. Each g̃_i then does not increase the other tasks' memory loss to first order.

Full GEM (a quadratic program with one constraint per memory, m_j · g̃ >= 0 for every j) is not offered:
scipy has no QP solver, and A-GEM's single projection is what Chaudhry et al. show to match it at a
fraction of the cost.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

#: Names a recipe uses (`multitask.gradient_surgery`).
GRADIENT_SURGERY = ("none", "pcgrad", "agem")
#: Seed-key tags that keep these random streams apart from the task sampler's ([seed, 1 + task, pass]).
PCGRAD_KEY = 0x70636772  # "pcgr"
MEMORY_KEY = 0x6D656D  # "mem"


def project_conflicting(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """g projected onto the normal plane of g_ref when they conflict (g · g_ref < 0), else g unchanged:

        g - (g · g_ref / g_ref · g_ref) g_ref   if g · g_ref < 0

    The projection step of both PCGrad (g_ref = another task's gradient) and A-GEM (g_ref = the memory
    gradient)."""
    dot = torch.dot(g, g_ref)
    if dot < 0:
        return g - (dot / torch.dot(g_ref, g_ref)) * g_ref
    return g


#: A-GEM's name for the same projection (Chaudhry et al., 2019, eq. 11).
agem_project = project_conflicting


def pcgrad(grads: torch.Tensor, generator: Optional[np.random.Generator] = None) -> torch.Tensor:
    """PCGrad (Yu et al., 2020, Algorithm 1) on the rows of `grads` (T x N): each task's gradient is
    projected, in a random order of the other tasks, against every other task's original gradient it
    conflicts with; returns the sum of the projected gradients. `generator` draws the orders (pass one
    seeded by the step so that every process and a resumed run draw the same)."""
    generator = generator if generator is not None else np.random.default_rng()
    num_tasks = grads.shape[0]
    projected = []
    for i in range(num_tasks):
        g = grads[i].clone()
        others = [j for j in range(num_tasks) if j != i]
        for j in generator.permutation(others) if others else ():
            g = project_conflicting(g, grads[int(j)])
        projected.append(g)
    return torch.stack(projected).sum(0)


def agem(grads: torch.Tensor, memory_grads: torch.Tensor) -> torch.Tensor:
    """A-GEM across tasks: row i of `grads` (T x N) projected against the mean of the other tasks' memory
    gradients (rows j != i of `memory_grads`); returns the sum. With one task there is nothing to protect."""
    num_tasks = grads.shape[0]
    if num_tasks == 1:
        return grads[0].clone()
    total = memory_grads.sum(0)
    out = torch.zeros_like(grads[0])
    for i in range(num_tasks):
        reference = (total - memory_grads[i]) / (num_tasks - 1)
        out += project_conflicting(grads[i], reference)
    return out


def count_conflicts(grads: torch.Tensor) -> int:
    """How many pairs of tasks have conflicting gradients (negative dot product) among the rows."""
    gram = grads @ grads.T
    return int(torch.triu(gram < 0, diagonal=1).sum())


class PCGrad:
    """`pcgrad` with the random orders drawn from (seed, step)."""

    name = "pcgrad"
    needs_memory = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    def combine(self, grads: torch.Tensor, step: int, memory_grads: Optional[torch.Tensor] = None) -> torch.Tensor:
        return pcgrad(grads, np.random.default_rng([self.seed, PCGRAD_KEY, step]))


class AGEM:
    """`agem` against the gradients of an `EpisodicMemory`."""

    name = "agem"
    needs_memory = True

    def combine(self, grads: torch.Tensor, step: int, memory_grads: Optional[torch.Tensor] = None) -> torch.Tensor:
        if memory_grads is None:
            raise ValueError("A-GEM needs the gradients of the episodic memory")
        return agem(grads, memory_grads)


def build_gradient_surgery(name: Optional[str], seed: int = 0):
    """None for "none", else a `PCGrad` or `AGEM`."""
    if name in (None, "none"):
        return None
    if name == "pcgrad":
        return PCGrad(seed)
    if name == "agem":
        return AGEM()
    raise ValueError(f"multitask.gradient_surgery must be one of {list(GRADIENT_SURGERY)}, got {name!r}")


class EpisodicMemory:
    """Gradient episodic memory's store (Lopez-Paz & Ranzato, 2017): a fixed number of examples per task.

    Each task keeps `memory_size` training examples (all of them when it has fewer), drawn once without
    replacement with a generator seeded by (seed, task index), so every process and every resumed run
    hold the same memory. The examples stay in the training data as well. `batches` holds each task's
    memory collated as one batch, which is what A-GEM takes the memory gradient on.

    Args:
        datasets: task name -> dataset (rows are dicts, as `datasets.Dataset` gives them).
        memory_size: examples per task.
        seed: the memory's seed.
        collate: turns a list of rows (each with a "task" field) into a model batch.
    """

    def __init__(
        self,
        datasets: Mapping[str, Any],
        memory_size: int,
        seed: int = 0,
        collate: Optional[Callable[[Sequence[dict]], dict]] = None,
    ):
        if isinstance(memory_size, bool) or not isinstance(memory_size, int) or memory_size < 1:
            raise ValueError(f"multitask.memory_size must be a positive integer, got {memory_size!r}")
        self.memory_size = memory_size
        self.indices: dict[str, list[int]] = {}
        for task_index, (task, dataset) in enumerate(datasets.items()):
            rng = np.random.default_rng([seed, MEMORY_KEY, task_index])
            size = min(memory_size, len(dataset))
            self.indices[task] = sorted(int(i) for i in rng.choice(len(dataset), size=size, replace=False))
        self.batches: dict[str, dict] = {}
        if collate is not None:
            for task, dataset in datasets.items():
                rows = [{**dataset[i], "task": task} for i in self.indices[task]]
                self.batches[task] = collate(rows)
