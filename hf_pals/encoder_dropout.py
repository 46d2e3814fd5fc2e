"""The shared encoder's own dropout, made cheaper on a CPU: `use_fast_dropout(model)`.

Why: BERT's dropout layers (embeddings, after each attention and feed-forward output) and its
attention-probability dropout draw their masks with torch's `bernoulli_`, which on a CPU costs several
nanoseconds per element. With all-MiniLM-L6-v2 on a batch of 32 x 64 tokens that is ~120 ms of a ~0.6 s
training step (19 calls; measured with torch.profiler, `aten::bernoulli_`), for every hf_pals model,
with or without adapters. And with dropout on the probabilities, `scaled_dot_product_attention` on a CPU
leaves its fused kernel for unfused math.

What changes, and what does not: the same inverted dropout with the same drop probability (rounded to a
multiple of 1/65536), drawn from torch's global generator (`torch.manual_seed` still makes runs repeatable),
through `hf_pals.tuner.dropout` (four 16-bit draws per 64-bit random word) for the `nn.Dropout` layers,
and through the PAL attention kernel (`HeadsAttentionWithDropout`) for the attention probabilities,
registered with transformers' `AttentionInterface` as "hf_pals_sdpa": SDPA itself runs whenever that
kernel does not apply (eval, no dropout, other devices, float16, causal or cross-attention, grouped
heads); under CPU autocast to bfloat16 (`bf16=True`) it computes in bfloat16. No PyTorch or
transformers release has a faster CPU dropout to call instead.

The attention implementation is not saved with the model (transformers drops it from config.json), so
a bundle trained this way loads anywhere, with or without `import hf_pals`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .tuner import dropout as fast_dropout
from .tuner.attention import HeadsAttentionWithDropout, kernel_applies

#: The name of the attention function in transformers' `AttentionInterface`.
ATTENTION_IMPLEMENTATION = "hf_pals_sdpa"


class FastDropout(nn.Dropout):
    """`nn.Dropout` with the mask of `hf_pals.tuner.dropout.keep_mask`: zero each element with
    probability p, scale the rest by 1/(1-p); the identity in eval. Always out of place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout.dropout(x, self.p, self.training)


def sdpa_with_fast_dropout(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask,
    dropout: float = 0.0,
    scaling=None,
    is_causal=None,
    **kwargs,
):
    """transformers' SDPA attention function, with the attention-probability dropout of CPU training
    done by the PAL attention kernel. Same arguments and result: (batch, L, heads, d_h), no weights."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    applies = (
        dropout > 0.0
        and kernel_applies(query, key, value)  # CPU; float32, or bfloat16 under autocast (`bf16=True`)
        and query.shape == key.shape == value.shape  # self-attention, as many key heads as query heads
        and not (causal and attention_mask is None)
        and kwargs.get("position_bias") is None
        and kwargs.get("cache") is None
    )
    if not applies:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return HeadsAttentionWithDropout.apply(query, key, value, attention_mask, dropout, scale), None


def register() -> None:
    """Register "hf_pals_sdpa" with transformers' attention and mask interfaces (it takes SDPA's masks)."""
    AttentionInterface.register(ATTENTION_IMPLEMENTATION, sdpa_with_fast_dropout)
    AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, sdpa_mask)


def use_fast_dropout(model: nn.Module) -> int:
    """Give `model` (a transformers model, a PEFT model around one, or a `MultiTaskModel`) the cheaper
    CPU dropout: every plain `nn.Dropout` becomes a `FastDropout` of the same p, and every transformers
    model in it that uses "sdpa" attention switches to "hf_pals_sdpa". Returns how many dropout layers
    were replaced. Nothing else changes: parameters, state dict and outputs in eval are the same."""
    register()
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p).train(child.training))
                replaced += 1
    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module.config._attn_implementation == "sdpa":
            module.set_attn_implementation(ATTENTION_IMPLEMENTATION)
    return replaced


__all__ = ["ATTENTION_IMPLEMENTATION", "FastDropout", "register", "sdpa_with_fast_dropout", "use_fast_dropout"]
