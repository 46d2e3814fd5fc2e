"""The floor under any fused PAL kernel (issue 15, item 1): PAL steps whose TS(h) keeps only part of its work.

Why: the issue asks for a PAL training step at <= 1.08x of a plain fine-tuning step (frozen encoder
<= 0.75x) at MiniLM's width by fusing the projected attention's element-wise passes (softmax, its
dropout, GELU, their backwards). A fused kernel cannot do better than a TS(h) that has no element-wise
passes at all, so this times, side by side in one process and on `hf-pals bench adapters`' batch (real
Quora pairs, torch's dropout in the encoder), the benchmark's plain fine-tuning and PAL steps and PAL
steps whose TS(h) is cut down:

- `products`: V_E, the packed Q/K/V product, Q K^T, P V (with the scores in place of P) and V_D, with the
  same one-copy-each head layouts as the kernel: every matrix product of TS(h), no softmax, no mask, no
  dropout, no GELU. What a perfect fusion of every element-wise pass would leave;
- `low_rank`: V_D V_E h, the two projections alone;
- `none`: TS(h) = 0, the wrapper's own path (the layer written out from its pieces).

Each with the encoder trained and frozen. The cut-down TS(h) are wrong on purpose (timing only) and are
set on each `PALLayer` of their own model (an instance attribute), never on the class.

    hf-pals bench pal-bound --data-dir ../shared/data/cs224n [--architecture bert-base] [--repeats 20]
"""

from __future__ import annotations

import copy
from types import MethodType
from typing import Any, Optional

import torch

from ..tuner.attention import packed_projection
from ..tuner.layer import PALLayer
from .adapters import build, candidate_loss, make_batch, on_base
from .common import interleaved_times, medians, paired_ratio, train_step_fn


def ts_products(layer: PALLayer, adapter_name: str, hidden_states: torch.Tensor, attention_mask) -> torch.Tensor:
    """Every matrix product of a PAL's TS(h) and nothing else: V_D((Q K^T) V) per head, Q/K/V from one
    packed product of V_E h (timing only: no softmax, mask, dropout or GELU)."""
    x = layer.pals_encoder[adapter_name](hidden_states)
    projections = [getattr(layer, name)[adapter_name] for name in ("pals_query", "pals_key", "pals_value")]
    qkv = packed_projection(*projections, x, 1.0)
    batch, length, width = x.shape
    heads = layer.pals_num_heads[adapter_name]
    rows, head_size = batch * heads, width // heads
    q, k, v = qkv.view(batch, length, 3, heads, head_size).permute(2, 0, 3, 1, 4).unbind(0)
    q3, k3, v3 = (t.reshape(rows, length, head_size) for t in (q, k, v))  # one copy each, as the kernel's
    context = torch.bmm(torch.bmm(q3, k3.transpose(1, 2)), v3)
    context = context.view(batch, heads, length, head_size).transpose(1, 2).reshape(batch, length, width)
    return layer.pals_decoder[adapter_name](context)


def ts_low_rank(layer: PALLayer, adapter_name: str, hidden_states: torch.Tensor, attention_mask) -> torch.Tensor:
    """V_D V_E h: the two projections of TS(h) alone (timing only)."""
    return layer.pals_decoder[adapter_name](layer.pals_encoder[adapter_name](hidden_states))


def ts_none(layer: PALLayer, adapter_name: str, hidden_states: torch.Tensor, attention_mask) -> torch.Tensor:
    """TS(h) = 0: the cost of the PAL layer's own path without any PAL work (timing only)."""
    return torch.zeros_like(hidden_states)


#: The cut-down TS(h): name -> function(layer, adapter_name, hidden_states, attention_mask).
CUTS = {"products": ts_products, "low_rank": ts_low_rank, "none": ts_none}
ENCODERS = ("pal", "pal_frozen_encoder")


def with_cut(model: torch.nn.Module, cut: str) -> int:
    """Give every `PALLayer` of `model` the cut-down TS(h) `cut` (an instance attribute, so other models
    are untouched); the number of layers changed."""
    changed = 0
    for module in model.modules():
        if isinstance(module, PALLayer):
            module.task_specific = MethodType(CUTS[cut], module)
            changed += 1
    return changed


def run(
    data_dir: str,
    base_model: str,
    batch_size: int = 32,
    max_length: int = 64,
    repeats: int = 20,
    architecture: Optional[str] = None,
) -> dict[str, Any]:
    """The figures (module docstring) for `base_model`, or an encoder of `architecture`'s shape with
    random weights and `base_model`'s tokenizer (as `hf-pals bench adapters --architecture`)."""
    return on_base(base_model, architecture, lambda base, label: _run(data_dir, base, label, batch_size, max_length, repeats))


def _run(data_dir: str, base: str, label: str, batch_size: int, max_length: int, repeats: int) -> dict[str, Any]:
    batch, labels = make_batch(base, data_dir, batch_size, max_length)
    steps = {}
    for name, candidate, cut in [("full_finetune", "full_finetune", None)] + [
        (encoder if cut is None else f"{encoder}/{cut}", encoder, cut) for encoder in ENCODERS for cut in (None, *CUTS)
    ]:
        wrapper, _ = build(candidate, base)
        if cut is not None and not with_cut(wrapper, cut):
            raise RuntimeError(f"{name}: the model has no PAL layers to cut down")
        steps[name] = train_step_fn(wrapper, candidate_loss(wrapper, candidate, copy.copy(batch), labels))
    rounds = interleaved_times(steps, warmup=2, repeats=repeats)
    over = {name: round(paired_ratio(rounds, name, "full_finetune"), 3) for name in steps if name != "full_finetune"}
    return {
        "base_model": label,
        "batch": {"task": "quora", "rows": batch_size, "max_length": max_length, "threads": torch.get_num_threads()},
        "train_step_seconds": {name: round(t, 4) for name, t in medians(rounds).items()},
        # Median over rounds of each step's time over the plain fine-tuning step timed beside it.
        "over_full_finetune": over,
        "targets": {"pal": "<= 1.08", "pal_frozen_encoder": "<= 0.75"},
        # Whether even TS(h) with every element-wise pass removed meets the target: if not, no fusion can.
        "products_alone_meet_target": {
            "pal": over["pal/products"] <= 1.08,
            "pal_frozen_encoder": over["pal_frozen_encoder/products"] <= 0.75,
        },
    }


__all__ = ["run", "with_cut", "ts_products", "ts_low_rank", "ts_none", "CUTS"]
