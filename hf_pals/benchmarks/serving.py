"""Serving benchmark (issue 15): texts per second and per-batch latency of a `MultiTaskPredictor`,
against plain transformers models, in float32 and under CPU autocast to bfloat16.

The PAL side is a bundle of the main recipe's three tasks (sst, quora, sts as recipes/cs224n_pals.yaml
sets them up: mean pooling, STS siamese with a cosine head; built from `--base-model` in a temporary
directory), or an existing bundle (`--model-dir runs/cs224n_pals`), served by `MultiTaskPredictor`:
`predict(task, texts)` for a single-task stream, `predict_mixed(items)` for a mixed-task stream (the
tasks' items interleaved; each micro-batch is one forward, every row through its task's adapter).

The plain side is what serving looks like without PALs: one `AutoModelForSequenceClassification` per task
of the same encoder (the bundle's trained `encoder/`, else its base), the same tokenizer, `max_length`,
texts and batch sizes, `torch.no_grad` as the predictor, the same post-processing (label and score per
text). A mixed batch is split by task, each part through its task's model. The plain models encode a
pair packed (`[CLS] a [SEP] b [SEP]`, one row), where the bundle's siamese STS encodes each sentence alone
(two rows of about half the length): the same texts, about the same tokens.

Both sides batch the same way (the JSON's "batching"), so the ratio is the models' cost, not a padding
policy: a "batch" of B texts is one call on each side, which sorts its texts by character length (stable)
and runs them in micro-batches of `micro_batch` texts (32, the predictor's default `batch_size`), results
back in order. The predictor sorts a mixed call as a whole (a mixed micro-batch holds several tasks, padded
to its longest row); the plain side sorts and cuts each task's part. (Run as one forward, a mixed call of
256 would pad its short SST sentences and STS halves to its longest Quora pair, where the plain side pads
each task apart.) At B <= micro_batch a call is one forward on the PAL side, so sorting changes nothing
there.

Texts are the CS224N dev files' (SST sentences; Quora and STS pairs), cycled when a run needs more; a
"text" is one input, a pair counting once. Each latency is one call on one batch (tokenizing included);
the two sides' batches alternate (`common.interleaved_times`), after two warm-up batches each.

    hf-pals bench serving --data-dir ../shared/data/cs224n [--model-dir runs/cs224n_pals] [--batch-sizes 1,32,256]
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import tempfile
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ..base_models import resolve_base_model
from ..bundle import ENCODER_DIR
from ..data import CS224N_FILES, load_cs224n
from ..modeling import MultiTaskModel
from ..predictor import MultiTaskPredictor
from ..tasks import cs224n_task
from ..tuner import PALConfig
from .common import interleaved_times, paired_ratio, quiet_loading, significant
from .tasks_models import PAL_SETTINGS

DEFAULT_BATCH_SIZES = (1, 32, 256)
#: Texts per forward pass on both sides (`MultiTaskPredictor`'s default `batch_size`).
MICRO_BATCH = 32
DTYPES = ("float32", "bf16")
STREAMS = ("single_task", "mixed_task")
WARMUP = 2
#: Rough MiniLM texts/s on 2 cores by dtype (batched; one text per batch runs at about a third), for the plan.
PLAN_TEXTS_PER_S = {"float32": 300.0, "bf16": 600.0}


def recipe_tasks() -> list:
    """The main recipe's tasks (recipes/cs224n_pals.yaml)."""
    return [
        cs224n_task("sst", pooling="mean"),
        cs224n_task("quora", pooling="mean"),
        cs224n_task("sts", pair_encoding="siamese", head="cosine", pooling="mean"),
    ]


@contextlib.contextmanager
def served_bundle(model_dir: Optional[str], base_model: str) -> Iterator[tuple[str, str]]:
    """(bundle directory, its description): `model_dir` itself, or a fresh bundle of the recipe's tasks
    on `base_model` (seed 0, encoder saved as after joint training) in a temporary directory."""
    if model_dir is not None:
        yield model_dir, f"bundle {model_dir}"
        return
    with tempfile.TemporaryDirectory(prefix="hf_pals_serving_") as directory:
        torch.manual_seed(0)
        model = MultiTaskModel.from_base(base_model, recipe_tasks(), PALConfig(**PAL_SETTINGS))
        model.save_pretrained(directory, tokenizer=AutoTokenizer.from_pretrained(resolve_base_model(base_model)))
        yield directory, f"built from {base_model} with the main recipe's tasks (untrained)"


class PlainModels:
    """One `AutoModelForSequenceClassification` per task, predicting like `MultiTaskPredictor`: the same
    batching policy (a call's texts sorted by character length, stable, then cut into micro-batches of
    `micro_batch` texts, one forward each; results in the inputs' order) and post-processing."""

    def __init__(self, source: str, tokenizer, specs: dict, max_length: int, micro_batch: int = MICRO_BATCH):
        self.tokenizer, self.specs, self.max_length, self.micro_batch = tokenizer, specs, max_length, micro_batch
        self.models = {
            task: AutoModelForSequenceClassification.from_pretrained(source, num_labels=spec.num_labels).eval()
            for task, spec in specs.items()
        }

    @torch.no_grad()
    def predict(self, task: str, inputs: Sequence) -> list[dict[str, Any]]:
        """`task`'s `{"label", "score"}` per input (a text, or a pair, packed in one row)."""
        if not inputs:
            return []
        spec = self.specs[task]
        texts = [(x,) if isinstance(x, str) else tuple(x) for x in inputs]
        order = sorted(range(len(texts)), key=lambda i: sum(map(len, texts[i])))  # a packed row's length
        outputs = []
        for start in range(0, len(order), self.micro_batch):
            chunk = [texts[i] for i in order[start : start + self.micro_batch]]
            columns = [list(c) for c in zip(*chunk)]
            encoded = self.tokenizer(*columns, padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="pt")
            logits = self.models[task](**encoded).logits.float()
            outputs.append(logits if spec.kind == "classification" else logits.squeeze(-1))
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return MultiTaskPredictor._results(spec, torch.cat(outputs)[inverse])

    def predict_mixed(self, items: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
        """Each task's items through its own model (`predict`: sorted, in micro-batches of that task's
        items); results in the items' order."""
        results: list[Optional[dict]] = [None] * len(items)
        for task in dict.fromkeys(t for t, _ in items):
            where = [i for i, (t, _) in enumerate(items) if t == task]
            for i, result in zip(where, self.predict(task, [items[i][1] for i in where])):
                results[i] = {"task": task, **result}
        return results


def dev_inputs(data_dir: str, tasks: Sequence[str]) -> dict[str, list]:
    """Each task's dev inputs: sentences, or (sentence1, sentence2) pairs."""
    unknown = [t for t in tasks if t not in CS224N_FILES]
    if unknown:
        raise ValueError(f"bench serving reads CS224N dev texts: task(s) {unknown} are not among {sorted(CS224N_FILES)}")
    dev = load_cs224n(data_dir, "dev", tasks=list(tasks))
    return {
        t: list(d["sentence1"]) if "sentence2" not in d.column_names else list(zip(d["sentence1"], d["sentence2"]))
        for t, d in dev.items()
    }


def stream(inputs: dict[str, list], tasks: Sequence[str], count: int) -> list[tuple[str, Any]]:
    """`count` (task, input) items: the tasks in turn (one task: its inputs in order), cycling the inputs."""
    per_task = {t: itertools.cycle(inputs[t]) for t in tasks}
    return [(task, next(per_task[task])) for task in itertools.islice(itertools.cycle(tasks), count)]


def latency_summary(latencies: Sequence[float], batch_size: int) -> dict[str, Any]:
    """Texts/s over all timed batches and per-batch latency percentiles (ms)."""
    total = sum(latencies)
    ms = np.asarray(latencies) * 1000
    p50, p99 = np.percentile(ms, [50, 99])
    return {
        "batches": len(latencies),
        "texts": len(latencies) * batch_size,
        "seconds": significant(total),
        "texts_per_s": significant(len(latencies) * batch_size / total),
        "latency_ms": {k: significant(float(v)) for k, v in
                       {"p50": p50, "p99": p99, "mean": ms.mean(), "min": ms.min(), "max": ms.max()}.items()},
    }


def batches_for(batch_size: int, min_batches: int, min_texts: int) -> int:
    return max(min_batches, math.ceil(min_texts / batch_size))


def compare(calls: dict[str, Callable], items: list, batch_size: int, batches: int, bf16: bool) -> dict[str, Any]:
    """Time `calls` ("pal", "plain": each takes a list of items) on the same consecutive batches of
    `items`, interleaved batch by batch; `bf16`: every call under CPU autocast to bfloat16."""
    chunks = [items[i * batch_size : (i + 1) * batch_size] for i in range(WARMUP + batches)]

    def timed(call):
        batches_left = iter(chunks)

        def one_batch():
            with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                call(next(batches_left))

        return one_batch

    rounds = interleaved_times({name: timed(call) for name, call in calls.items()}, warmup=WARMUP, repeats=batches)
    out = {name: latency_summary(rounds[name], batch_size) for name in calls}
    out["pal_over_plain_texts_per_s"] = significant(sum(rounds["plain"]) / sum(rounds["pal"]))
    out["pal_over_plain_paired"] = significant(paired_ratio(rounds, "plain", "pal"))  # median of per-batch ratios
    return out


def plan(batch_sizes: Sequence[int], min_batches: int, min_texts: int) -> str:
    seconds = 0.0
    for bs in batch_sizes:
        texts = (batches_for(bs, min_batches, min_texts) + WARMUP) * bs
        for dtype in DTYPES:
            rate = PLAN_TEXTS_PER_S[dtype] / (3 if bs == 1 else 1)
            seconds += 2 * len(STREAMS) * texts / rate * 1.3  # two sides; the mixed stream's pairs are longer
    return (
        f"bench serving: batch sizes {','.join(map(str, batch_sizes))}, >= {min_batches} batches and >= {min_texts} "
        f"texts each, {', '.join(DTYPES)}, {', '.join(STREAMS)}: about {math.ceil(seconds / 60)} min for MiniLM"
    )


def run(
    data_dir: str,
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2",
    model_dir: Optional[str] = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    min_batches: int = 20,
    min_texts: int = 256,
    dtypes: Sequence[str] = DTYPES,
    micro_batch: int = MICRO_BATCH,
) -> dict[str, Any]:
    """The figures of the module docstring: results[dtype][batch size][stream][pal|plain]. Each side
    serves a call (one batch of the stream) in length-sorted micro-batches of `micro_batch` texts."""
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or not batch_sizes or min(batch_sizes) < 1 or micro_batch < 1:
        raise ValueError(f"dtypes must be among {list(DTYPES)} and batch sizes >= 1; got {list(dtypes)}, "
                         f"{list(batch_sizes)}, micro-batch {micro_batch}")
    print(plan(batch_sizes, min_batches, min_texts), file=sys.stderr, flush=True)
    with quiet_loading(), served_bundle(model_dir, base_model) as (directory, description):
        predictor = MultiTaskPredictor.from_pretrained(directory, batch_size=micro_batch)
        model, tokenizer = predictor.model, predictor.collator.tokenizer
        encoder_dir = os.path.join(directory, ENCODER_DIR)
        source = encoder_dir if os.path.isdir(encoder_dir) else resolve_base_model(model.base_model_name_or_path)
        plain = PlainModels(source, tokenizer, model.tasks, model.max_length, micro_batch=micro_batch)
        inputs = dev_inputs(data_dir, list(model.tasks))
        single = "sst" if "sst" in model.tasks else next(iter(model.tasks))
        streams = {"single_task": [single], "mixed_task": list(model.tasks)}

        def texts_of(items):
            return [inp for _, inp in items]

        calls = {
            "single_task": {"pal": lambda items: predictor.predict(single, texts_of(items)),
                            "plain": lambda items: plain.predict(single, texts_of(items))},
            "mixed_task": {"pal": predictor.predict_mixed, "plain": plain.predict_mixed},
        }
        results: dict[str, Any] = {}
        for dtype in dtypes:
            for bs in batch_sizes:
                batches = batches_for(bs, min_batches, min_texts)
                for name, tasks in streams.items():
                    items = stream(inputs, tasks, (WARMUP + batches) * bs)
                    figures = compare(calls[name], items, bs, batches, bf16=dtype == "bf16")
                    results.setdefault(dtype, {}).setdefault(str(bs), {})[name] = figures
    return {
        "model": {"bundle": description, "base_model": model.base_model_name_or_path,
                  "tasks": {t: s.to_dict() for t, s in model.tasks.items()}, "max_length": model.max_length},
        "plain_model": f"AutoModelForSequenceClassification of {source}, one per task",
        "threads": torch.get_num_threads(),
        "batching": batching(micro_batch),
        "streams": {name: {"tasks": tasks, "encoder_rows_per_text": {
            "pal": {t: model.tasks[t].rows_per_example for t in tasks}, "plain": {t: 1 for t in tasks}}}
            for name, tasks in streams.items()},
        "results": results,
        "bf16_over_float32_texts_per_s": bf16_speedups(results),
    }


def batching(micro_batch: int) -> dict[str, Any]:
    """The batching policy both sides serve a call with (the JSON's "batching")."""
    return {
        "micro_batch": micro_batch,
        "order": "by length",
        "pal": f"predict / predict_mixed: the call's texts sorted by character length (stable), {micro_batch} "
               "per forward; a mixed micro-batch is one forward, every row through its task's adapter",
        "plain": f"per task: that task's texts sorted by character length (stable), {micro_batch} per forward",
    }


def bf16_speedups(results: dict) -> dict[str, Any]:
    """bf16 texts/s over float32 texts/s per batch size, stream and side (from runs at different times,
    so less steady than the side-by-side ratios)."""
    if not {"float32", "bf16"} <= set(results):
        return {}
    return {
        bs: {name: {side: significant(results["bf16"][bs][name][side]["texts_per_s"] / figures[side]["texts_per_s"])
                    for side in ("pal", "plain")} for name, figures in by_stream.items()}
        for bs, by_stream in results["float32"].items()
    }
