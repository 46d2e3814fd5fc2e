"""`MultiTaskPredictor`: predictions of a saved bundle on plain texts, for downstream code.

    predictor = MultiTaskPredictor.from_pretrained("runs/cs224n_pals")   # or a Hub repo id
    predictor.predict("sst", ["a gripping , funny film", "dull"])
    # [{"label": 4, "score": 0.61}, {"label": 0, "score": 0.55}]
    predictor.predict("quora", [("how do i cook rice ?", "what is the way to cook rice ?")])
    # [{"label": 1, "score": 0.93}]
    predictor.predict("sts", [("a man plays a guitar .", "a man is playing guitar .")])
    # [{"label": 4.4, "score": 4.4}]

Like a transformers pipeline, each prediction is `{"label", "score"}`: for a classification task the
argmax class and its softmax probability; for a binary task the label (1 when the logit is > 0) and
the sigmoid probability of that label; for a regression task the predicted value in both fields.
When the task has `label_names` (`TaskSpec.label_names`), "label" is the class's name instead of its
index (`{"label": "positive", "score": 0.61}`); the score is the same.
`EnsemblePredictor` does the same for several bundles, their outputs combined (`hf_pals.ensemble`).
Batching goes through `hf_pals.evaluation.predict_outputs`, the path evaluation uses; `predict_mixed` (items of
several tasks, one encoder pass per batch) sorts by length the same way.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import torch

from .ensemble import Ensemble
from .evaluation import predict_outputs, swap_pair
from .heads import predictions as head_predictions

TextInput = Union[str, tuple[str, str]]


def mixed_length(spec, row: dict[str, str]) -> int:
    """The character length of the longest encoder row an example gives: its text, its packed pair (both
    texts in one row), or the longer sentence of a siamese pair (each sentence is a row of its own); a
    `pair_encoding: both` pair's longest row is its packed one. The key `predict_mixed` sorts by; characters stand for tokens, as in `predict_outputs`."""
    lengths = [len(row[c]) for c in spec.text_columns]
    return max(lengths) if spec.is_siamese else sum(lengths)


class MultiTaskPredictor:
    """A loaded bundle (model + collator) that predicts any of its tasks for raw texts."""

    def __init__(self, model, collator, batch_size: int = 32):
        self.model = model.eval()
        self.collator = collator
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str,
        batch_size: int = 32,
        device: Union[str, torch.device, None] = None,
        allow_pickle: bool = False,
        revision: Optional[str] = None,
        token: Optional[str] = None,
    ) -> "MultiTaskPredictor":
        """Load a bundle directory, or download a Hub repo pushed with `hf-pals push` first.

        `allow_pickle=True` also accepts pickle weights (see `MultiTaskModel.from_pretrained`)."""
        from .run import load_for_inference

        model_dir = model_name_or_path
        if not os.path.isdir(model_dir):
            from huggingface_hub import snapshot_download

            model_dir = snapshot_download(model_name_or_path, revision=revision, token=token)
        model, collator = load_for_inference(model_dir, allow_pickle=allow_pickle)
        if device is not None:
            model.to(device)
        return cls(model, collator, batch_size=batch_size)

    @property
    def tasks(self) -> list[str]:
        return list(self.model.tasks)

    def predict(
        self, task: str, inputs: Union[TextInput, Sequence[TextInput]], batch_size: Optional[int] = None
    ) -> list[dict[str, Any]]:
        """Predict `task` for `inputs`: texts for a single-sentence task, `(a, b)` tuples for a pair task
        (a single text or pair is also accepted). Returns one `{"label", "score"}` dict per input."""
        spec = self._spec(task)
        rows = self._rows(spec, inputs)
        outputs = predict_outputs(self.model, self.collator, rows, task, batch_size=batch_size or self.batch_size)
        return self._results(spec, outputs)

    @staticmethod
    def _results(spec, outputs: torch.Tensor) -> list[dict[str, Any]]:
        """`{"label", "score"}` per example from a task head's raw outputs ("label" is the class name when
        the task has `label_names`)."""
        labels = head_predictions(spec, outputs)
        if spec.kind == "classification":
            scores = outputs.softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        elif spec.kind == "binary":
            positive = outputs.sigmoid()
            scores = torch.where(labels.bool(), positive, 1 - positive)
        else:
            scores = outputs
        cast = float if spec.kind == "regression" else int
        names = spec.label_names
        return [
            {"label": names[label] if names is not None else cast(label), "score": float(score)}
            for label, score in zip(labels.tolist(), scores.tolist())
        ]

    @torch.no_grad()
    def predict_mixed(
        self, items: Sequence[tuple[str, TextInput]], batch_size: Optional[int] = None
    ) -> list[dict[str, Any]]:
        """Predict a list of `(task, input)` items of any tasks. Returns one `{"task", "label", "score"}`
        dict per item, in the items' order.

        The items are run sorted by length (`mixed_length`, stable), `batch_size` (default
        `self.batch_size`) items per forward pass: a mixed-task batch, where the encoder runs once and each
        row goes through its task's adapter. A mixed batch pads every row to its longest one (a long packed
        pair next to short single sentences), so sorting first keeps the padding low, as `predict` (through
        `predict_outputs`) does for one task. Within a batch the items are grouped by task, so each task's
        rows are one contiguous block, which the PAL layers slice instead of scattering. An item of a task
        with `predict_both_orders` also runs as its swapped pair, and its two head outputs are averaged."""
        batch_size = batch_size or self.batch_size
        features = [dict(self._row(self._spec(task), inputs, i), task=task) for i, (task, inputs) in enumerate(items)]
        twin_of = {}  # the index of a pair run in its other order -> the item it belongs to (predict_both_orders)
        for index, feature in enumerate(features[: len(items)]):
            spec = self._spec(feature["task"])
            if spec.predict_both_orders:
                twin_of[len(features)] = index
                features.append(swap_pair(spec, feature))
        lengths = [mixed_length(self._spec(f["task"]), f) for f in features]
        order = sorted(range(len(features)), key=lengths.__getitem__)  # stable: equal lengths keep their order
        rank = {task: r for r, task in enumerate(self.model.tasks)}
        outputs: list[Optional[torch.Tensor]] = [None] * len(features)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), batch_size):
            chunk = sorted(order[start : start + batch_size], key=lambda i: rank[features[i]["task"]])
            batch = self.collator.encode_mixed([features[i] for i in chunk])
            tensors = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            for task, (examples, task_outputs) in self.model.forward_mixed(**tensors).items():
                for index, output in zip(examples.tolist(), task_outputs.float().cpu()):
                    outputs[chunk[index]] = output
        for twin, item in twin_of.items():
            outputs[item] = (outputs[item] + outputs[twin]) / 2
        by_task: dict[str, list[int]] = {}
        for index in range(len(items)):
            by_task.setdefault(features[index]["task"], []).append(index)
        results: list[Optional[dict[str, Any]]] = [None] * len(items)
        for task, indices in by_task.items():
            task_results = self._results(self._spec(task), torch.stack([outputs[i] for i in indices]))
            for index, result in zip(indices, task_results):
                results[index] = {"task": task, **result}
        return results

    # ------------------------------------------------------------------------------------------ helpers
    def _spec(self, task: str):
        if task not in self.model.tasks:
            raise ValueError(f"unknown task {task!r}; this model has tasks {self.tasks}")
        return self.model.tasks[task]

    @staticmethod
    def _is_single(spec, inputs) -> bool:
        """Whether `inputs` is one input of `spec`'s task (a text, or a pair for a pair task), not a list."""
        return isinstance(inputs, str) or (
            spec.is_pair and isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(t, str) for t in inputs)
        )

    @classmethod
    def _rows(cls, spec, inputs) -> list[dict[str, str]]:
        """One row per input, keyed by the task's text columns."""
        items = [inputs] if cls._is_single(spec, inputs) else list(inputs)
        return [cls._row(spec, item, i) for i, item in enumerate(items)]

    @staticmethod
    def _row(spec, item, index: int) -> dict[str, str]:
        """Input number `index` (a text, or an `(a, b)` pair) as a row keyed by the task's text columns."""
        texts = (item,) if isinstance(item, str) else tuple(item) if isinstance(item, (tuple, list)) else None
        if texts is None or len(texts) != len(spec.text_columns) or not all(isinstance(t, str) for t in texts):
            want = "(sentence1, sentence2) pairs" if spec.is_pair else "single texts (str)"
            raise ValueError(f"task {spec.name!r} takes {want}; input {index} is {item!r}")
        return dict(zip(spec.text_columns, texts))


class EnsemblePredictor:
    """`MultiTaskPredictor`'s `predict` for an ensemble: one `{"label", "score"}` dict per input, where the
    score is the ensemble's probability of the label (the mean of the members') or its mean score.

        predictor = EnsemblePredictor.from_pretrained(["runs/x/seed-1", "runs/x/seed-2", "runs/x/seed-3"])
        predictor.predict("sst", ["a gripping , funny film"])   # [{"label": 4, "score": 0.58}]
    """

    def __init__(self, predictors: Sequence[Any], names: Sequence[str] = ()):
        self.predictors = list(predictors)
        self.ensemble = Ensemble([(p.model, p.collator) for p in self.predictors], names=names)

    @classmethod
    def from_pretrained(cls, models_names_or_paths: Sequence[str], **kwargs) -> "EnsemblePredictor":
        """Each member through `MultiTaskPredictor.from_pretrained(name, **kwargs)` (a directory or Hub repo)."""
        names = list(models_names_or_paths)
        return cls([MultiTaskPredictor.from_pretrained(n, **kwargs) for n in names], names=names)

    @property
    def tasks(self) -> list[str]:
        return list(self.ensemble.tasks)

    def predict(self, task: str, inputs, batch_size: Optional[int] = None) -> list[dict[str, Any]]:
        """As `MultiTaskPredictor.predict`: texts, or `(a, b)` tuples for a pair task."""
        first = self.predictors[0]
        spec = first._spec(task)
        rows = first._rows(spec, inputs)
        return first._results(spec, self.ensemble.outputs(rows, task, batch_size or first.batch_size))
