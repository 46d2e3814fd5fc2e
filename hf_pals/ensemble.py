"""Prediction ensembles: several trained bundles of the same tasks scored as one model.

`hf-pals evaluate RUN/seed-1 RUN/seed-2 RUN/seed-3` runs every bundle on the same rows and combines their
outputs per task: the mean of the class probabilities (classification), of the positive-class probability
(binary), or of the scores (regression). This is the classic output ensemble (Dietterich, 2000; the seed
ensembles of Lakshminarayanan et al., 2017). Unlike a weight soup (`hf_pals.soup`), which is one model and
does not pay off for bundles fine-tuned from different seeds (README, "Quality over seeds"), an ensemble
costs one forward pass per member at prediction time.

Each member predicts with its own collator, so members may differ in anything that leaves a task's
outputs comparable (the pair encoding, the adapter, the base); they must agree on the tasks and, per
task, on the kind, the number of labels, the label range and the text columns.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from .evaluation import predict_outputs
from .heads import predictions as head_predictions

#: TaskSpec fields on which the members of an ensemble must agree (they make outputs comparable).
AGREEING_FIELDS = ("kind", "num_labels", "label_max", "text_columns")


class EnsembleError(ValueError):
    """The members cannot form an ensemble (no members, or their tasks disagree)."""


def combine_outputs(task_spec, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The ensemble's raw outputs for one task from its members' raw outputs (same rows, same order).

    Classification: log of the mean softmax probabilities (a logit vector whose softmax is that mean);
    binary: the logit of the mean sigmoid probability; regression: the mean score. One member's outputs
    come back unchanged, so an ensemble of one predicts exactly as its member does.
    """
    if not outputs:
        raise EnsembleError(f"task {task_spec.name!r}: no member outputs to combine")
    if len(outputs) == 1:
        return outputs[0]
    stacked = torch.stack([o.float() for o in outputs])
    if task_spec.kind == "classification":
        return torch.softmax(stacked, dim=-1).mean(0).log()
    if task_spec.kind == "binary":
        return torch.logit(torch.sigmoid(stacked).mean(0), eps=1e-7)
    return stacked.mean(0)


class Ensemble:
    """Bundles `(model, collator)` predicting together; `tasks` and `predict` as the evaluation path needs.

    `names` (e.g. the bundles' directories) are only used in error messages and reports.
    """

    def __init__(self, members: Sequence[tuple[Any, Any]], names: Sequence[str] = ()):
        if not members:
            raise EnsembleError("an ensemble needs at least one model")
        self.members = list(members)
        self.names = list(names) or [f"member {i}" for i in range(len(self.members))]
        _check_agreement(self.members, self.names)

    @property
    def tasks(self) -> dict:
        """The first member's task specs (every member agrees on what matters for combining)."""
        return self.members[0][0].tasks

    def outputs(self, rows, task: str, batch_size: int = 128) -> torch.Tensor:
        """The combined raw outputs of every member for `rows` (`combine_outputs`)."""
        rows = list(rows)
        per_member = [predict_outputs(model, collator, rows, task, batch_size=batch_size) for model, collator in self.members]
        return combine_outputs(self.tasks[task], per_member)

    def predict(self, dataset, task: str, batch_size: int = 128) -> np.ndarray:
        """Labels (classification, binary) or scores (regression) of `task` for every row, in row order."""
        return head_predictions(self.tasks[task], self.outputs(dataset, task, batch_size)).float().numpy()


def _check_agreement(members, names) -> None:
    """Refuse members whose tasks differ, naming the member and the field."""
    first_tasks = members[0][0].tasks
    for (model, _), name in zip(members[1:], names[1:]):
        if set(model.tasks) != set(first_tasks):
            raise EnsembleError(
                f"{name}: its tasks {sorted(model.tasks)} differ from {names[0]}'s {sorted(first_tasks)}"
            )
        for task, spec in model.tasks.items():
            for field in AGREEING_FIELDS:
                ours, theirs = getattr(spec, field), getattr(first_tasks[task], field)
                if ours != theirs:
                    raise EnsembleError(
                        f"{name}: task {task!r} has {field} {ours!r}, {names[0]} has {theirs!r}; "
                        "an ensemble's members must agree on it"
                    )

