"""Memory of the task-count benchmark (`tasks.py`), each figure read in a fresh child process
(`common.in_child`), so that what the benchmark's own process has allocated (or keeps freed for reuse,
`hf_pals.allocator`) does not count.

- `pal_child`: RSS growth of building the N-task PAL model and one mixed-task forward (serving), then the
  peak over three training steps (training: weights, gradients, AdamW state and activations);
- `separate_child`: RSS growth of loading the separate models (`AutoModelForSequenceClassification`,
  one per task) and running each on its task's rows.

Each growth is from the child's RSS after the batch was tokenized (the tokenizer, torch and transformers
themselves are the same on both sides and not counted), read after a garbage collection; the training
figure is a peak (`peak_rss_mib`), the serving figures are the resident memory once the forward is done.
"""

from __future__ import annotations

import gc
from typing import Any

import torch

from .common import in_child, peak_rss_mib, quiet_loading, reset_peak_rss, rss_mib, train_step_fn

TRAINING_STEPS = 3


def measure(base: str, data_dir: str, n: int, batch_size: int, max_length: int, mode: str) -> dict[str, Any]:
    """The memory figures (MiB) of N tasks; `mode` "measured" loads N separate models in one child,
    "estimated" loads one and multiplies its growth by N."""
    common = dict(base=base, data_dir=data_dir, n=n, batch_size=batch_size, max_length=max_length)
    pal = in_child(__name__, "pal_child", **common)
    if mode == "measured":
        separate = in_child(__name__, "separate_child", copies=n, **common)
    else:
        separate = n * in_child(__name__, "separate_child", copies=1, **common)
    return {**pal, "separate_models_serving": round(separate, 1)}


def pal_child(base: str, data_dir: str, n: int, batch_size: int, max_length: int) -> dict[str, float]:
    from .tasks_models import build_model, inference_steps, make_batch, training_loss

    quiet_loading().__enter__()  # this child's only job

    batch, labels = make_batch(base, data_dir, batch_size, max_length)
    gc.collect()
    before = rss_mib()
    model = build_model(base, n).eval()
    inference_steps(model, [], batch)["mixed"]()
    gc.collect()
    serving = rss_mib() - before
    model.train()
    step = train_step_fn(model, training_loss(model, batch, labels))
    start = reset_peak_rss()
    for _ in range(TRAINING_STEPS):
        step()
    peak = peak_rss_mib()
    return {
        "pal_serving": round(serving, 1),
        "pal_training": round(peak - before, 1),
        "pal_training_step_growth": round(peak - start, 1),
    }


def separate_child(base: str, data_dir: str, n: int, batch_size: int, max_length: int, copies: int) -> float:
    """RSS growth of `copies` separate models (the first `copies` of the N tasks), each run on its rows."""
    from transformers import AutoModelForSequenceClassification

    from .tasks_models import make_batch, task_specs

    quiet_loading().__enter__()  # this child's only job

    batch, _ = make_batch(base, data_dir, batch_size, max_length)
    gc.collect()
    before = rss_mib()
    torch.manual_seed(0)
    specs = task_specs(n)[:copies]
    models = [AutoModelForSequenceClassification.from_pretrained(base, num_labels=s.num_labels).eval() for s in specs]
    with torch.inference_mode():
        for index, model in enumerate(models):
            rows = torch.arange(index, batch["input_ids"].shape[0], n)
            if len(rows):
                model(**{k: v.index_select(0, rows) for k, v in batch.items()})
    gc.collect()
    return round(rss_mib() - before, 1)
