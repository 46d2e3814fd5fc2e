"""Tests for the encoder's cheaper CPU dropout (hf_pals.encoder_dropout): the same dropout as torch's,
the attention function against the written-out attention, and a model that saves and evaluates as before."""

import json

import pytest
import torch
from torch import nn
from transformers import AutoModel, BertModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from hf_pals import encoder_dropout
from hf_pals.encoder_dropout import ATTENTION_IMPLEMENTATION, FastDropout, sdpa_with_fast_dropout, use_fast_dropout
from hf_pals.recipe import RecipeError, parse_recipe
from hf_pals.tuner import dropout
from hf_pals.tuner.attention import HeadsAttentionWithDropout

from conftest import tiny_bert_config

pytestmark = pytest.mark.one_thread


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    return BertModel(tiny_bert_config(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.3), add_pooling_layer=False)


def batch():
    input_ids = torch.tensor([[1, 5, 7, 9, 2, 0], [1, 8, 2, 0, 0, 0]])
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}


def test_fast_dropout_drops_with_p_scales_the_rest_and_is_identity_in_eval():
    torch.manual_seed(0)
    layer = FastDropout(0.25)
    x = torch.rand(200_000) + 1.0
    y = layer(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.005
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert layer.eval()(x) is x
    torch.manual_seed(3)
    first = layer.train()(x)
    torch.manual_seed(3)
    assert torch.equal(first, layer(x))  # torch's generator seeds it


def test_use_fast_dropout_swaps_every_dropout_and_keeps_eval_outputs_and_weights(tmp_path):
    model = tiny_bert().eval()
    with torch.no_grad():
        before = model(**batch()).last_hidden_state
    state = {k: v.clone() for k, v in model.state_dict().items()}
    replaced = use_fast_dropout(model)
    assert replaced == 1 + 3 * 2  # embeddings, then attention probabilities, attention output, output per layer
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert all(not m.training for m in model.modules() if isinstance(m, FastDropout))  # eval stays eval
    assert model.config._attn_implementation == ATTENTION_IMPLEMENTATION
    with torch.no_grad():
        torch.testing.assert_close(model(**batch()).last_hidden_state, before, atol=0, rtol=0)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    model.save_pretrained(tmp_path)  # loads anywhere: the attention implementation is not saved
    assert ATTENTION_IMPLEMENTATION not in (tmp_path / "config.json").read_text()
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch()).last_hidden_state, before)


def test_a_trained_step_is_seeded_and_drops_something():
    model = tiny_bert()
    use_fast_dropout(model)
    model.train()
    outs = []
    for _ in range(2):
        torch.manual_seed(11)
        outs.append(model(**batch()).last_hidden_state)
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    with torch.no_grad():
        evaluated = model.eval()(**batch()).last_hidden_state
    assert not torch.allclose(outs[0], evaluated)
    outs[0].sum().backward()
    query = model.encoder.layer[0].attention.self.query.weight
    assert query.grad is not None and query.grad.abs().sum() > 0


class _Module(nn.Module):
    is_causal = False


def heads(batch_size=2, num_heads=3, length=5, head_size=4):
    torch.manual_seed(0)
    return [torch.randn(batch_size, num_heads, length, head_size, dtype=torch.float64, requires_grad=True) for _ in range(3)]


def test_attention_function_equals_written_out_attention_with_the_same_mask(monkeypatch):
    """The kernel path (CPU training) against softmax(QK^T * scale + mask) -> dropout -> V, outputs and
    gradients, with transformers' (batch, 1, L, L) padding mask."""
    q, k, v = heads()
    keys = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    mask = keys[:, None, None, :].expand(2, 1, 5, 5).contiguous()
    torch.manual_seed(1)
    dropped = torch.rand(6, 5, 5) < 0.3
    monkeypatch.setattr(dropout, "keep_mask", lambda shape, p, device=None: dropped.logical_not())
    scale, p = 0.37, 0.3
    got, weights = sdpa_with_fast_dropout(_Module(), q, k, v, mask, dropout=p, scaling=scale)
    assert weights is None
    scores = (q @ k.transpose(-1, -2) * scale).masked_fill(~mask, torch.finfo(q.dtype).min)
    expected = (scores.softmax(-1).masked_fill(dropped.view(2, 3, 5, 5), 0.0) / (1 - p) @ v).transpose(1, 2)
    torch.testing.assert_close(got, expected)
    w = torch.randn_like(got)
    for g, e in zip(torch.autograd.grad((got * w).sum(), (q, k, v)), torch.autograd.grad((expected * w).sum(), (q, k, v))):
        torch.testing.assert_close(g, e)


def test_heads_kernel_passes_gradcheck(monkeypatch):
    q, k, v = heads(batch_size=1, num_heads=2, length=4, head_size=3)
    torch.manual_seed(2)
    kept = torch.rand(2, 4, 4) >= 0.2  # one mask for every call gradcheck makes
    monkeypatch.setattr(dropout, "keep_mask", lambda shape, p, device=None: kept)
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)[:, None, None, :]
    assert torch.autograd.gradcheck(lambda a, b, c: HeadsAttentionWithDropout.apply(a, b, c, mask, 0.2, 0.5), (q, k, v))


def test_attention_function_is_sdpa_where_the_kernel_does_not_apply(monkeypatch):
    """Eval (no dropout), float16 and cross-attention shapes go to transformers' own SDPA function."""
    q, k, v = (t.detach().float() for t in heads())
    calls = []
    monkeypatch.setattr(encoder_dropout.HeadsAttentionWithDropout, "apply", lambda *a: calls.append(a))
    module = _Module()
    got, _ = sdpa_with_fast_dropout(module, q, k, v, None, dropout=0.0, scaling=0.5)
    expected, _ = sdpa_attention_forward(module, q, k, v, None, dropout=0.0, scaling=0.5)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    sdpa_with_fast_dropout(module, q, k[:, :, :3], v[:, :, :3], None, dropout=0.1, scaling=0.5)
    sdpa_with_fast_dropout(module, q.half(), k.half(), v.half(), None, dropout=0.1, scaling=0.5)
    assert calls == []
    sdpa_with_fast_dropout(module, q, k, v, None, dropout=0.1, scaling=0.5)
    assert len(calls) == 1


def test_bf16_autocast_training_runs_the_kernel_in_bfloat16_close_to_float32(monkeypatch):
    """Under CPU autocast to bfloat16 (the Trainer's `bf16=True`) the encoder's projections arrive in
    bfloat16 and the kernel takes them: a training forward and backward close to float32's with the
    same dropout masks, every attention call through the kernel."""
    model = tiny_bert()
    use_fast_dropout(model)
    model.train()
    drawn = []

    def record(shape, p, device=None):
        drawn.append(torch.rand(shape) >= p)
        return drawn[-1]

    calls = []
    real_apply = HeadsAttentionWithDropout.apply
    monkeypatch.setattr(
        encoder_dropout.HeadsAttentionWithDropout, "apply", lambda *a: calls.append(a[0].dtype) or real_apply(*a)
    )
    results = []
    torch.manual_seed(6)
    weights = torch.randn(2, 6, model.config.hidden_size)  # a loss whose gradient reaches the query weights
    for autocast in (False, True):
        if autocast:  # the float32 run's masks again, in the order they were drawn
            replay = iter(list(drawn))
            monkeypatch.setattr(dropout, "keep_mask", lambda shape, p, device=None: next(replay))
        else:
            monkeypatch.setattr(dropout, "keep_mask", record)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            hidden = model(**batch()).last_hidden_state
        (hidden.float() * weights).sum().backward()
        results.append((hidden.float().detach(), model.encoder.layer[0].attention.self.query.weight.grad.clone()))
    assert calls == [torch.float32] * 2 + [torch.bfloat16] * 2  # two layers, float32 then bfloat16
    assert next(replay, None) is None  # the bfloat16 run drew as many masks
    (hidden32, grad32), (hidden16, grad16) = results
    torch.testing.assert_close(hidden16, hidden32, atol=0.05, rtol=0.05)
    assert torch.nn.functional.cosine_similarity(grad16.flatten(), grad32.flatten(), dim=0) > 0.99


def test_recipe_field_fast_dropout_defaults_on_and_must_be_a_bool():
    base = {"base_model": "x", "tasks": {"sst": {}}, "training": {"max_steps": 1}}
    assert parse_recipe(base).fast_dropout is True
    assert parse_recipe({**base, "fast_dropout": False}).fast_dropout is False
    with pytest.raises(RecipeError, match="fast_dropout must be true or false"):
        parse_recipe({**base, "fast_dropout": "yes"}, source="r.yaml")


def test_pretraining_recipe_field_fast_dropout_defaults_on_and_must_be_a_bool():
    from hf_pals.pretraining import parse_pretrain_recipe

    base = {"base_model": "x", "training": {"max_steps": 1}}
    assert parse_pretrain_recipe(base).fast_dropout is True
    with pytest.raises(RecipeError, match="fast_dropout must be true or false"):
        parse_pretrain_recipe({**base, "fast_dropout": 1}, source="p.yaml")


def test_config_json_of_a_fast_dropout_model_names_sdpa_or_nothing(tmp_path):
    model = tiny_bert()
    use_fast_dropout(model)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.get("attn_implementation") in (None, "sdpa")
