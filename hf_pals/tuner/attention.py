"""MH of the PAL paper: multi-head self-attention in the projected d_s space, and a CPU kernel for it in
training.

Why a kernel of our own: with dropout on the attention probabilities (the paper's code has it, as BERT's
attention does), `scaled_dot_product_attention` on a CPU leaves its fused kernel for the unfused math
and draws its dropout mask with `bernoulli_`: 13.5 ms forward + backward for one layer of the adapter
benchmark's batch (32 x 6 heads x 64 x 64), against 3-4 ms without dropout. `AttentionWithDropout` does
the same math in 5.9 ms (each timed alone, 2 threads): the cheaper mask of `fast_dropout.dropout_mask`,
the kept probabilities written into the scores' buffer, and a backward written out so no mask-fill of
the L x L gradient is copied. On other devices, and under autocast, SDPA's own kernels run (GPU kernels
fuse dropout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import dropout as fast_dropout


def projected_self_attention(
    query: nn.Linear, key: nn.Linear, value: nn.Linear, x: torch.Tensor, attention_mask, num_heads: int, dropout: float
) -> torch.Tensor:
    """MH of the paper: multi-head self-attention in the d_s space, without an output projection
    (V_D plays that role). `attention_mask` is what transformers 5.x hands a layer: a bool mask (True =
    attend), an additive float mask, or `None`. `dropout` is the attention-probability dropout (0 in eval).

    Q, K and V come from one matrix product with the three projections' weights stacked: the same
    numbers as three `Linear` calls, but one matmul (and one in backward) instead of three on a d_s-wide
    input, which is what small projections cost on a CPU. The weights stay three `Linear`s, so the saved
    keys (`pals_query`/`pals_key`/`pals_value`) do not change."""
    batch, length, width = x.shape
    weight = torch.cat((query.weight, key.weight, value.weight))
    bias = torch.cat((query.bias, key.bias, value.bias))
    qkv = F.linear(x, weight, bias).view(batch, length, 3, num_heads, width // num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    if dropout > 0.0 and q.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
        context = AttentionWithDropout.apply(q, k, v, attention_mask, dropout)
    else:
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout)
    return context.transpose(1, 2).reshape(batch, length, width)


class AttentionWithDropout(torch.autograd.Function):
    """Dropout(softmax(Q K^T / sqrt(d_h) + mask)) V for (batch, heads, length, d_h) tensors: what
    `scaled_dot_product_attention(q, k, v, attn_mask, dropout_p=p)` computes, with inverted dropout.

    A bool `attention_mask` (True = attend) fills the scores of masked keys with the dtype's lowest value
    (a row with every key masked then attends uniformly instead of giving NaN); a float mask is added.
    Masked keys get zero probability, so their score gradients are zero without masking the L x L
    gradient, except in a row with every key masked: only then is it masked (a filled score has none)."""

    @staticmethod
    def forward(ctx, q, k, v, attention_mask, p: float):
        batch, heads, length, head_size = q.shape
        scale = head_size**-0.5
        # (batch * heads, length, d_h) copies, so every product below is one bmm on contiguous matrices
        q3 = (q * scale).reshape(batch * heads, length, head_size)
        k3, v3 = k.reshape(batch * heads, length, head_size), v.reshape(batch * heads, length, head_size)
        scores = torch.bmm(q3, k3.transpose(1, 2))
        masked_rows = None  # the bool mask's masked positions, kept only if a row has no key to attend
        if attention_mask is not None:
            scores4 = scores.view(batch, heads, length, length)
            if attention_mask.dtype == torch.bool:
                masked = attention_mask.logical_not()
                scores4.masked_fill_(masked, torch.finfo(scores.dtype).min)
                if masked.all(dim=-1).any():
                    masked_rows = masked
            else:
                scores4.add_(attention_mask)
        probs = torch.softmax(scores, dim=-1)
        dropped = fast_dropout.dropout_mask(probs.shape, p, probs.device)
        kept = torch.where(dropped, probs.new_zeros(()), probs, out=scores)  # the scores' buffer is free now
        context = torch.bmm(kept, v3).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(q3, k3, v3, probs, kept, dropped, masked_rows)
        ctx.scale, ctx.p = scale, p
        return context.view(batch, heads, length, head_size)

    @staticmethod
    def backward(ctx, grad_context):
        q3, k3, v3, probs, kept, dropped, masked_rows = ctx.saved_tensors
        batch, heads, length, head_size = grad_context.shape
        grad3 = grad_context.reshape(batch * heads, length, head_size) * (1.0 / (1.0 - ctx.p))
        grad_v = torch.bmm(kept.transpose(1, 2), grad3)
        grad_probs = torch.bmm(grad3, v3.transpose(1, 2)).masked_fill_(dropped, 0.0)
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        if masked_rows is not None:
            grad_scores.view(batch, heads, length, length).masked_fill_(masked_rows, 0.0)
        grad_q = torch.bmm(grad_scores, k3).mul_(ctx.scale)
        grad_k = torch.bmm(grad_scores.transpose(1, 2), q3)  # q3 holds the scale already
        shape = (batch, heads, length, head_size)
        return grad_q.view(shape), grad_k.view(shape), grad_v.view(shape), None, None


__all__ = ["projected_self_attention", "AttentionWithDropout"]
