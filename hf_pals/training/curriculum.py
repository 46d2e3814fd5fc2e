"""The hybrid curriculum (CS224N report 002, "Multi-BERT"): sequential and joint epochs alternate.

The schedule (`hf_pals.data.sampling.HybridTaskSchedule`) says, per optimizer step, whether the step is
sequential (one task; only that task's own parameters train) or joint (a batch of every task, all
parameters train, the largest task downsampled). This module carries it out on top of joint mode
(`hf_pals.training.joint`):

- `HybridBatchSampler` yields, per micro-batch, a one-task batch at a sequential step and a joint batch
  (`per_device_train_batch_size` rows of every task) at a joint step, the largest task's rows drawn from
  the epoch's pool. Its `batch_size` is None, which tells Accelerate that batch lengths vary.
- `HybridCollator` collates a one-task batch as usual and a joint batch as `JointCollator` does.
- `HybridTrainer` routes joint batches to the joint step (loss balancing, gradient surgery, reduction
  across processes: `JointTraining`) and one-task batches to a one-task step that keeps only the current
  task's gradients: the others are *dropped* (set to None) before the gradients are reduced and clipped.

Holding parameters still without flipping `requires_grad`: DDP builds its gradient buckets once, from the
parameters that require grad, and changing that set mid-run breaks it (PEFT's `set_adapter`, which flips
it, must not run per step either). Dropping (None) rather than zeroing matters with AdamW: a zero gradient
still moves a parameter through its momentum and weight decay, while a parameter whose gradient is None is
skipped by the optimizer, i.e. truly frozen for that step. The clipping norm is the current task's alone.

Distributed (DDP): like joint steps, the one-task steps run forward and backward on the unwrapped model
and average the kept gradients over the processes themselves (one flattened all-reduce, at the step's
last micro-batch; every rank trains the same task at the same step, so every rank keeps the same
parameters). Mixing steps reduced by DDP's own reducer with joint steps does not work: the joint
backward, run outside the DDP wrapper, still marks every parameter as used in DDP's bookkeeping, and the
next DDP-reduced step then fails on the other tasks' missing gradients. So DDP's reducer is never used
in a hybrid run, and only the current task's gradients are communicated at sequential steps.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ..data.sampling import HybridTaskSchedule, RowStream
from .joint import JOINT_KEY, JointCollator, MultitaskConfig, _all_reduce_grads
from .trainer import MultiTaskTrainer


class HybridBatchSampler(Sampler[list[int]]):
    """Batches for a `HybridTaskSchedule`: per micro-batch of each process, `batch_size` rows of the
    step's task (sequential step) or of every task, in task order (joint step).

    Batch b belongs to optimizer step b // (num_processes * gradient_accumulation_steps), as in
    `MultiTaskBatchSampler`. At sequential steps a task's rows come from all its data (one stream per task
    across the run); in each joint epoch from that epoch's `joint_pool`. The batches are a pure function
    of the seed and their position, so a resumed run sees the same ones.
    """

    def __init__(
        self,
        schedule: HybridTaskSchedule,
        task_offsets: Mapping[str, int],
        batch_size: int,
        num_steps: int,
        num_processes: int = 1,
        gradient_accumulation_steps: int = 1,
        lengths: Optional[Mapping[str, Sequence[int]]] = None,
    ):
        self.schedule = schedule
        self.task_offsets = dict(task_offsets)
        self.per_task_batch_size = batch_size
        self.batch_size = None  # one-task and joint batches differ in length (see Accelerate's BatchSamplerShard)
        self.num_steps = num_steps
        self.batches_per_step = num_processes * gradient_accumulation_steps
        self.lengths = {t: np.asarray(v) for t, v in (lengths or {}).items()}

    def __len__(self) -> int:
        return self.num_steps * self.batches_per_step

    def _stream(self, task: str, rows: np.ndarray, *key: int) -> RowStream:
        index = self.schedule.tasks.index(task)
        return RowStream(
            rows, self.task_offsets[task], [self.schedule.seed, 1 + index, *key], self.per_task_batch_size,
            self.lengths.get(task),
        )

    def __iter__(self) -> Iterator[list[int]]:
        schedule = self.schedule
        sizes = dict(zip(schedule.tasks, schedule.sizes))
        sequential = {t: self._stream(t, np.arange(sizes[t])) for t in schedule.tasks}
        joint: dict[str, RowStream] = {}
        joint_epoch = None
        for batch in range(len(self)):
            step = batch // self.batches_per_step
            if not schedule.is_joint(step):
                yield sequential[schedule.task_at(step)].take(self.per_task_batch_size)
                continue
            epoch = schedule.epoch_of(step)
            if epoch != joint_epoch:
                joint = {t: self._stream(t, schedule.joint_pool(t, epoch), 0, epoch) for t in schedule.tasks}
                joint_epoch = epoch
            yield [i for t in schedule.tasks for i in joint[t].take(self.per_task_batch_size)]


class HybridCollator:
    """A one-task batch collated by `collator`; a batch with rows of several tasks by `JointCollator`."""

    def __init__(self, collator: Callable[[Sequence[dict]], dict]):
        self.collator = collator
        self.joint = JointCollator(collator)

    def __call__(self, features: Sequence[dict]) -> dict[str, Any]:
        if len({feature["task"] for feature in features}) > 1:
            return self.joint(features)
        return self.collator(features)


def task_parameters(model: nn.Module, tasks: Sequence[str]) -> dict[str, list[nn.Parameter]]:
    """Each task's own parameters: those under key `task` of any `ModuleDict` keyed by task names (the
    PAL modules `pals_*[task]`, `heads[task]` with its top layer, and any other per-task module dict).
    Without adapters that is the head and top layer alone. A parameter shared by several layers (V_E/V_D)
    is listed once."""
    owned: dict[str, dict[int, nn.Parameter]] = {t: {} for t in tasks}
    for module in model.modules():
        if isinstance(module, nn.ModuleDict) and len(module) and set(module.keys()) <= set(tasks):
            for task, sub in module.items():
                owned[task].update({id(p): p for p in sub.parameters()})
    return {t: list(params.values()) for t, params in owned.items()}


def drop_gradients_except(parameters: Sequence[nn.Parameter], keep: Sequence[nn.Parameter]) -> int:
    """Set `.grad = None` on every parameter of `parameters` not in `keep`; returns how many had one."""
    keep_ids = {id(p) for p in keep}
    dropped = 0
    for param in parameters:
        if id(param) not in keep_ids and param.grad is not None:
            param.grad = None
            dropped += 1
    return dropped


class HybridTrainer(MultiTaskTrainer):
    """`MultiTaskTrainer` for the hybrid curriculum (`sampling: {name: hybrid, steps_per_epoch: N}`).

    Joint epochs use joint mode (`multitask.step_mode: joint`, the default here), with its loss balancing
    and gradient surgery; sequential epochs are one-task steps that train the task's adapter, head and top
    layer only (see the module docstring for how the rest is held still under DDP). Takes
    `MultiTaskTrainer`'s arguments.
    """

    def __init__(self, *args, multitask: Any = None, **kwargs):
        config = MultitaskConfig.from_value(multitask if multitask is not None else {"step_mode": "joint"})
        if not config.joint:
            raise ValueError("the hybrid curriculum's even epochs are joint: set multitask.step_mode: joint")
        super().__init__(*args, multitask=config, **kwargs)
        if not isinstance(self.schedule, HybridTaskSchedule):
            raise ValueError(f"HybridTrainer needs sampling name 'hybrid', got {type(self.schedule).__name__}")
        model = self.accelerator.unwrap_model(self.model)
        self._task_params = task_parameters(model, list(self.train_datasets))
        empty = [t for t, params in self._task_params.items() if not params]
        if empty:
            raise ValueError(
                f"hybrid curriculum: task(s) {empty} own no parameters (no adapter, and a head without parameters "
                "and no top layer), so their sequential epochs would train nothing"
            )

    def task_steps(self) -> dict[str, int]:
        """Steps that train each task, of the steps trained (fewer than max_steps after early stopping)."""
        steps = range(self.state.global_step or self.args.max_steps)
        return {t: sum(1 for s in steps if t in self.schedule.tasks_at(s)) for t in self.train_datasets}

    def get_train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset
        sampler = HybridBatchSampler(
            self.schedule,
            dataset.offsets,
            **self._batch_layout(),
        )
        return self._prepared_loader(sampler, HybridCollator(self.data_collator))

    def training_step(self, model, inputs, num_items_in_batch=None):
        """A joint batch: `MultiTaskTrainer`'s joint step. A one-task batch: forward and backward on the
        unwrapped model; at the step's last micro-batch every gradient but the current task's is dropped
        and the rest averaged over the processes (see the module docstring)."""
        if JOINT_KEY in inputs:
            return super().training_step(model, inputs, num_items_in_batch)
        task = self.schedule.trains_only(self.state.global_step)
        module = self.accelerator.unwrap_model(model)
        module.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            loss = self.compute_loss(module, inputs)
        del inputs
        steps = getattr(self, "current_gradient_accumulation_steps", None) or self.args.gradient_accumulation_steps
        (loss / steps).backward()
        if self.accelerator.sync_gradients:
            params = [p for p in module.parameters() if p.requires_grad]
            if task is not None:
                drop_gradients_except(params, self._task_params[task])
            _all_reduce_grads(params)
        return loss.detach() / steps

    def _log_sampling_epoch(self) -> None:
        """At the first step of each epoch, logs its number, its phase and each task's share of its steps."""
        step = self.state.global_step
        epoch = self.schedule.epoch_of(step)
        if step != self.schedule.epoch_steps(epoch)[0] or epoch == self._logged_sampling_epoch:
            return
        self._logged_sampling_epoch = epoch
        shares = self.schedule.probabilities(epoch)
        self.log(
            {
                "sampling_epoch": epoch,
                "curriculum_joint": int(self.schedule.is_joint_epoch(epoch)),
                **{f"sampling_p_{t}": round(p, 6) for t, p in shares.items()},
            }
        )
