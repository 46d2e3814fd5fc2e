"""Joint multi-task steps: one batch of every task in each optimizer step, losses combined.

`step_mode: single` (the default) trains one task per step, drawn by the task schedule. `step_mode: joint`
trains every task in every step, as the CS224N reports on loss balancing and gradient surgery do:

- `JointBatchSampler` yields one *joint batch* per micro-batch: `per_device_train_batch_size` rows of every
  task. `JointCollator` turns it into {"task_batches": {task: batch}}. The Trainer sees one dataloader item
  per micro-batch as usual, so its loop, gradient accumulation, checkpoints and exact resume (which skips
  dataloader items) are untouched.
- `MultiTaskTrainer.compute_loss` runs each task's batch through its adapter and head and combines the
  losses with a `LossBalancer` (`loss_balancing`).
- `JointTraining.backward` takes the gradients: the combined loss's (no surgery), or each task's own, that
  a gradient surgery method (`gradient_surgery`) combines at the last micro-batch of the step.

Distributed (DDP): joint steps run the model's forward passes on the unwrapped module and reduce the
gradients themselves: one flattened all-reduce (mean) per optimizer step of every gradient (no surgery), or
of the per-task gradients (and memory gradients) *before* surgery, so that surgery sees the gradients of
the whole global batch and every rank computes the same update. Loss-balancing state is updated from
losses averaged over the ranks and its parameters' gradients are averaged too, so it is identical on every
rank and in every checkpoint. Not supported: FSDP, DeepSpeed and fp16 loss scaling (bf16 is fine).

Memory: with gradient surgery, every task's gradient of the trainable parameters is kept (T x N floats,
and again for A-GEM's memory gradients), e.g. 3 x 22.7M floats = 272 MB for MiniLM with a trained encoder.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..data.sampling import RowStream
from .gradient_surgery import GRADIENT_SURGERY, EpisodicMemory, build_gradient_surgery, count_conflicts
from .loss_balancing import (
    LOSS_BALANCERS,
    DynamicWeightAverage,
    GradNorm,
    LossBalancer,
    UncertaintyWeighting,
    kendall_factors,
)

#: The key of a collated joint batch: {"task_batches": {task: batch}}.
JOINT_KEY = "task_batches"
STEP_MODES = ("single", "joint")
UNCERTAINTY_FACTORS = ("equal", "kendall")


@dataclass
class MultitaskConfig:
    """How tasks share an optimizer step (the recipe's `multitask` section).

    Attributes:
        step_mode: "single" (one task per step, drawn by `sampling`) or "joint" (every task every step;
            `per_device_train_batch_size` rows of each task per micro-batch; `sampling` is not used).
        loss_balancing: joint mode: "sum", "squares", "dwa", "uncertainty" or "gradnorm" (see
            `hf_pals.training.loss_balancing`).
        dwa_temperature: T of dynamic weight average (Liu et al. use 2).
        dwa_window: optimizer steps per DWA averaging window (1: the last two steps; an epoch's steps for
            Liu et al.'s per-epoch averages).
        uncertainty_factors: "equal" (L = Σ exp(-s_i) L_i + s_i) or "kendall" (factor 2 on
            classification losses, 1 on regression ones, from Kendall et al.'s likelihoods).
        gradnorm_alpha: GradNorm's α (Chen et al. use 1.5 on NYUv2).
        gradnorm_layer: name of the shared weight GradNorm measures gradient norms on (a name from
            `MultiTaskModel.named_parameters()`); default: the last encoder layer's output dense weight.
        gradient_surgery: joint mode: "none", "pcgrad" or "agem" (see `hf_pals.training.gradient_surgery`).
        memory_size: A-GEM: examples per task in the episodic memory (each step adds a forward and backward
            pass over memory_size examples of every task).
    """

    step_mode: str = "single"
    loss_balancing: str = "sum"
    dwa_temperature: float = 2.0
    dwa_window: int = 1
    uncertainty_factors: str = "equal"
    gradnorm_alpha: float = 1.5
    gradnorm_layer: Optional[str] = None
    gradient_surgery: str = "none"
    memory_size: int = 32

    @property
    def joint(self) -> bool:
        return self.step_mode == "joint"

    def validate(self, where: str = "multitask") -> None:
        """Raise a ValueError naming the first bad field (`where.field`)."""

        def number(name, value, minimum, strict):
            ok = not isinstance(value, bool) and isinstance(value, (int, float))
            ok = ok and (value > minimum if strict else value >= minimum)
            if not ok:
                raise ValueError(f"{where}.{name} must be a number {'>' if strict else '>='} {minimum}, got {value!r}")

        if self.step_mode not in STEP_MODES:
            raise ValueError(f"{where}.step_mode must be one of {list(STEP_MODES)}, got {self.step_mode!r}")
        if self.loss_balancing not in LOSS_BALANCERS:
            raise ValueError(
                f"{where}.loss_balancing must be one of {list(LOSS_BALANCERS)}, got {self.loss_balancing!r}"
            )
        if self.gradient_surgery not in GRADIENT_SURGERY:
            raise ValueError(
                f"{where}.gradient_surgery must be one of {list(GRADIENT_SURGERY)}, got {self.gradient_surgery!r}"
            )
        if self.uncertainty_factors not in UNCERTAINTY_FACTORS:
            raise ValueError(
                f"{where}.uncertainty_factors must be one of {list(UNCERTAINTY_FACTORS)}, "
                f"got {self.uncertainty_factors!r}"
            )
        number("dwa_temperature", self.dwa_temperature, 0, strict=True)
        number("gradnorm_alpha", self.gradnorm_alpha, 0, strict=False)
        for name in ("dwa_window", "memory_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}.{name} must be a positive integer, got {value!r}")
        if self.gradnorm_layer is not None and not isinstance(self.gradnorm_layer, str):
            raise ValueError(f"{where}.gradnorm_layer must be a parameter name, got {self.gradnorm_layer!r}")
        if not self.joint:
            for name in ("loss_balancing", "gradient_surgery"):
                if getattr(self, name) != getattr(MultitaskConfig, name):
                    raise ValueError(
                        f"{where}.{name}: {getattr(self, name)!r} needs {where}.step_mode: joint "
                        "(a single-task step has one loss and one gradient)"
                    )

    @classmethod
    def from_value(cls, value: Any) -> "MultitaskConfig":
        """A config from None (defaults), a `MultitaskConfig` or a mapping of its fields."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            known = set(cls.__dataclass_fields__)
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"multitask: unknown field(s) {unknown}; known fields are {sorted(known)}")
            return cls(**value)
        raise ValueError(f"multitask: expected a mapping or a MultitaskConfig, got {type(value).__name__}")

    def build_loss_balancer(self, tasks: Mapping[str, Any]) -> LossBalancer:
        """The `LossBalancer` of `loss_balancing` for `tasks` (task name -> `TaskSpec`)."""
        names = list(tasks)
        if self.loss_balancing == "dwa":
            return DynamicWeightAverage(names, temperature=self.dwa_temperature, window=self.dwa_window)
        if self.loss_balancing == "uncertainty":
            kendall = self.uncertainty_factors == "kendall"
            factors = kendall_factors({t: s.kind for t, s in tasks.items()}) if kendall else None
            return UncertaintyWeighting(names, factors=factors)
        if self.loss_balancing == "gradnorm":
            return GradNorm(names, alpha=self.gradnorm_alpha)
        return LOSS_BALANCERS[self.loss_balancing](names)


# ------------------------------------------------------------------------------------------------ data
class JointBatchSampler(Sampler[list[int]]):
    """Yields joint batches of indices into a `MultiTaskDataset`: `batch_size` rows of every task, in
    task order, per micro-batch of each process.

    There are `num_steps * num_processes * gradient_accumulation_steps` joint batches; Accelerate deals
    consecutive ones out to the processes. Each task's rows come in a seeded random order reshuffled after
    every pass over the task (length-grouped with `lengths`), so the batches are a pure function of the
    seed and their position: every run with the same seed, and a resumed run, sees the same batches.
    `self.batch_size` is the joint batch's length (tasks x `batch_size`), which Accelerate's
    `BatchSamplerShard` checks each batch against.
    """

    def __init__(
        self,
        task_sizes: Mapping[str, int],
        task_offsets: Mapping[str, int],
        batch_size: int,
        num_steps: int,
        num_processes: int = 1,
        gradient_accumulation_steps: int = 1,
        seed: int = 0,
        lengths: Optional[Mapping[str, Sequence[int]]] = None,
    ):
        empty = [t for t, n in task_sizes.items() if n <= 0]
        if empty:
            raise ValueError(f"joint batches: task(s) {empty} have no training examples")
        self.tasks = list(task_sizes)
        self.task_sizes = dict(task_sizes)
        self.task_offsets = dict(task_offsets)
        self.per_task_batch_size = batch_size
        self.batch_size = batch_size * len(self.tasks)
        self.num_batches = num_steps * num_processes * gradient_accumulation_steps
        self.seed = seed
        self.lengths = dict(lengths or {})

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        streams = [
            RowStream(
                np.arange(self.task_sizes[t]),
                self.task_offsets[t],
                [self.seed, 1 + i],
                self.per_task_batch_size,
                self.lengths.get(t),
            )
            for i, t in enumerate(self.tasks)
        ]
        for _ in range(self.num_batches):
            yield [index for stream in streams for index in stream.take(self.per_task_batch_size)]


class JointCollator:
    """Collates a joint batch: rows grouped by their "task" field (in order of first appearance), each
    group by the single-task `collator`, as {"task_batches": {task: batch}}."""

    def __init__(self, collator: Callable[[Sequence[dict]], dict]):
        self.collator = collator

    def __call__(self, features: Sequence[dict]) -> dict[str, Any]:
        groups: dict[str, list] = {}
        for feature in features:
            groups.setdefault(feature["task"], []).append(feature)
        return {JOINT_KEY: {task: self.collator(rows) for task, rows in groups.items()}}


# -------------------------------------------------------------------------------------------- gradients
def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` averaged over all processes, in place (unchanged in a single process)."""
    world = _world_size()
    if world > 1:
        dist.all_reduce(tensor)
        tensor.div_(world)
    return tensor


def default_gradnorm_layer(named_parameters) -> str:
    """The name of the last encoder layer's FFN output weight (`layer.<L-1>.output.dense.weight`): GradNorm's
    "last shared layer". Only trainable weights count (the encoder must be trained)."""
    best, best_index = None, -1
    for name, param in named_parameters:
        parts = name.split(".")
        if not param.requires_grad or "pals_" in name or not name.endswith("output.dense.weight"):
            continue
        if "attention" in parts or "layer" not in parts or not parts[parts.index("layer") + 1].isdigit():
            continue
        index = int(parts[parts.index("layer") + 1])
        if index > best_index:
            best, best_index = name, index
    if best is None:
        raise ValueError(
            "loss_balancing gradnorm needs a trainable shared layer: train the encoder (freeze_encoder: false) "
            "or name one with multitask.gradnorm_layer"
        )
    return best


class JointTraining:
    """The gradient side of joint steps: loss balancing, gradient surgery, reduction across processes.

    Args:
        config: the `MultitaskConfig`.
        tasks: task name -> `TaskSpec`, in the order of every per-task tensor.
        seed: seeds PCGrad's orders and the episodic memory.
        memory: the `EpisodicMemory` (A-GEM), with its batches already on the training device.
        autocast: a context manager factory for forward passes (the Trainer's `compute_loss_context_manager`).
    """

    def __init__(
        self,
        config: MultitaskConfig,
        tasks: Mapping[str, Any],
        seed: int = 0,
        memory: Optional[EpisodicMemory] = None,
        autocast: Callable[[], Any] = contextlib.nullcontext,
    ):
        self.config = config
        self.tasks = list(tasks)
        self.balancer = config.build_loss_balancer(tasks)
        self.surgery = build_gradient_surgery(config.gradient_surgery, seed)
        if self.surgery is not None and self.surgery.needs_memory and memory is None:
            raise ValueError(f"gradient_surgery {config.gradient_surgery!r} needs an episodic memory")
        self.memory = memory
        self.autocast = autocast
        self._micro_batches = 0
        self._loss_sum: Optional[torch.Tensor] = None
        self._task_grads: Optional[torch.Tensor] = None  # T x N, accumulated over the step's micro-batches
        self._present: Optional[torch.Tensor] = None  # T x (number of parameters): task i reached parameter k
        self._gradnorm_name: Optional[str] = None
        #: Sums since the last log: {"steps", "grad_conflicts"}.
        self.stats: dict[str, float] = {"steps": 0, "grad_conflicts": 0}

    # ------------------------------------------------------------------------------------ the step
    def start_micro_batch(self) -> None:
        """Call before each micro-batch's losses are computed: at the first micro-batch of an optimizer step
        the balancer's gradients are cleared (the Trainer only clears the model's) and `start_step` runs
        (GradNorm renormalises its weights after the last update)."""
        if self._micro_batches == 0:
            self.balancer.zero_grad(set_to_none=True)
            self.balancer.start_step()

    def backward(
        self,
        module: torch.nn.Module,
        losses: Mapping[str, torch.Tensor],
        terms: Mapping[str, torch.Tensor],
        accumulation_steps: int,
        sync: bool,
        step: int,
    ) -> None:
        """Backward of one micro-batch (`terms` from `balancer.terms(losses)`); with `sync` (the step's last
        micro-batch) the gradients are reduced, surgery applied, and `p.grad` holds the step's update.
        `start_micro_batch` must have been called before `terms` were computed."""
        self._micro_batches += 1
        current = torch.stack([losses[t].detach().double() for t in self.tasks])
        self._loss_sum = current if self._loss_sum is None else self._loss_sum + current
        scale = 1.0 / accumulation_steps
        if isinstance(self.balancer, GradNorm):
            self.balancer.backward_weights(losses, self._gradnorm_parameter(module), scale=scale)
        params = [p for p in module.parameters() if p.requires_grad]
        if self.surgery is None:
            (torch.stack(list(terms.values())).sum() * scale).backward()
        else:
            own = [p for p in self.balancer.parameters() if p.requires_grad]
            for i, task in enumerate(self.tasks):
                grads = torch.autograd.grad(terms[task] * scale, params + own, allow_unused=True)
                self._accumulate(i, params, grads[: len(params)])
                for p, g in zip(own, grads[len(params) :]):
                    if g is not None:
                        p.grad = g if p.grad is None else p.grad + g
        if sync:
            self._finish_step(module, params, step)

    def _finish_step(self, module: torch.nn.Module, params: list, step: int) -> None:
        mean_losses = all_reduce_mean(self._loss_sum / self._micro_batches)
        if self.surgery is None:
            _all_reduce_grads(params)
        else:
            self._apply_surgery(module, params, step)
        _all_reduce_grads([p for p in self.balancer.parameters() if p.requires_grad])
        self.balancer.observe(mean_losses)
        self.stats["steps"] += 1
        self._micro_batches = 0
        self._loss_sum = None

    def _accumulate(self, task_index: int, params: list, grads: Sequence[Optional[torch.Tensor]]) -> None:
        if self._task_grads is None:
            total = sum(p.numel() for p in params)
            self._task_grads = torch.zeros(len(self.tasks), total, dtype=params[0].dtype, device=params[0].device)
            self._present = torch.zeros(len(self.tasks), len(params), dtype=torch.bool)
        offset = 0
        for k, (p, g) in enumerate(zip(params, grads)):
            if g is not None:
                self._task_grads[task_index, offset : offset + p.numel()] += g.reshape(-1)
                self._present[task_index, k] = True
            offset += p.numel()

    def _apply_surgery(self, module: torch.nn.Module, params: list, step: int) -> None:
        grads, present = self._task_grads, self._present
        memory_grads = self._memory_gradients(module, params) if self.surgery.needs_memory else None
        if memory_grads is None:
            all_reduce_mean(grads)
        else:  # one all-reduce for both
            both = all_reduce_mean(torch.cat([grads, memory_grads]))
            grads, memory_grads = both[: len(self.tasks)], both[len(self.tasks) :]
        reached = present.sum(0)
        columns, offset = [], 0
        for k, p in enumerate(params):
            if reached[k] >= 2:
                columns.append(torch.arange(offset, offset + p.numel(), device=grads.device))
            offset += p.numel()
        update = grads.sum(0)
        if columns:
            shared = torch.cat(columns)
            task_grads = grads[:, shared]
            self.stats["grad_conflicts"] += count_conflicts(task_grads)
            mem = memory_grads[:, shared] if memory_grads is not None else None
            update[shared] = self.surgery.combine(task_grads, step, mem)
        offset = 0
        for k, p in enumerate(params):
            if reached[k] > 0:
                chunk = update[offset : offset + p.numel()].view_as(p)
                p.grad = chunk if p.grad is None else p.grad + chunk
            offset += p.numel()
        self._task_grads = None
        self._present = None

    def _memory_gradients(self, module: torch.nn.Module, params: list) -> torch.Tensor:
        """T x N: the gradient of each task's loss on its episodic memory, at the current weights."""
        rows = []
        for task in self.tasks:
            with self.autocast():
                loss = module(**self.memory.batches[task])["loss"]
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            flat = [(g if g is not None else torch.zeros_like(p)).reshape(-1) for p, g in zip(params, grads)]
            rows.append(torch.cat(flat))
        return torch.stack(rows)

    def _gradnorm_parameter(self, module: torch.nn.Module) -> torch.Tensor:
        named = dict(module.named_parameters())
        if self._gradnorm_name is None:
            name = self.config.gradnorm_layer or default_gradnorm_layer(module.named_parameters())
            if name not in named:
                raise ValueError(f"multitask.gradnorm_layer: the model has no parameter {name!r}")
            if not named[name].requires_grad:
                raise ValueError(f"multitask.gradnorm_layer: parameter {name!r} is frozen")
            self._gradnorm_name = name
        return named[self._gradnorm_name]

    # --------------------------------------------------------------------------------------- logging
    def log_values(self) -> dict[str, float]:
        """The current loss weights and, with surgery, the mean number of conflicting task pairs per step
        since the last call."""
        logs: dict[str, float] = {}
        weights = self.balancer.loss_weights()
        if weights is not None:
            logs.update({f"loss_weight_{t}": round(float(w), 6) for t, w in zip(self.tasks, weights)})
        if self.surgery is not None and self.stats["steps"]:
            logs["grad_conflicts"] = self.stats["grad_conflicts"] / self.stats["steps"]
        self.stats = {"steps": 0, "grad_conflicts": 0}
        return logs


def _all_reduce_grads(params: Sequence[torch.Tensor]) -> None:
    """Average the gradients of `params` over the processes (one flattened all-reduce). A parameter whose
    gradient is None stays None: in a joint step every rank reaches the same parameters."""
    if _world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = all_reduce_mean(torch.cat([g.reshape(-1) for g in grads]))
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
