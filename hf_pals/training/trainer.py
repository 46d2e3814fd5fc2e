"""`MultiTaskTrainer`: the transformers `Trainer`, one task per step, annealed task sampling.

Like sentence-transformers' trainer it overrides a handful of hooks and keeps the loop, logging,
checkpointing, schedulers and Accelerate integration of the framework:

- `get_train_dataloader`: batches come from `MultiTaskBatchSampler`, one task per optimizer step, drawn
  by annealed sampling (p_i ∝ N_i^alpha) from a schedule that is a pure function of (seed, step);
- `compute_loss`: routes the batch to its task's adapter, head and loss; stops on a non-finite loss;
- `create_optimizer`: separate learning rates for the encoder, the adapters and the heads;
- `evaluate`: scores every task with `evaluate` metrics, plus the overall score;
- `_save` / `_load_from_checkpoint`: checkpoints are `MultiTaskModel` bundles (safetensors).
"""

from __future__ import annotations


import os
from collections import defaultdict
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments

from ..data.multitask import MultiTaskCollator, MultiTaskDataset
from ..data.sampling import AnnealedTaskSchedule, MultiTaskBatchSampler
from ..evaluation import evaluate_tasks

TRAINING_ARGS_NAME = "training_args.bin"


class NonFiniteLossError(RuntimeError):
    """A task's loss became NaN or infinite; the run stops so the last good checkpoint is kept."""


class MultiTaskTrainer(Trainer):
    """Trains a `MultiTaskModel` on a dict of task name -> `datasets.Dataset`.

    Args:
        model: the `MultiTaskModel`.
        args: `TrainingArguments`; `max_steps` must be set (an epoch is `steps_per_epoch` steps).
        train_datasets / eval_datasets: task name -> dataset with the task's text columns and "label".
        tokenizer: used by the default `MultiTaskCollator` and saved with checkpoints.
        steps_per_epoch: optimizer steps per annealing epoch (default: the whole run is one epoch).
        learning_rates: optional {"encoder": lr, "adapters": lr, "heads": lr}; missing ones use
            `args.learning_rate`.
        max_length: truncation length of the default collator.
    """

    def __init__(
        self,
        model,
        args: TrainingArguments,
        train_datasets: dict[str, Any],
        eval_datasets: Optional[dict[str, Any]] = None,
        tokenizer=None,
        data_collator=None,
        steps_per_epoch: Optional[int] = None,
        learning_rates: Optional[dict[str, float]] = None,
        max_length: int = 128,
        eval_batch_size: Optional[int] = None,
        **kwargs,
    ):
        if args.max_steps is None or args.max_steps <= 0:
            raise ValueError("MultiTaskTrainer needs TrainingArguments.max_steps > 0 (epochs are counted in steps)")
        if args.load_best_model_at_end:
            raise ValueError("load_best_model_at_end is not supported by MultiTaskTrainer")
        unknown = sorted(set(train_datasets) - set(model.tasks))
        if unknown:
            raise ValueError(f"train_datasets has task(s) {unknown} that the model lacks; it has {sorted(model.tasks)}")
        unknown_groups = sorted(set(learning_rates or {}) - {"encoder", "adapters", "heads"})
        if unknown_groups:
            raise ValueError(f"learning_rates: unknown group(s) {unknown_groups}; use encoder, adapters, heads")
        args.remove_unused_columns = False
        if args.ddp_find_unused_parameters is None:
            # Only one task's adapter and head take part in a step; DDP must not wait for the others.
            args.ddp_find_unused_parameters = True
        self.train_datasets = dict(train_datasets)
        self.eval_datasets = dict(eval_datasets or {})
        self.steps_per_epoch = steps_per_epoch or args.max_steps
        self.learning_rates = dict(learning_rates or {})
        self.eval_batch_size = eval_batch_size or args.per_device_eval_batch_size
        data_collator = data_collator or MultiTaskCollator(tokenizer, model.tasks, max_length=max_length)
        self.schedule = AnnealedTaskSchedule(
            {t: len(d) for t, d in self.train_datasets.items()}, self.steps_per_epoch, args.max_steps, seed=args.seed
        )
        super().__init__(
            model=model,
            args=args,
            train_dataset=MultiTaskDataset(self.train_datasets),
            eval_dataset=self.eval_datasets or None,
            data_collator=data_collator,
            processing_class=tokenizer,
            **kwargs,
        )
        self._task_loss_sum: dict[str, float] = defaultdict(float)
        self._task_steps: dict[str, int] = defaultdict(int)

    # ----------------------------------------------------------------------------------------- data
    def get_train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset
        sampler = MultiTaskBatchSampler(
            self.schedule,
            dataset.offsets,
            batch_size=self.args.per_device_train_batch_size,
            num_steps=self.args.max_steps,
            num_processes=self.args.world_size,
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    # ----------------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        task = inputs["task"]
        outputs = model(**inputs)
        loss = outputs["loss"]
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"task {task!r} gave a non-finite loss ({loss.item()}) at step {self.state.global_step + 1}; "
                f"stopping. The last good checkpoint (if any) is in {self.args.output_dir}"
            )
        if model.training:
            self._task_loss_sum[task] += float(loss.detach())
            self._task_steps[task] += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: Optional[float] = None) -> None:
        """Adds the mean loss and the number of batches of each task since the last log."""
        if "loss" in logs and self._task_steps:
            for task in sorted(self._task_steps):
                steps = self._task_steps[task]
                logs[f"loss_{task}"] = round(self._task_loss_sum[task] / steps, 4)
                logs[f"batches_{task}"] = steps
            self._task_loss_sum.clear()
            self._task_steps.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------ optimizer
    def parameter_group(self, name: str) -> str:
        """Which learning-rate group a parameter belongs to: "heads", "adapters" or "encoder"."""
        if name.startswith("heads.") or ".heads." in name:
            return "heads"
        if ".pals_" in name:
            return "adapters"
        return "encoder"

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[str, bool], list] = defaultdict(list)
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                groups[(self.parameter_group(name), name in decay)].append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if with_decay else 0.0,
                "lr": self.learning_rates.get(group, self.args.learning_rate),
            }
            for (group, with_decay), params in sorted(groups.items())
        ]
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    # ----------------------------------------------------------------------------------- evaluation
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Scores every task of `eval_dataset` (a dict of task -> dataset; default `eval_datasets`)."""
        datasets = eval_dataset if eval_dataset is not None else self.eval_datasets
        if not datasets:
            return {}
        model = self.accelerator.unwrap_model(self.model)
        report = evaluate_tasks(model, self.data_collator, datasets, batch_size=self.eval_batch_size)
        metrics = {}
        for task, values in report.items():
            if isinstance(values, dict):
                metrics.update({f"{metric_key_prefix}_{task}_{k}": v for k, v in values.items()})
            else:
                metrics[f"{metric_key_prefix}_{task}"] = values
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ---------------------------------------------------------------------------------- checkpoints
    def _save(self, output_dir: Optional[str] = None, state_dict=None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(output_dir, tokenizer=self.processing_class)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        model.load_weights(resume_from_checkpoint)


