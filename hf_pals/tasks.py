"""What a task is: its name, kind, text columns, pair encoding, head, loss and metric.

A `TaskSpec` is plain data (it round-trips through JSON in a saved bundle and through YAML in a recipe);
`heads.py` turns it into modules and a loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

KINDS = ("classification", "binary", "regression")
PAIR_ENCODINGS = ("packed", "siamese", "both")
POOLINGS = ("cls", "mean", "max")
HEADS = ("linear", "cosine", "cosine_relu", "linear_cosine")
#: Heads that compare the two sentence vectors of a siamese pair, so need one.
SIAMESE_HEADS = ("cosine", "cosine_relu", "linear_cosine")
LOSSES = ("cross_entropy", "bce", "mse", "one_minus_pearson", "cosent")
#: Losses that compare a batch's regression scores with each other (Pearson r, pairwise order), so suit
#: regression tasks only.
RANKING_LOSSES = ("one_minus_pearson", "cosent")

_DEFAULT_LOSS = {"classification": "cross_entropy", "binary": "bce", "regression": "mse"}
_DEFAULT_METRIC = {"classification": "accuracy", "binary": "accuracy", "regression": "pearsonr"}
#: Metric modules shipped in `hf_pals.metrics`, and the task kinds each suits.
METRICS = {
    "accuracy": ("classification", "binary"),
    "f1": ("classification", "binary"),
    "matthews_correlation": ("classification", "binary"),
    "pearsonr": ("regression",),
    "spearmanr": ("regression",),
}


@dataclass
class TaskSpec:
    """One task of a multi-task model.

    Args:
        name: task and adapter name (e.g. "sst").
        kind: "classification" (softmax over `num_labels`), "binary" (one logit) or "regression" (a score).
        num_labels: classes of a classification task; 1 otherwise.
        text_columns: one column for single sentences, two for sentence pairs.
        pair_encoding: "packed" encodes a pair as `[CLS] a [SEP] b [SEP]` (the paper); "siamese" encodes
            each sentence alone (Sentence-BERT), which suits a base trained for cosine similarity;
            "both" encodes every pair both ways (three encoder rows per example: the packed pair, then
            each sentence alone) and averages the logits of two linear head parts, one on the packed
            row's pooled vector and one on the siamese [u, v, |u-v|, u*v]; the loss is computed once,
            on that mean. "both" takes head "linear" only.
        pooling: "cls", "mean" (over the attention mask) or "max".
        head: "linear" (dropout + linear on the pooled vector, or on [u, v, |u-v|, u*v] for siamese
            pairs, or the mean of both for "both" pairs), or one of the siamese-only heads (details in `heads.TaskHead`):
            "cosine" (cos(u, v) scaled to `label_max`), "cosine_relu" (ReLU(cos(u, v)) * label_max, the
            CS224N reports' STS head) or "linear_cosine" (a shared linear projection W, then cos(Wu, Wv):
            a logit s * (cos - t) with learnable s, t for binary tasks, cos * label_max for regression).
        loss: "cross_entropy", "bce", "mse", "one_minus_pearson" (1 - Pearson r of the batch's scores
            and labels; regression only) or "cosent" (CoSENT, Su 2022, sentence-transformers' CoSENTLoss:
            for every pair of examples with labels y_i > y_j, log(1 + sum exp(20 (s_j - s_i))) on the
            scores s scaled to [0, 1] by `label_max`; regression only); defaults by kind.
        label_smoothing: for cross_entropy, the mass spread evenly over the classes (torch's
            `cross_entropy(label_smoothing=...)`, Szegedy et al., 2016); 0 = none.
        label_max: the top of a regression label's range (5 for STS); labels lie in [0, label_max].
        metric: the task's main metric, or a list of metrics whose first is the main one (`metric: [f1,
            accuracy]`): "accuracy", "f1", "matthews_correlation" (classification and binary tasks),
            "pearsonr", "spearmanr" (regression); defaults by kind. `metric` is then the main one's
            name and `metrics` all of them.
        metrics: every metric of the task, the main one first (set from `metric`; a bundle written
            before this field existed has its one `metric`).
        label_names: the classes' names, in label order (`ClassLabel` names, or the strings a dataset's
            label column holds); predictions then carry them. A binary task's two names are for 0 and 1.
        top_layer: add a task-specific transformer layer on top of the shared encoder (and the task's
            adapter, if the model has adapters), initialised as a copy of the encoder's last layer; part
            of the task's head. It also works alone, in a model without adapters (recipe `adapter: none`,
            `MultiTaskModel.from_base(..., adapters=False)`), where it is all a task has besides its head.
        predict_both_orders: for a pair task whose label does not depend on the sentences' order
            (paraphrase, similarity): predict every pair as (a, b) and as (b, a) and average the two head
            outputs (logits, or scores for regression), in evaluation and in the predictor (test-time
            augmentation; twice the encoder rows). Training is unchanged (recipe `pair_swap` shows the
            training pairs in both orders). Not for entailment, where the order carries the label.
        loss_weight: a static weight on the task's training loss (MT-DNN's and jiant's per-task loss
            weights): in a one-task step the task's gradient is scaled by it, so with AdamW, whose
            second moments average over every task's steps, the task moves the shared encoder more (> 1)
            or less (< 1) than the others. Applied in training only, before any loss balancing of joint
            steps; evaluation losses and the logged per-task losses are unweighted. 1 = none.
    """

    name: str
    kind: str
    num_labels: int = 1
    text_columns: tuple[str, ...] = ("sentence1",)
    pair_encoding: str = "packed"
    pooling: str = "mean"
    head: str = "linear"
    loss: Optional[str] = None
    label_max: float = 1.0
    metric: Optional[Any] = None
    dropout: float = 0.1
    top_layer: bool = False
    metrics: Optional[tuple[str, ...]] = None
    label_names: Optional[tuple[str, ...]] = None
    predict_both_orders: bool = False
    label_smoothing: float = 0.0
    loss_weight: float = 1.0

    def __post_init__(self):
        self.text_columns = tuple(self.text_columns)
        where = f"task {self.name!r}"
        _check_choice(where, "kind", self.kind, KINDS)
        _check_choice(where, "pair_encoding", self.pair_encoding, PAIR_ENCODINGS)
        _check_choice(where, "pooling", self.pooling, POOLINGS)
        _check_choice(where, "head", self.head, HEADS)
        self.loss = self.loss or _DEFAULT_LOSS[self.kind]
        self._set_metrics(where)
        _check_choice(where, "loss", self.loss, LOSSES)
        if self.label_names is not None:
            self._check_label_names(where)
        if self.kind == "classification" and self.num_labels < 2:
            raise ValueError(f"{where}: a classification task needs num_labels >= 2, got {self.num_labels}")
        if self.kind != "classification":
            self.num_labels = 1
        if len(self.text_columns) not in (1, 2):
            raise ValueError(f"{where}: text_columns must name one or two columns, got {list(self.text_columns)}")
        if self.pair_encoding == "both" and not self.is_pair:
            raise ValueError(
                f"{where}: pair_encoding 'both' needs a sentence pair (two text_columns), got {list(self.text_columns)}"
            )
        if self.pair_encoding == "both" and self.head != "linear":
            raise ValueError(
                f"{where}: pair_encoding 'both' takes head 'linear' only (a packed and a siamese linear part, "
                f"averaged), got head {self.head!r}"
            )
        if self.predict_both_orders and not self.is_pair:
            raise ValueError(f"{where}: predict_both_orders needs a sentence pair (two text_columns), got {list(self.text_columns)}")
        if self.head in SIAMESE_HEADS and not (self.is_pair and self.pair_encoding == "siamese"):
            raise ValueError(f"{where}: head {self.head!r} needs a sentence pair with pair_encoding 'siamese'")
        if self.head == "linear_cosine" and self.kind == "classification":
            raise ValueError(f"{where}: head 'linear_cosine' gives one score, it suits binary or regression tasks")
        if self.loss in RANKING_LOSSES and self.kind != "regression":
            raise ValueError(f"{where}: loss {self.loss!r} needs kind 'regression', got {self.kind!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"{where}: label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.label_smoothing and self.loss != "cross_entropy":
            raise ValueError(f"{where}: label_smoothing needs loss 'cross_entropy', got loss {self.loss!r}")
        if not (isinstance(self.loss_weight, (int, float)) and math.isfinite(self.loss_weight) and self.loss_weight > 0):
            raise ValueError(f"{where}: loss_weight must be a finite number > 0, got {self.loss_weight!r}")

    def _set_metrics(self, where: str) -> None:
        """`metric` (a name or a list) and `metrics` -> `metric` the main name, `metrics` all, main first."""
        listed = self.metric if isinstance(self.metric, (list, tuple)) else ([self.metric] if self.metric else [])
        if self.metrics and listed and listed[0] != list(self.metrics)[0]:
            raise ValueError(f"{where}: metric {listed[0]!r} and metrics {list(self.metrics)} disagree on the main metric")
        names = list(self.metrics or listed or [_DEFAULT_METRIC[self.kind]])
        if not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: metric must name metrics, got {names!r}")
        for name in names:
            _check_choice(where, "metric", name, tuple(METRICS))
            if self.kind not in METRICS[name]:
                raise ValueError(f"{where}: metric {name!r} does not suit a {self.kind} task (it suits {list(METRICS[name])})")
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: metric lists a metric twice: {names}")
        self.metric, self.metrics = names[0], tuple(names)

    def _check_label_names(self, where: str) -> None:
        names = list(self.label_names)
        if self.kind == "regression":
            raise ValueError(f"{where}: label_names suit classification and binary tasks, not regression")
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"{where}: label_names must be distinct non-empty strings, got {names!r}")
        expected = 2 if self.kind == "binary" else self.num_labels
        if len(names) != expected:
            raise ValueError(
                f"{where}: label_names has {len(names)} names, a {self.kind} task with num_labels {self.num_labels} "
                f"needs {expected}"
            )
        self.label_names = tuple(names)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def is_siamese(self) -> bool:
        """Each sentence of the pair is a row of its own, and only that (not true of "both")."""
        return self.is_pair and self.pair_encoding == "siamese"

    @property
    def is_both(self) -> bool:
        """The pair is encoded packed and siamese: three rows per example (`pair_encoding: both`)."""
        return self.is_pair and self.pair_encoding == "both"

    @property
    def rows_per_example(self) -> int:
        """Encoder rows one example gives: 1 (single sentence, packed pair), 2 (siamese), 3 (both)."""
        return 3 if self.is_both else 2 if self.is_siamese else 1

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["text_columns"] = list(self.text_columns)
        out["metrics"] = list(self.metrics)
        out["label_names"] = None if self.label_names is None else list(self.label_names)
        return out

    @classmethod
    def from_dict(cls, name: str, values: dict[str, Any]) -> "TaskSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"task {name!r}: unknown field(s) {unknown}; known fields are {sorted(known)}")
        values = {**values, "name": name}
        return cls(**values)


def _check_choice(where: str, field_name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{where}: {field_name} must be one of {list(choices)}, got {value!r}")


#: The CS224N minBERT tasks, as the paper and the handout set them up (pairs packed, pooled by mean).
CS224N_TASKS: dict[str, dict[str, Any]] = {
    "sst": {"kind": "classification", "num_labels": 5, "text_columns": ["sentence1"]},
    "quora": {"kind": "binary", "text_columns": ["sentence1", "sentence2"]},
    "sts": {"kind": "regression", "text_columns": ["sentence1", "sentence2"], "label_max": 5.0},
}


def cs224n_task(name: str, **overrides) -> TaskSpec:
    """The CS224N task `name` ("sst", "quora", "sts") with recipe `overrides` applied."""
    if name not in CS224N_TASKS:
        raise ValueError(f"unknown CS224N task {name!r}; known tasks are {sorted(CS224N_TASKS)}")
    return TaskSpec.from_dict(name, {**CS224N_TASKS[name], **overrides})


__all__ = ["TaskSpec", "CS224N_TASKS", "cs224n_task"]
