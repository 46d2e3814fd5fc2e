"""Pooling, task heads and task losses.

A head maps the encoder's token states (one sequence, or two for a siamese pair) to the task's
prediction: logits for classification, one logit for binary tasks, a score for regression.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .tasks import TaskSpec


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vector from token states: the [CLS] state, the masked mean, or the masked max."""
    if pooling == "cls":
        return hidden_states[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    if pooling == "mean":
        return (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if pooling == "max":
        return hidden_states.masked_fill(mask == 0, torch.finfo(hidden_states.dtype).min).max(1).values
    raise ValueError(f"unknown pooling {pooling!r}")


class TaskHead(nn.Module):
    """The head of one task, built from its `TaskSpec`.

    - linear: dropout + linear on the pooled vector; for siamese pairs on [u, v, |u - v|, u * v]
      (Sentence-BERT's classification objective).
    - cosine: cos(u, v) of a siamese pair, reported scaled to [.., label_max] (Sentence-BERT's
      regression objective); it has no parameters of its own.
    """

    def __init__(self, task: TaskSpec, hidden_size: int):
        super().__init__()
        self.task = task
        if task.head == "linear":
            width = hidden_size * 4 if task.is_siamese else hidden_size
            self.dropout = nn.Dropout(task.dropout)
            self.classifier = nn.Linear(width, task.num_labels)
            nn.init.normal_(self.classifier.weight, std=0.02)
            nn.init.zeros_(self.classifier.bias)

    def forward(self, pooled: torch.Tensor, pooled_b: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Raw outputs: [batch, num_labels] logits, or [batch] logits/scores for binary and regression."""
        if self.task.head == "cosine":
            return F.cosine_similarity(pooled, pooled_b, dim=-1) * self.task.label_max
        features = pooled if pooled_b is None else torch.cat(
            [pooled, pooled_b, (pooled - pooled_b).abs(), pooled * pooled_b], dim=-1
        )
        logits = self.classifier(self.dropout(features))
        return logits if self.task.kind == "classification" else logits.squeeze(-1)


def task_loss(task: TaskSpec, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task's loss on the head's raw outputs. Regression losses are computed on labels scaled to
    [0, 1] so that tasks with different label ranges have comparable loss magnitudes."""
    if task.loss == "cross_entropy":
        return F.cross_entropy(outputs, labels.long())
    if task.loss == "bce":
        return F.binary_cross_entropy_with_logits(outputs, labels.to(outputs.dtype))
    if task.loss == "mse":
        scale = task.label_max
        return F.mse_loss(outputs / scale, labels.to(outputs.dtype) / scale)
    raise ValueError(f"task {task.name!r}: unknown loss {task.loss!r}")


def predictions(task: TaskSpec, outputs: torch.Tensor) -> torch.Tensor:
    """Labels (classification, binary) or scores (regression) from the head's raw outputs."""
    if task.kind == "classification":
        return outputs.argmax(-1)
    if task.kind == "binary":
        return (outputs > 0).long()
    return outputs
