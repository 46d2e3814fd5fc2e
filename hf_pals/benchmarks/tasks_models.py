"""What the task-count benchmark (`tasks.py`) builds and measures without timing it: the encoder shapes,
the N-task PAL model of the main recipe and its batch, its parameters and bundle bytes, the N separate
models without PALs, and the three inference calls that `tasks.py` times."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from typing import Any, Iterator, Optional

import torch
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ..base_models import resolve_base_model
from ..bundle import ADAPTER_WEIGHTS_NAME, HEADS_NAME, adapter_dir
from ..encoder_dropout import use_fast_dropout
from ..modeling import MultiTaskModel
from ..tasks import TaskSpec
from ..tuner import PALConfig
from .adapters import ARCHITECTURES, random_weights_encoder
from .common import real_pairs

#: Encoder shapes: name -> BertConfig fields of a random-weights encoder, or None for the base's own weights.
SHAPES: dict[str, Optional[dict]] = {
    "minilm": None,
    "bert-base": ARCHITECTURES["bert-base"],
    "tiny": {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
}
#: The main recipe's adapter (recipes/cs224n_pals.yaml).
PAL_SETTINGS = {"pal_num_heads": 6, "share_projections": True}


def task_specs(n: int) -> list[TaskSpec]:
    """N classification tasks named task00, task01, ... with 2, 3, 4, 5, 2, ... labels, pooled by mean."""
    return [TaskSpec(name=f"task{i:02d}", kind="classification", num_labels=2 + i % 4, pooling="mean") for i in range(n)]


def build_model(base: str, n: int, max_length: int = 128, fast_dropout: bool = True) -> MultiTaskModel:
    """The main recipe's model with `task_specs(n)` on `base` (seed 0)."""
    torch.manual_seed(0)
    model = MultiTaskModel.from_base(base, task_specs(n), PALConfig(**PAL_SETTINGS), max_length=max_length)
    if fast_dropout:
        use_fast_dropout(model)
    return model


def make_batch(base: str, data_dir: str, rows: int, max_length: int) -> tuple[dict, torch.Tensor]:
    """The first `rows` SST train sentences, padded to `max_length`, and their labels (0-4)."""
    texts = real_pairs(data_dir, "sst", rows)
    batch = AutoTokenizer.from_pretrained(base)(
        [r["sentence1"] for r in texts], padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return dict(batch), torch.tensor([int(r["label"]) for r in texts])


def training_loss(model: MultiTaskModel, batch: dict, labels: torch.Tensor):
    """The loss of task00 on the batch, the SST labels folded onto its classes (label mod num_labels)."""
    target = labels % model.tasks["task00"].num_labels
    return lambda: model(task="task00", labels=target, **batch)["loss"]


def parameter_counts(model: MultiTaskModel) -> dict[str, Any]:
    """Trainable, total and encoder parameters, and each task's own (its adapter and head)."""
    per_task = {
        t: sum(p.numel() for p in model.adapter_parameters(t)) + sum(p.numel() for p in model.heads[t].parameters())
        for t in model.tasks
    }
    total = sum(p.numel() for p in model.parameters())
    return {
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total": total,
        "encoder": total - sum(per_task.values()),
        "per_task": per_task,
    }


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def stored_elements(path: str) -> int:
    """Numbers stored in a safetensors file (from its header; nothing is loaded)."""
    with safe_open(path, "pt") as f:
        return sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())


def bundle_bytes(model: MultiTaskModel, tokenizer) -> dict[str, Any]:
    """Bytes of the model's bundle (`save_pretrained` with the tokenizer), in all and by part, and the
    numbers each task's adapter file stores: with shared V_E/V_D these are more than the task's adapter
    parameters, since PEFT's state dict holds the shared pair once per layer."""
    with tempfile.TemporaryDirectory(prefix="hf_pals_bundle_") as directory:
        model.save_pretrained(directory, tokenizer=tokenizer)
        parts = {name: directory_bytes(os.path.join(directory, name)) for name in ("encoder", "adapters")}
        adapters = {t: stored_elements(os.path.join(adapter_dir(directory, t), ADAPTER_WEIGHTS_NAME)) for t in model.tasks}
        return {
            "bytes": directory_bytes(directory),
            "encoder_bytes": parts["encoder"],
            "adapters_bytes": parts["adapters"],
            "heads_bytes": os.path.getsize(os.path.join(directory, HEADS_NAME)),
            "adapter_stored_elements": adapters,
        }


def plain_model_size(base: str) -> tuple[int, int]:
    """(bytes saved, parameters) of one fine-tuned model without PALs (`AutoModelForSequenceClassification`,
    2 labels)."""
    with tempfile.TemporaryDirectory(prefix="hf_pals_plain_") as directory:
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
        model.save_pretrained(directory)
        return directory_bytes(directory), sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def shape_base(shape: str, base_model: str) -> Iterator[tuple[str, str]]:
    """(directory of the base to build on, its description) for `shape`; random-weight shapes live in a
    temporary directory while the context is open."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    base = resolve_base_model(base_model)
    if SHAPES[shape] is None:
        yield base, base_model
        return
    with tempfile.TemporaryDirectory(prefix=f"hf_pals_{shape}_") as directory:
        yield random_weights_encoder(base, SHAPES[shape], directory), f"{shape} shape, random weights, tokenizer of {base_model}"


def separate_models(base: str, n: int, mode: str) -> list:
    """The separate models' list, one per task (`mode` "measured": distinct copies; "estimated": one copy
    N times, the same computation per task)."""
    torch.manual_seed(0)
    specs = task_specs(n)
    if mode == "measured":
        return [AutoModelForSequenceClassification.from_pretrained(base, num_labels=s.num_labels).eval() for s in specs]
    return [AutoModelForSequenceClassification.from_pretrained(base, num_labels=2).eval()] * n


def inference_steps(model: MultiTaskModel, plain: list, batch: dict) -> dict:
    """The three timed inference calls over the same rows (row i belongs to task i mod N)."""
    names = list(model.tasks)
    rows = batch["input_ids"].shape[0]
    row_tasks = [names[i % len(names)] for i in range(rows)]
    row_example = torch.arange(rows)
    groups = [torch.tensor([i for i in range(rows) if row_tasks[i] == t]) for t in names]

    def mixed():
        with torch.inference_mode():
            model.forward_mixed(tasks=row_tasks, row_tasks=row_tasks, row_example=row_example, **batch)

    def single():
        with torch.inference_mode():
            model(task=names[0], **batch)

    def separate():
        with torch.inference_mode():
            for rows_of_task, copy in zip(groups, plain):
                if len(rows_of_task):
                    copy(**{k: v.index_select(0, rows_of_task) for k, v in batch.items()})

    return {"mixed": mixed, "single_task": single, "separate_models": separate}
