"""Tests for the adapters' dropout (hf_pals.tuner.dropout) and the PAL attention's CPU training kernel
(hf_pals.tuner.attention.AttentionWithDropout): the mask's statistics, and outputs and gradients equal to
the written-out attention with the same mask."""

import pytest
import torch
from torch import nn

from hf_pals.tuner import attention, dropout
from hf_pals.tuner.attention import AttentionWithDropout, projected_self_attention

pytestmark = pytest.mark.one_thread


# 1. The mask ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_mask_drops_each_lane_with_probability_p_independently(p):
    """Every 16-bit lane of the random words (element index mod 4) drops with probability p, and two
    neighbours drop together with probability p^2 (independent draws)."""
    torch.manual_seed(0)
    n = 1 << 22
    mask = dropout.dropout_mask((n,), p)
    assert mask.dtype == torch.bool and mask.shape == (n,)
    tolerance = 6 * (p * (1 - p) / (n // 4)) ** 0.5  # six standard deviations of one lane's mean
    for lane in range(4):
        assert abs(mask[lane::4].float().mean().item() - p) < tolerance, lane
    both = (mask[:-1] & mask[1:]).float().mean().item()
    assert abs(both - p * p) < 6 * (p * p * (1 - p * p) / n) ** 0.5


def test_dropout_mask_edges_and_seeding():
    assert not dropout.dropout_mask((3, 5, 7), 0.0).any()  # 105 elements: not a multiple of four
    assert dropout.dropout_mask((3, 5, 7), 1.0).all()
    torch.manual_seed(3)
    first = dropout.dropout_mask((4, 9), 0.3)
    torch.manual_seed(3)
    assert torch.equal(first, dropout.dropout_mask((4, 9), 0.3))
    with pytest.raises(ValueError, match="dropout probability"):
        dropout.dropout_mask((2,), 1.5)


def test_dropout_scales_kept_elements_and_is_identity_in_eval():
    torch.manual_seed(0)
    x = torch.rand(1000) + 1.0
    y = dropout.dropout(x, 0.25, training=True)
    kept = y != 0
    assert 0 < kept.sum() < 1000
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert dropout.dropout(x, 0.25, training=False) is x
    assert dropout.dropout(x, 0.0, training=True) is x
    assert not dropout.dropout(x, 1.0, training=True).any()


# 2. The attention kernel -------------------------------------------------------------------------------------


def reference_attention(q, k, v, attention_mask, dropped, p):
    """Dropout(softmax(Q K^T / sqrt(d_h) + mask)) V written out with autograd-tracked operations."""
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores + attention_mask
    probs = scores.softmax(-1).masked_fill(dropped, 0.0) / (1 - p)
    return probs @ v


def packed(q, k, v):
    """The kernel's input, (batch, L, 3 * heads * d_h) = [Q / sqrt(d_h), K, V], from per-head tensors."""
    batch, heads, length, head_size = q.shape
    stacked = torch.stack((q * head_size**-0.5, k, v))  # (3, B, H, L, d_h)
    return stacked.permute(1, 3, 0, 2, 4).reshape(batch, length, 3 * heads * head_size)


def merged(context):
    """(batch, heads, L, d_h) -> (batch, L, heads * d_h), the kernel's output layout."""
    batch, heads, length, head_size = context.shape
    return context.transpose(1, 2).reshape(batch, length, heads * head_size)


@pytest.fixture
def fixed_mask(monkeypatch):
    """Make the kernel draw a known dropout mask, so it can be compared with the reference; the
    fixture returns the dropped positions of a shape."""
    torch.manual_seed(1)
    dropped = {}

    def known(shape, p, device=None):
        dropped.setdefault(tuple(shape), torch.rand(shape) < p)
        return dropped[tuple(shape)].logical_not()

    monkeypatch.setattr(dropout, "keep_mask", known)
    return lambda shape: dropped[tuple(shape)]


def qkv(batch=2, heads=3, length=5, head_size=4, dtype=torch.float64):
    torch.manual_seed(0)
    return [torch.randn(batch, heads, length, head_size, dtype=dtype, requires_grad=True) for _ in range(3)]


def bool_mask(keep_rows):
    keep = torch.tensor(keep_rows, dtype=torch.bool)
    return keep[:, None, None, :]


def transformers_mask(keep_rows):
    """A key-padding mask as transformers 5.x hands it to a BERT layer: (batch, 1, L, L), materialised."""
    keys = bool_mask(keep_rows)
    return keys.expand(keys.shape[0], 1, keys.shape[-1], keys.shape[-1]).contiguous()


MASKS = {
    "none": lambda: None,
    "bool_padding": lambda: bool_mask([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
    "transformers_padding": lambda: transformers_mask([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
    "float_padding": lambda: (~bool_mask([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])).double() * -1e4,
    "bool_fully_masked_row": lambda: bool_mask([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]),
    "transformers_fully_masked_row": lambda: transformers_mask([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]),
    "bool_causal": lambda: torch.ones(5, 5, dtype=torch.bool).tril()[None, None].expand(2, 1, 5, 5),
    "bool_per_query_with_an_empty_row": lambda: torch.tensor(
        [[1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 1, 0, 1], [1, 1, 0, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.bool
    )[None, None].expand(2, 1, 5, 5),
}


@pytest.mark.parametrize("mask_kind", list(MASKS))
def test_attention_with_dropout_equals_written_out_attention_with_gradients(fixed_mask, mask_kind):
    """Same outputs and same Q/K/V gradients as autograd through the written-out attention with the same
    dropout mask, for key-padding masks (the bias-column path) and per-query masks (the general path);
    a row whose keys are all masked gets no gradient through its filled scores."""
    q, k, v = qkv()
    p = 0.3
    attention_mask = MASKS[mask_kind]()
    got = AttentionWithDropout.apply(packed(q, k, v), attention_mask, 3, p)
    dropped = fixed_mask((6, 5, 5)).view(2, 3, 5, 5)  # the kernel draws it for (batch * heads, L, L)
    expected = merged(reference_attention(q, k, v, attention_mask, dropped, p))
    torch.testing.assert_close(got, expected)
    weights = torch.randn_like(got)
    grads = torch.autograd.grad((got * weights).sum(), (q, k, v))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (q, k, v))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e)
    assert dropped.any() and not dropped.all()


def test_key_padding_masks_take_the_bias_column_and_others_do_not():
    """Masks equal for every query (as transformers builds them) become a (batch, L) key bias; causal
    and per-query masks do not (they take the general path)."""
    bias = attention.key_padding_bias(transformers_mask([[1, 1, 0], [1, 0, 0]]), 2, 3, torch.float32)
    lowest = torch.finfo(torch.float32).min
    torch.testing.assert_close(bias, torch.tensor([[0.0, 0.0, lowest], [0.0, lowest, lowest]]))
    assert attention.key_padding_bias(MASKS["bool_causal"](), 2, 5, torch.float32) is None
    assert attention.key_padding_bias(None, 2, 5, torch.float32) is None
    float_mask = MASKS["float_padding"]()
    torch.testing.assert_close(attention.key_padding_bias(float_mask, 2, 5, torch.float64), float_mask[:, 0, 0, :])


def test_attention_with_dropout_passes_gradcheck(fixed_mask):
    q, k, v = qkv(batch=1, heads=2, length=4, head_size=3)
    for mask in (bool_mask([[1, 1, 1, 0]]), torch.ones(4, 4, dtype=torch.bool).tril()[None, None], None):
        assert torch.autograd.gradcheck(
            lambda a, b, c: AttentionWithDropout.apply(packed(a, b, c), mask, 2, 0.2), (q, k, v)
        )


def test_projected_attention_in_training_uses_the_kernel_with_sdpa_numbers(monkeypatch):
    """With no element dropped, the CPU training path gives SDPA's numbers scaled by 1/(1-p); in eval
    (p = 0) SDPA itself runs."""
    torch.manual_seed(0)
    width, heads = 12, 3
    query, key, value = (nn.Linear(width, width) for _ in range(3))
    x = torch.randn(2, 6, width)
    mask = bool_mask([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    calls = []
    real_apply = AttentionWithDropout.apply
    monkeypatch.setattr(dropout, "keep_mask", lambda shape, p, device=None: torch.ones(shape, dtype=torch.bool))
    monkeypatch.setattr(attention.AttentionWithDropout, "apply", lambda *a: calls.append(1) or real_apply(*a))
    trained = projected_self_attention(query, key, value, x, mask, num_heads=heads, dropout=0.2)
    evaluated = projected_self_attention(query, key, value, x, mask, num_heads=heads, dropout=0.0)
    assert len(calls) == 1
    torch.testing.assert_close(trained, evaluated / 0.8, atol=1e-6, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: the kernel, in bfloat16
        mixed = projected_self_attention(query, key, value, x, mask, num_heads=heads, dropout=0.2)
    assert len(calls) == 2 and mixed.dtype == torch.bfloat16
    torch.testing.assert_close(mixed.float(), trained, atol=0.03, rtol=0.03)
    projected_self_attention(query.half(), key.half(), value.half(), x.half(), mask, num_heads=heads, dropout=0.2)
    assert len(calls) == 2  # float16: SDPA's kernels, not this one


@pytest.mark.parametrize("mask_kind", ["none", "transformers_padding", "transformers_fully_masked_row", "bool_causal"])
def test_attention_with_dropout_in_bfloat16_is_close_to_float32(fixed_mask, mask_kind):
    """The kernel in bfloat16 (what CPU autocast hands it) gives float32's outputs and Q/K/V gradients to
    bfloat16's precision, in bfloat16, on both mask paths."""
    q, k, v = (t.detach().float().requires_grad_() for t in qkv(batch=2, heads=3, length=5, head_size=8))
    attention_mask = MASKS[mask_kind]()
    inputs = packed(q, k, v)
    full = AttentionWithDropout.apply(inputs, attention_mask, 3, 0.3)
    half = AttentionWithDropout.apply(inputs.bfloat16(), attention_mask, 3, 0.3)  # the same (fixed) dropout mask
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), full, atol=0.03, rtol=0.03)
    weights = torch.randn_like(full)
    grads_full = torch.autograd.grad((full * weights).sum(), (q, k, v), retain_graph=True)  # `inputs` is shared
    grads_half = torch.autograd.grad((half.float() * weights).sum(), (q, k, v))
    for g, e in zip(grads_half, grads_full):
        assert g.isfinite().all()
        torch.testing.assert_close(g, e, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("per_query", [False, True])
def test_bfloat16_kernel_with_a_float32_lowest_value_mask_stays_finite(fixed_mask, per_query):
    """A float32 mask of float32's lowest value (transformers' masked value) would be -inf in bfloat16;
    the kernel raises it to bfloat16's lowest, so a row with every key masked stays finite (uniform)."""
    q, k, v = (t.detach().float() for t in qkv(batch=2, heads=3, length=5, head_size=8))
    keys = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)[:, None, None, :]
    mask = torch.zeros(keys.shape).masked_fill(~keys, torch.finfo(torch.float32).min)
    if per_query:  # a mask that differs between queries takes the general path
        mask = mask.expand(2, 1, 5, 5).clone()
        mask[0, 0, 0, 1] = torch.finfo(torch.float32).min
    inputs = packed(q, k, v).bfloat16().requires_grad_()
    out = AttentionWithDropout.apply(inputs, mask, 3, 0.3)
    out.float().sum().backward()
    assert out.isfinite().all() and inputs.grad.isfinite().all()


def test_kernel_applies_to_cpu_tensors_of_one_supported_dtype():
    cpu = torch.zeros(2)
    assert attention.kernel_applies(cpu) and attention.kernel_applies(cpu.bfloat16(), cpu.bfloat16())
    assert not attention.kernel_applies(cpu.half())
    assert not attention.kernel_applies(cpu, cpu.bfloat16())
    assert not attention.kernel_applies(torch.zeros(2, device="meta"))


def test_projected_attention_dropout_is_seeded_by_torch():
    torch.manual_seed(0)
    width = 12
    query, key, value = (nn.Linear(width, width) for _ in range(3))
    x = torch.randn(2, 6, width)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(projected_self_attention(query, key, value, x, None, num_heads=3, dropout=0.5))
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    no_dropout = projected_self_attention(query, key, value, x, None, num_heads=3, dropout=0.0)
    assert not torch.allclose(outs[0], no_dropout / 0.5)  # some probabilities were dropped
