"""Pooling, task heads and task losses.

A head maps the encoder's token states (one sequence, or two for a siamese pair) to the task's
prediction: logits for classification, one logit for binary tasks, a score for regression. A task may
also own an extra transformer layer on top of the shared encoder (`TaskSpec.top_layer`); it lives in its
head, so it is saved in heads.safetensors and trained with the heads' learning rate.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .tasks import TaskSpec

#: linear_cosine, binary tasks: the initial s and t of the logit s * (cos - t).
LINEAR_COSINE_SCALE = 20.0
LINEAR_COSINE_THRESHOLD = 0.5


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
      (Sentence-BERT's classification objective). For `pair_encoding: both` two linear parts (one
      dropout module, a fresh mask per part): `packed_classifier` on the packed row's pooled vector and
      `siamese_classifier` on [u, v, |u - v|, u * v]; the output is the mean of their logits.
    - cosine: cos(u, v) of a siamese pair, reported scaled to [.., label_max] (Sentence-BERT's
      regression objective); it has no parameters of its own.
    - cosine_relu: ReLU(cos(u, v)) * label_max, so a negative similarity scores 0: the STS head of the
      CS224N reports 002 and 003 ("cosine similarity x 5 with ReLU"); no parameters.
    - linear_cosine: a linear projection W (d -> d, shared by both sentences, initialised to the identity
      so it starts out as "cosine"), then c = cos(W u, W v). For a binary task the logit is s * (c - t),
      with s = exp(log_scale) (initially 20) and the threshold t (initially 0.5) learnable: the scale and
      bias (b = -s t) of a logistic regression on c, parametrised so Adam moves both at a useful speed
      (a raw bias of about -10 would barely move at lr 1e-3). For regression the score is c * label_max.
      "A linear layer plus cosine" for paraphrase detection is CS224N report 003's head; report 002
      projects both sentences before the cosine for STS.

    `top_layer` is the task's extra transformer layer (`TaskSpec.top_layer`), a copy of the encoder's
    last layer made by `MultiTaskModel`; `MultiTaskModel.encode` runs it on the token states before pooling.
    """

    def __init__(self, task: TaskSpec, hidden_size: int, top_layer: Optional[nn.Module] = None):
        super().__init__()
        self.task = task
        if task.top_layer and top_layer is None:
            raise ValueError(f"task {task.name!r} has top_layer: true, but no layer was given to TaskHead")
        # A copy of a frozen encoder layer comes with requires_grad=False; the task's own copy trains.
        self.top_layer = top_layer.requires_grad_(True) if task.top_layer else None
        if task.head == "linear":
            self.dropout = nn.Dropout(task.dropout)
            if task.is_both:
                self.packed_classifier = _linear(hidden_size, task.num_labels)
                self.siamese_classifier = _linear(hidden_size * 4, task.num_labels)
            else:
                self.classifier = _linear(hidden_size * 4 if task.is_siamese else hidden_size, task.num_labels)
        elif task.head == "linear_cosine":
            self.projection = nn.Linear(hidden_size, hidden_size)
            nn.init.eye_(self.projection.weight)
            nn.init.zeros_(self.projection.bias)
            if task.kind == "binary":
                self.log_scale = nn.Parameter(torch.tensor(math.log(LINEAR_COSINE_SCALE)))
                self.threshold = nn.Parameter(torch.tensor(LINEAR_COSINE_THRESHOLD))

    def forward(
        self, pooled: torch.Tensor, pooled_b: Optional[torch.Tensor] = None, packed: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Raw outputs: [batch, num_labels] logits, or [batch] logits/scores for binary and regression.

        `pooled` is the sentence vector (single sentence, packed pair) or u, `pooled_b` v of a siamese pair;
        for `pair_encoding: both`, `pooled`, `pooled_b` are u, v and `packed` the packed pair's vector."""
        head = self.task.head
        if self.task.is_both:
            if pooled_b is None or packed is None:
                raise ValueError(
                    f"task {self.task.name!r} has pair_encoding 'both': its head needs u, v and the packed vector"
                )
            return (self.packed_part(packed) + self.siamese_part(pooled, pooled_b)) / 2
        if head in ("cosine", "cosine_relu"):
            cosine = F.cosine_similarity(pooled, pooled_b, dim=-1)
            return (F.relu(cosine) if head == "cosine_relu" else cosine) * self.task.label_max
        if head == "linear_cosine":
            cosine = F.cosine_similarity(self.projection(pooled), self.projection(pooled_b), dim=-1)
            if self.task.kind == "binary":
                return self.log_scale.exp() * (cosine - self.threshold)
            return cosine * self.task.label_max
        features = pooled if pooled_b is None else siamese_features(pooled, pooled_b)
        return self._shaped(self.classifier(self.dropout(features)))

    def packed_part(self, packed: torch.Tensor) -> torch.Tensor:
        """`pair_encoding: both`: the packed part's logits (dropout + `packed_classifier`)."""
        return self._shaped(self.packed_classifier(self.dropout(packed)))

    def siamese_part(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """`pair_encoding: both`: the siamese part's logits (dropout + `siamese_classifier` on [u, v, |u-v|, u*v])."""
        return self._shaped(self.siamese_classifier(self.dropout(siamese_features(u, v))))

    def _shaped(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.task.kind == "classification" else logits.squeeze(-1)


def siamese_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[u, v, |u - v|, u * v], the features of a siamese pair (Sentence-BERT)."""
    return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)


def _linear(width: int, num_labels: int) -> nn.Linear:
    layer = nn.Linear(width, num_labels)
    nn.init.normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


def pearson_loss(outputs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - Pearson r between a batch of scores and their labels (CS224N report 004's STS loss).

    0 for perfectly correlated scores, 1 for uncorrelated, 2 for anti-correlated; unchanged when the
    scores are shifted or scaled by a positive factor, so it trains the ranking the metric measures but
    not the scale of the scores. Needs at least two examples with different labels to say anything.
    """
    x = outputs.float().reshape(-1)
    y = labels.to(x.dtype).reshape(-1)
    x = x - x.mean()
    y = y - y.mean()
    r = (x * y).sum() / (x.norm() * y.norm()).clamp(min=eps)
    return 1.0 - r


#: CoSENT's scale on cosine-like scores in [0, 1] (sentence-transformers' CoSENTLoss default).
COSENT_SCALE = 20.0


def cosent_loss(outputs: torch.Tensor, labels: torch.Tensor, scale: float = COSENT_SCALE) -> torch.Tensor:
    """CoSENT (Su, 2022; sentence-transformers' `CoSENTLoss`): log(1 + sum over pairs with y_i > y_j of
    exp(scale * (s_j - s_i))).

    It asks only that an example with a higher label get a higher score than one with a lower label, so
    like 1 - Pearson it trains the ranking the STS metrics measure, but per pair of examples, with a
    margin set by `scale`. `outputs` are scores in [0, 1] (the caller divides by `label_max`). Written out
    here because sentence-transformers' class takes a SentenceTransformer model, not a batch of scores.
    """
    s = outputs.float().reshape(-1) * scale
    y = labels.to(s.dtype).reshape(-1)
    diffs = s[None, :] - s[:, None]  # [i, j] = s_j - s_i
    diffs = diffs.masked_fill(~(y[:, None] > y[None, :]), float("-inf"))  # pairs with y_i > y_j
    zero = torch.zeros(1, dtype=s.dtype, device=s.device)
    return torch.logsumexp(torch.cat([zero, diffs.reshape(-1)]), dim=0)


def task_loss(task: TaskSpec, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task's loss on the head's raw outputs. Regression losses are computed on labels scaled to
    [0, 1] so that tasks with different label ranges have comparable loss magnitudes."""
    if task.loss == "cross_entropy":
        return F.cross_entropy(outputs, labels.long(), label_smoothing=task.label_smoothing)
    if task.loss == "bce":
        return F.binary_cross_entropy_with_logits(outputs, labels.to(outputs.dtype))
    if task.loss == "mse":
        scale = task.label_max
        return F.mse_loss(outputs / scale, labels.to(outputs.dtype) / scale)
    if task.loss == "one_minus_pearson":
        return pearson_loss(outputs, labels)
    if task.loss == "cosent":
        return cosent_loss(outputs / task.label_max, labels)
    raise ValueError(f"task {task.name!r}: unknown loss {task.loss!r}")


def predictions(task: TaskSpec, outputs: torch.Tensor) -> torch.Tensor:
    """Labels (classification, binary) or scores (regression) from the head's raw outputs."""
    if task.kind == "classification":
        return outputs.argmax(-1)
    if task.kind == "binary":
        return (outputs > 0).long()
    return outputs
