"""Adapter benchmark (issue 3): PAL training steps against plain fine-tuning and PEFT's LoRA, peak
memory of each, and mixed-task batch inference against single-task batches.

The first four candidates keep torch's own dropout in the encoder, so PAL's cost is measured against
the same encoder it is added to. The `*_fast_dropout` candidates are the same models with
`hf_pals.use_fast_dropout` (what `hf-pals train` does by default): PAL's cost like for like again, and
hf_pals' PAL step against a plain fine-tuning step as transformers runs it. The `*_bf16` candidates
are the fast-dropout ones trained under CPU autocast to bfloat16 (the Trainer's `bf16=True`): what mixed
precision saves on a CPU with bfloat16 matrix units (AMX), and PAL's cost there.

All candidates use the same base model (all-MiniLM-L6-v2 by default) and the same batch of real Quora
pairs packed to `max_length`; step times are interleaved medians from one process, and each ratio is the
median of the ratios of the two steps timed side by side in each round. Peak memory is read
in a child process per candidate (its peak RSS minus its RSS before the first step).

    hf-pals bench adapters --data-dir ../shared/data/cs224n [--batch-size 32] [--max-length 64] [--repeats 20]

`--architecture bert-base` times an encoder of BERT-base's shape (the paper's model: 12 layers, hidden
768, so PAL's d_s = 204) with random weights and the base model's tokenizer (all-MiniLM-L6-v2 has
bert-base-uncased's vocabulary): a step's time does not depend on the weights' values, and this needs
no BERT-base weights, which cannot be had offline.
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
import tempfile
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from ..allocator import keep_freed_memory
from ..base_models import resolve_base_model
from ..encoder_dropout import use_fast_dropout
from ..tuner import PALConfig
from .common import (
    interleaved_medians,
    interleaved_times,
    medians,
    paired_ratio,
    peak_rss_mib,
    real_pairs,
    reset_peak_rss,
    train_step_fn,
)

FAST = "_fast_dropout"
BF16 = "_bf16"
CANDIDATES = (
    ("full_finetune", "pal", "pal_frozen_encoder", "lora")
    + tuple(name + FAST for name in ("full_finetune", "pal", "pal_frozen_encoder"))
    + tuple(name + FAST + BF16 for name in ("full_finetune", "pal"))
)
#: The step-time ratios reported: name -> (numerator, denominator) candidates.
RATIOS = {
    "pal_over_full_finetune": ("pal", "full_finetune"),
    "pal_over_lora": ("pal", "lora"),
    "pal_frozen_encoder_over_full_finetune": ("pal_frozen_encoder", "full_finetune"),
    "fast_dropout/pal_over_full_finetune": ("pal" + FAST, "full_finetune" + FAST),
    "fast_dropout/pal_frozen_encoder_over_full_finetune": ("pal_frozen_encoder" + FAST, "full_finetune" + FAST),
    "fast_dropout/full_finetune_over_torch_dropout": ("full_finetune" + FAST, "full_finetune"),
    "fast_dropout/pal_over_torch_dropout_full_finetune": ("pal" + FAST, "full_finetune"),
    "fast_dropout/pal_frozen_encoder_over_torch_dropout_full_finetune": ("pal_frozen_encoder" + FAST, "full_finetune"),
    "bf16/pal_over_full_finetune": ("pal" + FAST + BF16, "full_finetune" + FAST + BF16),
    "bf16/full_finetune_over_float32": ("full_finetune" + FAST + BF16, "full_finetune" + FAST),
    "bf16/pal_over_float32": ("pal" + FAST + BF16, "pal" + FAST),
}


#: Encoder shapes `--architecture` can time with random weights: name -> BertConfig fields.
ARCHITECTURES = {
    # transformers' BertConfig defaults are bert-base-uncased's: 12 layers, hidden 768, 12 heads, FFN 3072.
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}


def random_weights_encoder(base: str, architecture: dict, directory: str) -> str:
    """Save a `BertModel` of `architecture` (BertConfig fields) with random weights (seed 0), and
    `base`'s tokenizer, to `directory`; returns it, to be used as a base model. The vocabulary is the
    tokenizer's, so the benchmark's batch encodes as for `base`."""
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), **architecture)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def pal_trainable_parameters(bert) -> int:
    config = PALConfig()
    return config.parameter_count(bert.config.hidden_size, bert.config.num_hidden_layers)


def lora_rank_matching(bert, target: int) -> int:
    """LoRA rank on query/key/value/dense of every layer giving about `target` trainable parameters."""
    d, layers = bert.config.hidden_size, bert.config.num_hidden_layers
    per_rank = layers * 4 * 2 * d  # A (r x d) and B (d x r) for four d x d projections
    return max(1, round(target / per_rank))


def build(candidate: str, base: str):
    """(model, number of trainable parameters) for one candidate; a linear head makes the loss."""
    if candidate.endswith(BF16):  # the same model; `candidate_loss` runs it under autocast
        return build(candidate[: -len(BF16)], base)
    if candidate.endswith(FAST):
        wrapper, trainable = build(candidate[: -len(FAST)], base)
        use_fast_dropout(wrapper)
        return wrapper, trainable
    torch.manual_seed(0)
    bert = AutoModel.from_pretrained(base)
    if candidate == "full_finetune":
        model = bert
    elif candidate in ("pal", "pal_frozen_encoder"):
        model = get_peft_model(bert, PALConfig(init_pal_weights="bert"), adapter_name="task")
        if candidate == "pal":
            for name, param in model.named_parameters():
                param.requires_grad_(True)
    elif candidate == "lora":
        rank = lora_rank_matching(bert, pal_trainable_parameters(bert))
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["query", "key", "value", "attention.output.dense"])
        model = get_peft_model(bert, config)
    else:
        raise ValueError(f"unknown candidate {candidate!r}; choose from {CANDIDATES}")
    head = torch.nn.Linear(bert.config.hidden_size, 1)
    wrapper = torch.nn.ModuleDict({"encoder": model, "head": head}).train()
    trainable = sum(p.numel() for p in wrapper.parameters() if p.requires_grad)
    return wrapper, trainable


def loss_fn(wrapper, batch, labels, adapter: bool, bf16: bool = False):
    """The candidate's loss on the batch; `bf16`: the forward under CPU autocast to bfloat16, as the
    Trainer's `bf16=True` runs it (the backward outside it)."""
    kwargs = {"adapter_names": "task"} if adapter else {}

    def compute():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():  # leaves a caller's autocast on
            hidden = wrapper["encoder"](**batch, **kwargs).last_hidden_state
            logits = wrapper["head"](hidden[:, 0]).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logits.float(), labels)

    return compute


def candidate_loss(wrapper, candidate: str, batch, labels):
    """`loss_fn` for a candidate of `CANDIDATES`: adapters routed for the PAL ones, autocast for `*_bf16`."""
    return loss_fn(wrapper, batch, labels, adapter=candidate.startswith("pal"), bf16=candidate.endswith(BF16))


def make_batch(base: str, data_dir: str, batch_size: int, max_length: int):
    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = real_pairs(data_dir, "quora", batch_size)
    batch = tokenizer(
        [r["sentence1"] for r in rows],
        [r["sentence2"] for r in rows],
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    labels = torch.tensor([float(r["label"]) for r in rows])
    return dict(batch), labels


def mixed_batch_throughput(base: str, data_dir: str, batch_size: int, max_length: int, repeats: int) -> dict:
    """Rows/s of one forward over a batch mixing three tasks' rows, against three single-task forwards."""
    torch.manual_seed(0)
    bert = AutoModel.from_pretrained(base).eval()
    model = get_peft_model(bert, PALConfig(init_pal_weights="bert"), adapter_name="sst")
    model.add_adapter("quora", PALConfig(init_pal_weights="bert"))
    model.add_adapter("sts", PALConfig(init_pal_weights="bert"))
    model.base_model.set_adapter(["sst", "quora", "sts"])
    model.eval()
    batch, _ = make_batch(base, data_dir, batch_size, max_length)
    tasks = ["sst", "quora", "sts"]
    mixed = {k: v.repeat(len(tasks), 1) for k, v in batch.items()}
    names = [t for t in tasks for _ in range(batch_size)]

    @torch.no_grad()
    def singles():
        for task in tasks:
            model(**batch, adapter_names=task)

    @torch.no_grad()
    def one_mixed():
        model(**mixed, adapter_names=names)

    @torch.no_grad()
    def one_task_all_rows():  # the same rows as the mixed batch, all routed to one task: no routing cost
        model(**mixed, adapter_names=tasks[0])

    times = interleaved_medians(
        {"single": singles, "mixed": one_mixed, "same_size": one_task_all_rows}, warmup=2, repeats=repeats
    )
    rows = batch_size * len(tasks)
    single_rate, mixed_rate, same_size_rate = (rows / times[k] for k in ("single", "mixed", "same_size"))
    return {
        "rows_per_s_single_task_batches": round(single_rate, 1),
        "rows_per_s_mixed_task_batch": round(mixed_rate, 1),
        "rows_per_s_one_task_batch_of_the_same_size": round(same_size_rate, 1),
        "mixed_over_single_throughput": round(mixed_rate / single_rate, 3),
        # Below 1 only by what routing rows to several adapters costs; the ratio above also holds the
        # effect of one batch of 3x the rows against three smaller ones.
        "mixed_over_same_size_single_task": round(mixed_rate / same_size_rate, 3),
    }


def memory_of(candidate: str, base: str, data_dir: str, batch_size: int, max_length: int) -> float:
    """Peak RSS growth (MiB) of three training steps of `candidate`, in a fresh child process."""
    code = (
        "import json, sys; from hf_pals.benchmarks.adapters import _memory_child; "
        f"print(json.dumps(_memory_child({candidate!r}, {base!r}, {data_dir!r}, {batch_size}, {max_length})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _memory_child(candidate, base, data_dir, batch_size, max_length) -> float:
    keep_freed_memory()  # as `hf-pals` does in the parent, which this child does not inherit
    wrapper, _ = build(candidate, base)
    batch, labels = make_batch(base, data_dir, batch_size, max_length)
    step = train_step_fn(wrapper, candidate_loss(wrapper, candidate, batch, labels))
    before = reset_peak_rss()
    for _ in range(3):
        step()
    return round(peak_rss_mib() - before, 1)


def run(
    data_dir: str,
    base_model: str,
    batch_size: int = 32,
    max_length: int = 64,
    repeats: int = 20,
    architecture: Optional[str] = None,
) -> dict[str, Any]:
    """The benchmark's figures (module docstring). `architecture`: a name of `ARCHITECTURES`, to time
    an encoder of that shape with random weights and `base_model`'s tokenizer instead of `base_model`."""
    return on_base(base_model, architecture, lambda base, label: _run(data_dir, base, label, batch_size, max_length, repeats))


def on_base(base_model: str, architecture: Optional[str], measure: Callable[[str, str], Any]) -> Any:
    """`measure(base, label)` on `base_model` (a directory or Hub id), or, with `architecture` (a name of
    `ARCHITECTURES`), on an encoder of that shape with random weights and `base_model`'s tokenizer, saved
    in a temporary directory for the call."""
    if architecture is None:
        return measure(resolve_base_model(base_model), base_model)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {', '.join(ARCHITECTURES)}")
    with tempfile.TemporaryDirectory(prefix=f"hf_pals_{architecture}_") as directory:
        base = random_weights_encoder(resolve_base_model(base_model), ARCHITECTURES[architecture], directory)
        return measure(base, f"{architecture} architecture, random weights, tokenizer of {base_model}")


def _run(data_dir: str, base: str, label: str, batch_size: int, max_length: int, repeats: int) -> dict[str, Any]:
    """The figures for the base model in directory (or Hub id) `base`, reported as `label`."""
    batch, labels = make_batch(base, data_dir, batch_size, max_length)
    steps, trainable = {}, {}
    for candidate in CANDIDATES:
        wrapper, trainable[candidate] = build(candidate, base)
        steps[candidate] = train_step_fn(wrapper, candidate_loss(wrapper, candidate, copy.copy(batch), labels))
    rounds = interleaved_times(steps, warmup=2, repeats=repeats)
    times = medians(rounds)
    memory = {c: memory_of(c, base, data_dir, batch_size, max_length) for c in CANDIDATES}
    ratios = {name: round(paired_ratio(rounds, a, b), 3) for name, (a, b) in RATIOS.items()}
    return {
        "base_model": label,
        "batch": {"task": "quora", "rows": batch_size, "max_length": max_length, "threads": torch.get_num_threads()},
        "train_step_seconds": {c: round(t, 4) for c, t in times.items()},
        "trainable_parameters": trainable,
        # Median of the per-round ratios (`paired_ratio`); the ratios of the median step times are below.
        "ratios": ratios,
        "ratios_of_median_step_times": {name: round(times[a] / times[b], 3) for name, (a, b) in RATIOS.items()},
        "targets": {"pal_over_full_finetune": "<= 1.10", "pal_frozen_encoder_over_full_finetune": "<= 0.80",
                    "mixed_over_single_throughput": ">= 0.90"},
        "targets_met": {
            "pal_over_full_finetune": ratios["pal_over_full_finetune"] <= 1.10,
            "pal_frozen_encoder_over_full_finetune": ratios["pal_frozen_encoder_over_full_finetune"] <= 0.80,
        },
        "peak_memory_growth_mib": memory,
        "mixed_task_inference": mixed_batch_throughput(base, data_dir, batch_size, max_length, repeats),
    }
