"""Model selection of a run: which split picks the best checkpoint, early stopping, and what the report says.

A recipe selects a model when `training.load_best_model_at_end` is true (the best checkpoint's weights
become the final bundle) or when it has an `early_stopping` section (transformers' `EarlyStoppingCallback`).
Both compare the periodic evaluations' `metric_for_best_model`: "overall" (the default here) or a
task metric as the trainer logs it, such as "sst_accuracy" or "sts_pearson" (transformers adds "eval_").

Which rows those evaluations score is the recipe's choice, and it must be explicit:

- `data.validation_fraction` / `data.validation_examples` carve a seeded validation split out of the
  train sets (`hf_pals.data.validation`); it selects, and the dev files are read once, for the final
  report (`data.selection_split: validation`, the default then);
- without one, selecting on the dev files needs `data.selection_split: dev`: the dev score of the
  report is then the score of the checkpoint the dev files chose, an optimistic figure.

`run.train` writes `report["model_selection"]`: the metric, the best step and its value, and the split.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Optional

from .data.sources import eval_set_name, task_splits
from .data.validation import check_validation_counts, check_validation_fraction

#: `data.selection_split` values: the carved validation split, or the dev (eval_split) files.
SELECTION_SPLITS = ("validation", "dev")
#: `metric_for_best_model` when a selecting recipe does not set one.
DEFAULT_SELECTION_METRIC = "overall"


@dataclasses.dataclass
class EarlyStoppingConfig:
    """`early_stopping: {patience: 3, threshold: 0.0}`: stop once `patience` evaluations in a row did not
    improve `metric_for_best_model` by more than `threshold` (transformers' `EarlyStoppingCallback`)."""

    patience: int = 1
    threshold: float = 0.0

    def validate(self, where: str = "early_stopping") -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(f"{where}.patience must be a whole number of evaluations >= 1, got {self.patience!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or self.threshold < 0:
            raise ValueError(f"{where}.threshold must be a number >= 0, got {self.threshold!r}")

    def callback(self):
        """The `transformers.EarlyStoppingCallback` with these settings."""
        from transformers import EarlyStoppingCallback

        return EarlyStoppingCallback(early_stopping_patience=self.patience, early_stopping_threshold=self.threshold)


def metric_name(metric: str) -> str:
    """`metric` without transformers' "eval_" prefix ("eval_sst_accuracy" -> "sst_accuracy")."""
    return metric[len("eval_") :] if metric.startswith("eval_") else metric


def check_selection_metric(metric: str, set_names: Iterable[str], where: str) -> None:
    """A ValueError naming `where` unless `metric` (with or without "eval_") is "overall" or a metric of one
    of the evaluation sets `set_names` ("<set>_<metric>", e.g. "sst_accuracy"). MultiTaskTrainer's
    evaluation reports no loss, so "loss" (transformers' default) is refused with a hint."""
    name = metric_name(metric)
    sets = sorted(set_names)
    examples = ", ".join([DEFAULT_SELECTION_METRIC, *(f"{s}_<metric>" for s in sets[:3])])
    if name.endswith("loss"):
        raise ValueError(
            f"{where}: metric_for_best_model is {metric!r}, but the multi-task evaluation reports task metrics "
            f"and overall, not a loss: use one of {examples}"
        )
    if name != DEFAULT_SELECTION_METRIC and not any(name.startswith(f"{s}_") for s in sets):
        raise ValueError(
            f"{where}: metric_for_best_model {metric!r} is not overall or a metric of the evaluation sets {sets}: "
            f"use one of {examples}"
        )


def has_validation(data) -> bool:
    """True when the recipe's `data` section carves a validation split out of the train sets."""
    return data.validation_fraction is not None or bool(data.validation_examples)


def evaluation_split(data) -> str:
    """The split the periodic evaluations (and model selection) score: "validation" or "dev"."""
    return "validation" if has_validation(data) else "dev"


def selects_model(recipe) -> bool:
    """True when the recipe picks a checkpoint or stops early by an evaluation metric."""
    return bool(recipe.training.get("load_best_model_at_end")) or recipe.early_stopping is not None


def check_recipe_selection(recipe, source: str) -> None:
    """Checks the recipe's validation split, `data.selection_split` and `early_stopping` (built in place
    into an `EarlyStoppingConfig`), and sets the selection defaults in `recipe.training`:
    `metric_for_best_model: overall`, and with early stopping `restore_callback_states_from_checkpoint`
    (so a resumed run keeps the patience it had used). Raises ValueError naming `source` and the field."""
    data = recipe.data
    if data.validation_fraction is not None and data.validation_examples:
        raise ValueError(f"{source}: data: give validation_fraction or validation_examples, not both")
    if data.validation_fraction is not None:
        data.validation_fraction = check_validation_fraction(data.validation_fraction, f"{source}: data.validation_fraction")
    data.validation_examples = check_validation_counts(data.validation_examples or {}, f"{source}: data.validation_examples")
    trained = [t for t in recipe.tasks if t not in recipe.freeze]
    untrained = sorted(set(data.validation_examples) - set(trained))
    if untrained:
        raise ValueError(
            f"{source}: data.validation_examples: task(s) {untrained} are not trained tasks of the recipe {trained}, "
            "so they have no train set to carve a validation split from"
        )
    if data.selection_split is not None and data.selection_split not in SELECTION_SPLITS:
        raise ValueError(f"{source}: data.selection_split must be one of {list(SELECTION_SPLITS)}, got {data.selection_split!r}")
    if data.selection_split == "validation" and not has_validation(data):
        raise ValueError(
            f"{source}: data.selection_split is validation but there is no validation split: set "
            "data.validation_fraction or data.validation_examples"
        )
    if data.selection_split == "dev" and has_validation(data):
        raise ValueError(
            f"{source}: data.selection_split is dev, but the recipe also carves a validation split "
            "(data.validation_fraction / validation_examples) that would then go unused: choose one"
        )
    if recipe.early_stopping is not None:
        values = recipe.early_stopping
        if isinstance(values, dict):
            known = {f.name for f in dataclasses.fields(EarlyStoppingConfig)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ValueError(f"{source}: early_stopping: unknown field(s) {unknown}; known fields are {sorted(known)}")
            values = EarlyStoppingConfig(**values)
        if not isinstance(values, EarlyStoppingConfig):
            raise ValueError(f"{source}: early_stopping: expected a mapping {{patience: N, threshold: x}}, got {values!r}")
        values.validate(f"{source}: early_stopping")
        recipe.early_stopping = values
    if not selects_model(recipe):
        return
    what = "training.load_best_model_at_end" if recipe.training.get("load_best_model_at_end") else "early_stopping"
    if not has_validation(data) and data.selection_split != "dev":
        raise ValueError(
            f"{source}: {what} selects by evaluation scores: say which split selects. Set data.validation_fraction "
            "(or data.validation_examples) to select on a split carved from the train sets, or data.selection_split: "
            "dev to select on the dev files (their score in the report is then optimistic)"
        )
    if recipe.training.get("eval_strategy", "no") in ("no", None):
        raise ValueError(f"{source}: {what} needs periodic evaluation: set training.eval_strategy: steps and eval_steps")
    recipe.training.setdefault("metric_for_best_model", DEFAULT_SELECTION_METRIC)
    if recipe.early_stopping is not None:
        recipe.training.setdefault("restore_callback_states_from_checkpoint", True)
    if has_validation(data):
        sets = list(data.validation_examples or trained)
    else:
        sets = [eval_set_name(t, s, i) for t, d in recipe.task_data().items() for i, s in enumerate(task_splits(d, "eval"))]
    check_selection_metric(str(recipe.training["metric_for_best_model"]), sets, f"{source}: training")


def early_stopping_callbacks(recipe) -> list:
    """The run's early-stopping callback (a list of one), or an empty list."""
    return [recipe.early_stopping.callback()] if recipe.early_stopping is not None else []


def best_step(state, metric: str) -> Optional[int]:
    """The step of the best evaluation: the trainer state's `best_global_step` (set when checkpoints are
    saved), else the first logged evaluation whose `metric` equals the state's `best_metric`."""
    if state.best_global_step:
        return int(state.best_global_step)
    key = metric if metric.startswith("eval_") else f"eval_{metric}"
    for entry in state.log_history:
        if entry.get(key) == state.best_metric:
            return int(entry["step"])
    return None


def selection_report(trainer, split: str, selection_sets: dict[str, Any]) -> Optional[dict[str, Any]]:
    """`report["model_selection"]` of a finished run, or None when the run compared no evaluations.

    `{"metric": "overall", "greater_is_better": True, "best_step": 8, "best_value": 0.61, "split":
    "validation", "examples": {task: rows}, "best_checkpoint": "checkpoint-8", "restored_best": True,
    "steps_trained": 8, "max_steps": 8}`; `restored_best` says whether the saved bundle holds the best
    checkpoint's weights (`load_best_model_at_end`), `steps_trained` < `max_steps` that the run stopped early.
    """
    args, state = trainer.args, trainer.state
    if args.metric_for_best_model is None or state.best_metric is None:
        return None
    checkpoint = state.best_model_checkpoint
    return {
        "metric": metric_name(args.metric_for_best_model),
        "greater_is_better": bool(args.greater_is_better),
        "best_step": best_step(state, args.metric_for_best_model),
        "best_value": float(state.best_metric),
        "split": split,
        "examples": {task: len(dataset) for task, dataset in selection_sets.items()},
        "best_checkpoint": os.path.basename(checkpoint) if checkpoint else None,
        "restored_best": bool(args.load_best_model_at_end and checkpoint),
        "steps_trained": int(state.global_step),
        "max_steps": int(args.max_steps),
    }
