"""`MultiTaskTrainer`: the transformers `Trainer`, one task per step, annealed task sampling.

Like sentence-transformers' trainer it overrides a handful of hooks and keeps the loop, logging,
checkpointing, schedulers and Accelerate integration of the framework:

- `get_train_dataloader`: batches come from `MultiTaskBatchSampler`, one task per optimizer step, drawn
  from a task schedule (annealed by default, see `hf_pals.data.sampling`) that is a pure function of
  (seed, step);
- `compute_loss`: routes the batch to its task's adapter, head and loss; stops on a non-finite loss;
  at the first step of each sampling epoch it logs the epoch's task probabilities
  (`sampling_epoch`, `sampling_p_<task>`), so they reach the trainer state and every `report_to`;
- `create_optimizer`: separate learning rates for the encoder, the adapters and the heads, and optionally
  layer-wise decay of the encoder's rate (`learning_rates.layer_decay`, see `hf_pals.training.layer_decay`);
- `evaluate`: scores every task with `evaluate` metrics, plus the overall score;
- `_save` / `_load_from_checkpoint`: checkpoints are `MultiTaskModel` bundles (safetensors);
- `_load_best_model`: `load_best_model_at_end` restores the best checkpoint's bundle the same way, chosen by
  `metric_for_best_model`: "overall" or a task metric as `evaluate` logs it ("sst_accuracy", "sts_pearson").

With `multitask.step_mode="joint"` every step trains every task instead (see `hf_pals.training.joint`):
`get_train_dataloader` yields one joint batch (a batch of each task) per micro-batch, `compute_loss`
combines the tasks' losses with the configured loss balancing, and `training_step` hands the gradients to
`JointTraining` (gradient surgery, reduction across processes). Learnable balancing parameters get their
own optimizer group ("loss_balancing") and the balancing state is saved with the optimizer in every
checkpoint (`joint_state.safetensors`), so joint runs resume exactly too.

With a `WeightAveragingCallback` among the callbacks (`weight_averaging:` in a recipe, see
`hf_pals.training.weight_averaging`) the averaged weights are saved next to the optimizer state in every
checkpoint (`weight_averaging.safetensors`) and loaded with it on resume.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections import defaultdict
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments

from ..data.length_grouping import text_lengths
from ..data.multitask import MultiTaskCollator, MultiTaskDataset
from ..data.sampling import MultiTaskBatchSampler, SamplingSpec, build_task_schedule
from ..evaluation import evaluate_tasks
from ..model_selection import check_selection_metric
from .gradient_surgery import EpisodicMemory
from .joint import JOINT_KEY, JointBatchSampler, JointCollator, JointTraining, MultitaskConfig
from .layer_decay import LAYER_DECAY_KEY, check_layer_decay, decay_exponent, num_encoder_layers
from .weight_averaging import find_weight_averaging

logger = logging.getLogger(__name__)

TRAINING_ARGS_NAME = "training_args.bin"
#: Loss-balancing state of a joint run, saved next to the optimizer state in every checkpoint.
JOINT_STATE_NAME = "joint_state.safetensors"
#: Set (to anything) to make every process append the task and a digest of each training batch, then a
#: digest of its final weights, to OUTPUT_DIR/task_log.rank<k>.jsonl: a check that distributed ranks agree.
TASK_LOG_ENV = "HF_PALS_TASK_LOG"
#: The learning-rate groups `learning_rates` may set (besides `layer_decay`).
LEARNING_RATE_GROUPS = ("encoder", "adapters", "heads", "loss_balancing")


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A short SHA-256 of the tensors' bytes (equal tensors on two processes give equal digests)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class NonFiniteLossError(RuntimeError):
    """A task's loss became NaN or infinite; the run stops so the last good checkpoint is kept."""


class MultiTaskTrainer(Trainer):
    """Trains a `MultiTaskModel` on a dict of task name -> `datasets.Dataset`.

    Args:
        model: the `MultiTaskModel`.
        args: `TrainingArguments`; `max_steps` must be set (an epoch is `steps_per_epoch` steps). With
            `load_best_model_at_end` (or early stopping), `metric_for_best_model` is "overall" or
            "<eval set>_<metric>" ("sst_accuracy"); the evaluation reports no loss.
        train_datasets / eval_datasets: task name -> dataset with the task's text columns and "label".
        tokenizer: used by the default `MultiTaskCollator` and saved with checkpoints.
        steps_per_epoch: optimizer steps per sampling epoch (default: the whole run is one epoch).
        learning_rates: optional {"encoder": lr, "adapters": lr, "heads": lr}; missing ones use
            `args.learning_rate`. A model without adapters has no "adapters" parameters (its top
            layers are in "heads"), so that rate then goes unused. "layer_decay": ξ (0 < ξ <= 1) scales
            the encoder's rate by depth (layer i of L: ξ^(L-1-i), embeddings: ξ^L; see
            `hf_pals.training.layer_decay`); adapters and heads keep their rates.
        max_length: truncation length of the default collator.
        sampling: the task schedule: a name ("annealed", the default, "proportional", "sqrt",
            "temperature", "uniform", "round_robin"), "module:function", a function
            `fn(step, epoch, num_epochs, sizes) -> probabilities`, a recipe-style mapping
            {"name": ..., "steps_per_epoch": ..., "temperature": ...}, or a `TaskSchedule`.
        group_by_length: batch rows of similar length together within each task (less padding).
        multitask: a `MultitaskConfig` (or a mapping of its fields): `step_mode` "single" (default) or
            "joint", and in joint mode `loss_balancing` and `gradient_surgery` with their settings. In
            joint mode `per_device_train_batch_size` is per task and `sampling` is not used; a
            "loss_balancing" entry of `learning_rates` sets the learnable balancing parameters' rate.
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
        sampling: SamplingSpec = None,
        group_by_length: bool = False,
        multitask: Any = None,
        **kwargs,
    ):
        if args.max_steps is None or args.max_steps <= 0:
            raise ValueError("MultiTaskTrainer needs TrainingArguments.max_steps > 0 (epochs are counted in steps)")
        unknown = sorted(set(train_datasets) - set(model.tasks))
        if unknown:
            raise ValueError(f"train_datasets has task(s) {unknown} that the model lacks; it has {sorted(model.tasks)}")
        unknown_groups = sorted(set(learning_rates or {}) - {*LEARNING_RATE_GROUPS, LAYER_DECAY_KEY})
        if unknown_groups:
            raise ValueError(
                f"learning_rates: unknown group(s) {unknown_groups}; use {', '.join(LEARNING_RATE_GROUPS)} "
                f"(and {LAYER_DECAY_KEY})"
            )
        check_layer_decay((learning_rates or {}).get(LAYER_DECAY_KEY))
        self.multitask = MultitaskConfig.from_value(multitask)
        self.multitask.validate()
        if self.multitask.joint and args.fp16:
            raise ValueError("multitask.step_mode joint does not support fp16 loss scaling; use bf16 or fp32")
        args.remove_unused_columns = False
        if args.ddp_find_unused_parameters is None:
            # Only one task's adapter and head take part in a step; DDP must not wait for the others.
            args.ddp_find_unused_parameters = True
        self.train_datasets = dict(train_datasets)
        self.eval_datasets = dict(eval_datasets or {})
        if args.metric_for_best_model is not None and self.eval_datasets:
            # transformers sets "loss" when load_best_model_at_end has no metric; this evaluation has none
            check_selection_metric(args.metric_for_best_model, self.eval_datasets, "TrainingArguments")
        self.learning_rates = dict(learning_rates or {})
        self.group_by_length = group_by_length
        self.eval_batch_size = eval_batch_size or args.per_device_eval_batch_size
        data_collator = data_collator or MultiTaskCollator(tokenizer, model.tasks, max_length=max_length)
        self.schedule = build_task_schedule(
            sampling,
            {t: len(d) for t, d in self.train_datasets.items()},
            args.max_steps,
            seed=args.seed,
            steps_per_epoch=steps_per_epoch,
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
        self._logged_sampling_epoch: Optional[int] = None
        self.joint: Optional[JointTraining] = self._build_joint_training() if self.multitask.joint else None

    def _build_joint_training(self) -> JointTraining:
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise ValueError("multitask.step_mode joint supports one process or DDP, not FSDP or DeepSpeed")
        model = self.accelerator.unwrap_model(self.model)
        tasks = {t: model.tasks[t] for t in self.train_datasets}
        memory = None
        if self.multitask.gradient_surgery == "agem":
            collate = self.data_collator
            if getattr(collate, "augment", None) is not None:  # the memory holds the real examples
                collate = copy.copy(collate)
                collate.augment = None
            memory = EpisodicMemory(self.train_datasets, self.multitask.memory_size, self.args.seed, collate)
            memory.batches = {t: self._prepare_input(b) for t, b in memory.batches.items()}
        joint = JointTraining(
            self.multitask, tasks, seed=self.args.seed, memory=memory, autocast=self.compute_loss_context_manager
        )
        joint.balancer.to(self.args.device)
        return joint

    def task_steps(self) -> dict[str, int]:
        """How many of the run's optimizer steps train each task (all of them in joint mode): of the steps
        trained so far once training ran (fewer than `max_steps` when it stopped early), else of `max_steps`."""
        steps = self.state.global_step or self.args.max_steps
        if self.joint is not None:
            return dict.fromkeys(self.train_datasets, steps)
        return {t: sum(1 for s in range(steps) if self.schedule.task_at(s) == t) for t in self.train_datasets}

    # ----------------------------------------------------------------------------------------- data
    def get_train_dataloader(self) -> DataLoader:
        if self.joint is not None:
            return self._joint_train_dataloader()
        dataset = self.train_dataset
        sampler = MultiTaskBatchSampler(
            self.schedule,
            dataset.offsets,
            **self._batch_layout(),
        )
        return self._prepared_loader(sampler, self.data_collator)

    def _batch_layout(self) -> dict[str, Any]:
        """The batch sampler arguments every step mode shares: batch size, steps, processes,
        accumulation, and the row lengths when batches are length-grouped."""
        return dict(
            batch_size=self.args.per_device_train_batch_size,
            num_steps=self.args.max_steps,
            num_processes=self.args.world_size,
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
            lengths=self._row_lengths() if self.group_by_length else None,
        )

    def _prepared_loader(self, batch_sampler, collate_fn) -> DataLoader:
        """A DataLoader over the training tasks with this batch sampler, prepared by Accelerate (which
        deals batch i to process i mod num_processes)."""
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=batch_sampler,
            collate_fn=collate_fn,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def _joint_train_dataloader(self) -> DataLoader:
        """Joint mode: one joint batch (`per_device_train_batch_size` rows of every task) per micro-batch."""
        dataset = self.train_dataset
        sampler = JointBatchSampler(
            dataset.sizes(),
            dataset.offsets,
            seed=self.args.seed,
            **self._batch_layout(),
        )
        return self._prepared_loader(sampler, JointCollator(self.data_collator))

    def _row_lengths(self) -> dict[str, list[int]]:
        """Per task, the text length of each training row, for `group_by_length`."""
        model = self.accelerator.unwrap_model(self.model)
        return {
            task: text_lengths(dataset, model.tasks[task].text_columns, siamese=model.tasks[task].is_siamese)
            for task, dataset in self.train_datasets.items()
        }

    # ----------------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The task's loss; in training, plus λ_s R_s (SMART, `hf_pals.training.smart`) for the tasks with a
        weight in `self.smart` (a `SMARTConfig`; set the attribute after building the trainer), and R-Drop's
        two-pass loss (`hf_pals.training.r_drop`) for the tasks with a weight in `self.r_drop` (an `RDropConfig`);
        in training, times the task's `loss_weight` (`TaskSpec`).
        A joint batch gives the balanced combination of every task's loss (`_compute_joint_loss`)."""
        if JOINT_KEY in inputs:
            return self._compute_joint_loss(model, inputs[JOINT_KEY], return_outputs)
        task = inputs["task"]
        spec = self.accelerator.unwrap_model(model).tasks[task]
        smart = getattr(self, "smart", None)
        smart_weight = smart.weight(task) if smart is not None and model.training else 0.0
        if smart_weight > 0:
            from .smart import capture_rng_state, smart_penalty

            rng_state = capture_rng_state()
        outputs = model(**inputs)
        loss = outputs["loss"]
        r_drop = getattr(self, "r_drop", None)
        r_drop_weight = r_drop.weight(task) if r_drop is not None and model.training else 0.0
        if r_drop_weight > 0:  # a second pass with its own dropout masks (hf_pals.training.r_drop)
            from .r_drop import r_drop_loss

            loss = r_drop_loss(outputs, model(**inputs), spec.kind, r_drop_weight, spec.label_max)
        if smart_weight > 0:
            penalty = smart_penalty(
                self.accelerator.unwrap_model(model),
                inputs,
                outputs["logits"],
                smart,
                rng_state=rng_state,
                seed=self.args.seed,
                step=self.state.global_step,
            )
            loss = loss + smart_weight * penalty
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"task {task!r} gave a non-finite loss ({loss.item()}) at step {self.state.global_step + 1}; "
                f"stopping. The last good checkpoint (if any) is in {self.args.output_dir}"
            )
        if model.training:
            self._task_loss_sum[task] += float(loss.detach())
            self._task_steps[task] += 1
            self._log_sampling_epoch()
            if os.environ.get(TASK_LOG_ENV):
                self._write_task_log(step=self.state.global_step, task=task, batch=tensor_digest(inputs["input_ids"]))
            if spec.loss_weight != 1.0:  # after the log: the logged per-task losses stay comparable across recipes
                loss = loss * spec.loss_weight
        return (loss, outputs) if return_outputs else loss

    def _compute_joint_loss(self, model, batches: dict[str, dict], return_outputs: bool = False):
        """Joint mode: each task's loss (`compute_loss` on its batch, through the unwrapped model: DDP
        reduction is `JointTraining`'s), combined by the loss balancer. The outputs are the per-task
        `losses` and balanced `terms` (which sum to the loss)."""
        if self.joint is None:
            raise ValueError("a joint batch needs a trainer built with multitask step_mode 'joint'")
        module = self.accelerator.unwrap_model(model)
        losses = {task: self.compute_loss(module, batches[task]) for task in self.joint.tasks}
        terms = self.joint.balancer.terms(losses)
        loss = torch.stack(list(terms.values())).sum()
        return (loss, {"losses": losses, "terms": terms}) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        """`Trainer.training_step`; in joint mode the backward (loss balancing, gradient surgery, reduction
        across processes) is `JointTraining.backward`."""
        if self.joint is None:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        self.joint.start_micro_batch()
        with self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        del inputs
        steps = getattr(self, "current_gradient_accumulation_steps", None) or self.args.gradient_accumulation_steps
        self.joint.backward(
            self.accelerator.unwrap_model(model),
            outputs["losses"],
            outputs["terms"],
            accumulation_steps=steps,
            sync=self.accelerator.sync_gradients,
            step=self.state.global_step,
        )
        return loss.detach() / steps

    def _log_sampling_epoch(self) -> None:
        """At the first step of a sampling epoch, logs its number and the schedule's p of each task."""
        if self.joint is not None:  # joint steps train every task: no task sampling
            return
        step = self.state.global_step
        epoch = self.schedule.epoch_of(step)
        if step != self.schedule.epoch_steps(epoch)[0] or epoch == self._logged_sampling_epoch:
            return
        self._logged_sampling_epoch = epoch
        probabilities = self.schedule.probabilities(epoch)
        self.log({"sampling_epoch": epoch, **{f"sampling_p_{t}": round(p, 6) for t, p in probabilities.items()}})

    def _write_task_log(self, **record) -> None:
        """Appends a line to this process's OUTPUT_DIR/task_log.rank<k>.jsonl (see `TASK_LOG_ENV`)."""
        os.makedirs(self.args.output_dir, exist_ok=True)
        path = os.path.join(self.args.output_dir, f"task_log.rank{self.args.process_index}.jsonl")
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def train(self, *args, **kwargs):
        """`Trainer.train`; with `TASK_LOG_ENV` set, then logs a digest of this process's final weights."""
        output = super().train(*args, **kwargs)
        if os.environ.get(TASK_LOG_ENV):
            weights = self.accelerator.unwrap_model(self.model).state_dict()
            self._write_task_log(step=self.state.global_step, weights=tensor_digest(*weights.values()))
        return output

    def log(self, logs: dict[str, float], start_time: Optional[float] = None) -> None:
        """Adds the mean loss and the number of batches of each task since the last log."""
        if "loss" in logs and self._task_steps:
            for task in sorted(self._task_steps):
                steps = self._task_steps[task]
                logs[f"loss_{task}"] = round(self._task_loss_sum[task] / steps, 4)
                logs[f"batches_{task}"] = steps
            self._task_loss_sum.clear()
            self._task_steps.clear()
        if "loss" in logs and self.joint is not None:
            logs.update(self.joint.log_values())  # loss_weight_<task>, grad_conflicts
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
        """One optimizer group per (learning-rate group, weight decay or not); with `layer_decay` < 1 the
        encoder's groups are split further by depth, each with lr_encoder * layer_decay ** exponent
        (`hf_pals.training.layer_decay.decay_exponent`). Without it (or with 1) the groups are the same as
        before layer decay existed, so older checkpoints' optimizer states still load."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        layer_decay = check_layer_decay(self.learning_rates.get(LAYER_DECAY_KEY))
        if layer_decay == 1.0:
            layer_decay = None
        num_layers = num_encoder_layers(self.accelerator.unwrap_model(opt_model)) if layer_decay else 0
        groups: dict[tuple[str, int, bool], list] = defaultdict(list)
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                group = self.parameter_group(name)
                exponent = decay_exponent(name, num_layers) if layer_decay and group == "encoder" else 0
                groups[(group, exponent, name in decay)].append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if with_decay else 0.0,
                "lr": self.learning_rates.get(group, self.args.learning_rate) * (layer_decay or 1.0) ** exponent,
            }
            for (group, exponent, with_decay), params in sorted(groups.items())
        ]
        balancing = [p for p in self.joint.balancer.parameters() if p.requires_grad] if self.joint else []
        if balancing:  # learnable loss weights (uncertainty, GradNorm): no weight decay
            lr = self.learning_rates.get("loss_balancing", self.args.learning_rate)
            param_groups.append({"params": balancing, "weight_decay": 0.0, "lr": lr})
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
        # Numbers only: the report's strings ("overall_formula", "main_metrics") would reach the loggers
        # and `hf-pals plot` as eval curves.
        for task, values in report.items():
            if isinstance(values, dict):
                metrics.update({f"{metric_key_prefix}_{task}_{k}": v for k, v in values.items() if _is_number(v)})
            elif _is_number(values):
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

    def _load_best_model(self) -> None:
        """`load_best_model_at_end`: the best checkpoint is a bundle; its weights are loaded like a resume's."""
        checkpoint = self.state.best_model_checkpoint
        logger.info(f"Loading the best model from {checkpoint} ({self.args.metric_for_best_model}: {self.state.best_metric})")
        self._load_from_checkpoint(checkpoint)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """Also saves the joint mode's loss-balancing state (learnable weights, loss histories) and the
        weight average, if any (before transformers writes trainer_state.json: a checkpoint a resume can pick
        always has it)."""
        super()._save_optimizer_and_scheduler(output_dir)
        averaging = find_weight_averaging(self.callback_handler.callbacks)
        if averaging is not None and averaging.averaged is not None and self.args.should_save:
            averaging.save(output_dir)
        state = self.joint.balancer.state_dict() if self.joint is not None else {}
        if state and self.args.should_save:
            os.makedirs(output_dir, exist_ok=True)
            tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
            save_file(tensors, os.path.join(output_dir, JOINT_STATE_NAME), metadata={"format": "pt"})

    def _load_optimizer_and_scheduler(self, checkpoint: Optional[str]) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        averaging = find_weight_averaging(self.callback_handler.callbacks)
        if checkpoint is not None and averaging is not None:
            averaging.load(checkpoint, self.accelerator.unwrap_model(self.model), step=self.state.global_step)
        if checkpoint is None or self.joint is None or not self.joint.balancer.state_dict():
            return
        path = os.path.join(checkpoint, JOINT_STATE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: checkpoint {checkpoint} has no state for loss_balancing "
                f"{self.multitask.loss_balancing!r} (was it written by a run with another multitask section?)"
            )
        self.joint.balancer.load_state_dict(load_file(path))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
