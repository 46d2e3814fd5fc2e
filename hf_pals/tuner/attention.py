"""MH of the PAL paper: multi-head self-attention in the projected d_s space, and a CPU kernel for it in
training.

Why a kernel of our own: with dropout on the attention probabilities (the paper's code has it, as BERT's
attention does), `scaled_dot_product_attention` on a CPU leaves its fused kernel for the unfused math
and draws its dropout mask with `bernoulli_`. `AttentionWithDropout` computes the same function with
fewer passes over the (batch x heads x L x L) tensors, which is what the projected attention costs on a
CPU (its matrix products are small; its L x L passes are not):

- Q, K and V are copied once each, from the packed projection, into the layout of the batched
  products; the context comes out in one pass (with the 1/(1-p) scaling), and the backward hands back
  one packed gradient;
- the 1/sqrt(d_h) scale is folded into the query weights (a d_s x d_s product, not a pass over Q);
- a key-padding mask (what transformers hands a BERT layer: the same keys masked for every query) rides
  in the Q K^T product as one extra column (1 in Q, 0 or the dtype's lowest value in K), so masking
  costs no pass over the scores;
- the dropout mask comes from `fast_dropout.keep_mask` (four 16-bit draws per 64-bit random word) and is
  applied as one multiply; the backward needs only the softmax output and the kept probabilities
  (dS = P_kept * dP' - P * rowsum(P_kept * dP'), dP' the gradient of the kept probabilities), so the
  mask is not kept for it.

On other devices, in eval (p = 0) and in float16, SDPA's own kernels run (GPU kernels fuse dropout).
Under CPU autocast to bfloat16 (mixed-precision training, the Trainer's `bf16=True`) the projections
arrive in bfloat16 and the kernel computes in it, autocast off inside: its products accumulate in float32
(oneDNN) and torch's CPU softmax of bfloat16 does too, as SDPA's own CPU paths do.
`HeadsAttentionWithDropout` is the same kernel for separate Q, K, V: the encoder's own attention uses it
through `hf_pals.encoder_dropout.use_fast_dropout`.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import dropout as fast_dropout

#: The dtypes the CPU kernel computes in (float16 is left to SDPA: its lowest value is no safe mask).
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float64)


def kernel_applies(*tensors: torch.Tensor) -> bool:
    """Whether the CPU training kernel takes these tensors: on the CPU and all of one dtype it computes in
    (`KERNEL_DTYPES`; bfloat16 is what CPU autocast, the Trainer's `bf16=True`, hands it)."""
    first = tensors[0]
    return first.device.type == "cpu" and first.dtype in KERNEL_DTYPES and all(t.dtype == first.dtype for t in tensors)


def _without_autocast(kernel):
    """Run `kernel` with CPU autocast off: its products run in its tensors' dtype (autocast would recast
    them, and their `out=` buffers)."""

    @functools.wraps(kernel)
    def run(*args):
        with torch.autocast("cpu", enabled=False):
            return kernel(*args)

    return run


def projected_self_attention(
    query: nn.Linear, key: nn.Linear, value: nn.Linear, x: torch.Tensor, attention_mask, num_heads: int, dropout: float
) -> torch.Tensor:
    """MH of the paper: multi-head self-attention in the d_s space, without an output projection
    (V_D plays that role). `attention_mask` is what transformers 5.x hands a layer: a bool mask (True =
    attend), an additive float mask, or `None`; it broadcasts to (batch, heads, L, L). `dropout` is the
    attention-probability dropout (0 in eval).

    Q, K and V come from one matrix product with the three projections' weights stacked (the query's
    scaled by 1/sqrt(d_h)): the same function as three `Linear` calls and a scaled product, with one
    matmul (and one in backward) instead of three on a d_s-wide input. The weights stay three `Linear`s,
    so the saved keys (`pals_query`/`pals_key`/`pals_value`) do not change."""
    batch, length, width = x.shape
    if width % num_heads:
        raise ValueError(f"the PAL width {width} is not a multiple of pal_num_heads={num_heads}")
    head_size = width // num_heads
    qkv = packed_projection(query, key, value, x, head_size**-0.5)
    if dropout > 0.0 and kernel_applies(qkv):
        return AttentionWithDropout.apply(qkv, attention_mask, num_heads, dropout)
    q, k, v = qkv.view(batch, length, 3, num_heads, head_size).permute(2, 0, 3, 1, 4).unbind(0)
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout, scale=1.0)
    return context.transpose(1, 2).reshape(batch, length, width)


def packed_projection(query: nn.Linear, key: nn.Linear, value: nn.Linear, x: torch.Tensor, scale: float) -> torch.Tensor:
    """[Q * scale, K, V] of `x` as one (batch, L, 3 d_s) product with the three projections' weights stacked
    (the query's weight and bias scaled): one matmul (and one in backward) instead of three."""
    weight = torch.cat((query.weight * scale, key.weight, value.weight))
    bias = torch.cat((query.bias * scale, key.bias, value.bias))
    return F.linear(x, weight, bias)


def key_padding_bias(attention_mask, batch: int, length: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """The additive (batch, L) key bias of a mask that masks the same keys for every head and query
    (0 = attend, the dtype's lowest value = masked, or the float mask's own values), or `None` for any
    other mask. transformers' BERT masks are of this kind: (batch, 1, L, L), each row a copy of the
    example's padding."""
    if attention_mask is None or attention_mask.dim() != 4 or attention_mask.shape[1] != 1:
        return None
    if attention_mask.shape[-1] != length or attention_mask.shape[0] not in (1, batch):
        return None
    keys = attention_mask[:, 0, 0, :]
    if attention_mask.shape[2] != 1 and not torch.equal(attention_mask[:, 0], keys[:, None, :].expand_as(attention_mask[:, 0])):
        return None  # a mask that differs between queries (causal, or per-query): the general path
    if keys.dtype == torch.bool:
        bias = torch.zeros(keys.shape, dtype=dtype, device=keys.device).masked_fill_(keys.logical_not(), torch.finfo(dtype).min)
    else:
        bias = _lowest_clamped(keys, dtype)
    return bias.expand(batch, length)


def _lowest_clamped(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float mask in `dtype`, values below its lowest raised to it: float32's lowest (transformers'
    masked value) would become -inf in bfloat16, and a row with every key at -inf a row of NaN."""
    if mask.dtype == dtype:
        return mask
    return mask.clamp(min=torch.finfo(dtype).min).to(dtype)


def _scores(q_heads, k_heads, attention_mask, scale: float):
    """Q K^T * scale for (batch, heads, L, d_h) views (self-attention: one L), as (batch * heads, L, L) with the mask applied,
    and what the backward needs: the two operands (with the bias column for a key-padding mask) and
    `no_keys`, what gets no score gradient (examples of a key-padding mask, or the mask's positions of a
    general one, when some query has no key to attend; else None)."""
    batch, heads, length, head_size = q_heads.shape
    rows = batch * heads
    key_bias = key_padding_bias(attention_mask, batch, length, q_heads.dtype)
    no_keys = None
    if attention_mask is None or key_bias is not None:
        columns = head_size + (key_bias is not None)  # the bias column: 1 in Q, the key bias in K
        q3 = q_heads.new_empty(batch, heads, length, columns)
        k3 = k_heads.new_empty(batch, heads, length, columns)
        if scale == 1.0:
            q3[..., :head_size] = q_heads
        else:
            torch.mul(q_heads, scale, out=q3[..., :head_size])
        k3[..., :head_size] = k_heads
        if key_bias is not None:
            q3[..., head_size] = 1.0
            k3[..., head_size] = key_bias[:, None, :]
            if attention_mask.dtype == torch.bool:
                empty = torch.nonzero(~attention_mask[:, 0, 0, :].expand(batch, length).any(-1)).flatten()
                no_keys = empty if empty.numel() else None
        q3, k3 = q3.view(rows, length, columns), k3.view(rows, length, columns)
        return torch.bmm(q3, k3.transpose(1, 2)), q3, k3, no_keys
    q3 = (q_heads if scale == 1.0 else q_heads * scale).reshape(rows, length, head_size)
    k3 = k_heads.reshape(rows, length, head_size)
    scores = torch.bmm(q3, k3.transpose(1, 2))
    scores4 = scores.view(batch, heads, length, length)
    if attention_mask.dtype == torch.bool:
        masked = attention_mask.logical_not()
        scores4.masked_fill_(masked, torch.finfo(scores.dtype).min)
        if masked.all(dim=-1).any():
            no_keys = masked
    else:
        scores4.add_(_lowest_clamped(attention_mask, scores.dtype))
    return scores, q3, k3, no_keys


@_without_autocast
def _attend(ctx, q_heads, k_heads, v_heads, attention_mask, p: float, scale: float) -> torch.Tensor:
    """The forward of both kernels: the context as (batch, L, heads, d_h), contiguous."""
    batch, heads, length, head_size = q_heads.shape
    scores, q3, k3, no_keys = _scores(q_heads, k_heads, attention_mask, scale)
    v3 = v_heads.reshape(batch * heads, length, head_size)
    probs = torch.softmax(scores, dim=-1)
    keep = fast_dropout.keep_mask(probs.shape, p, probs.device)
    kept = torch.mul(probs, keep.view(torch.uint8), out=scores)  # the scores' buffer is free now
    context = torch.bmm(kept, v3).view(batch, heads, length, head_size).transpose(1, 2)
    output = q_heads.new_empty(batch, length, heads, head_size)
    torch.mul(context, 1.0 / (1.0 - p), out=output)
    ctx.save_for_backward(q3, k3, v3, probs, kept, no_keys)
    ctx.shape, ctx.p, ctx.scale = (batch, heads, length, head_size), p, scale
    return output


@_without_autocast
def _attend_backward(ctx, grad_output) -> torch.Tensor:
    """Gradients of Q (unscaled), K and V, packed as (3, batch * heads, L, d_h), from the gradient of the
    (batch, L, heads * d_h) context. dS = kept * dKept - P * rowsum(kept * dKept)."""
    q3, k3, v3, probs, kept, no_keys = ctx.saved_tensors
    batch, heads, length, head_size = ctx.shape
    rows = batch * heads
    grad3 = grad_output.new_empty(batch, heads, length, head_size)
    torch.mul(grad_output.view(batch, length, heads, head_size).transpose(1, 2), 1.0 / (1.0 - ctx.p), out=grad3)
    grad3 = grad3.view(rows, length, head_size)
    grads = grad_output.new_empty(3, rows, length, head_size)  # dQ, dK, dV
    torch.bmm(kept.transpose(1, 2), grad3, out=grads[2])
    grad_scores = torch.bmm(grad3, v3.transpose(1, 2)).mul_(kept)  # d(kept) * kept
    grad_scores.addcmul_(probs, grad_scores.sum(-1, keepdim=True), value=-1.0)
    if no_keys is not None:
        if no_keys.dtype == torch.bool:
            grad_scores.view(batch, heads, length, length).masked_fill_(no_keys, 0.0)
        else:
            grad_scores.view(batch, -1)[no_keys] = 0.0
    torch.bmm(grad_scores, k3[..., :head_size], out=grads[0])
    if ctx.scale != 1.0:
        grads[0].mul_(ctx.scale)
    torch.bmm(grad_scores.transpose(1, 2), q3[..., :head_size], out=grads[1])  # q3 holds the scale already
    return grads


class AttentionWithDropout(torch.autograd.Function):
    """Dropout(softmax(Q K^T + mask)) V for each head, from the packed projections `qkv` (batch, L, 3·d_s)
    = [Q / sqrt(d_h), K, V] to the context (batch, L, d_s): what `scaled_dot_product_attention(q, k, v,
    attn_mask, dropout_p=p, scale=1)` computes on the split heads, with inverted dropout. The PAL's MH.

    A bool `attention_mask` (True = attend) gives masked keys the dtype's lowest score (a row with every
    key masked then attends uniformly instead of giving NaN, and gets no gradient through its scores); a
    float mask is added. Masked keys get zero probability, hence zero score gradients."""

    @staticmethod
    def forward(ctx, qkv, attention_mask, num_heads: int, p: float):
        batch, length, packed = qkv.shape
        head_size = packed // 3 // num_heads
        q, k, v = qkv.view(batch, length, 3, num_heads, head_size).permute(2, 0, 3, 1, 4)  # (B, H, L, d_h) views
        return _attend(ctx, q, k, v, attention_mask, p, 1.0).view(batch, length, packed // 3)

    @staticmethod
    def backward(ctx, grad_output):
        batch, heads, length, head_size = ctx.shape
        grads = _attend_backward(ctx, grad_output).view(3, batch, heads, length, head_size)
        return grads.permute(1, 3, 0, 2, 4).reshape(batch, length, 3 * heads * head_size), None, None, None


class HeadsAttentionWithDropout(torch.autograd.Function):
    """The same kernel for separate (batch, heads, L, d_h) Q, K, V and a `scale` (what transformers'
    attention functions receive): Dropout(softmax(Q K^T * scale + mask)) V as (batch, L, heads, d_h).
    Self-attention only (one length for queries and keys)."""

    @staticmethod
    def forward(ctx, q, k, v, attention_mask, p: float, scale: float):
        return _attend(ctx, q, k, v, attention_mask, p, scale)

    @staticmethod
    def backward(ctx, grad_output):
        batch, heads, length, head_size = ctx.shape
        grads = _attend_backward(ctx, grad_output.reshape(batch, length, heads * head_size))
        grads = grads.view(3, batch, heads, length, head_size)
        return grads[0], grads[1], grads[2], None, None, None


__all__ = [
    "projected_self_attention",
    "AttentionWithDropout",
    "HeadsAttentionWithDropout",
    "key_padding_bias",
    "kernel_applies",
    "KERNEL_DTYPES",
]
