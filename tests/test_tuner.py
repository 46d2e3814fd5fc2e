"""Tests for the "pals" PEFT tuner (hf_pals.tuner): registration, save/load, routing, sharing, checkpointing.

Everything runs on tiny random BERTs (hidden 32, 2 layers, vocab 100) on CPU with one thread.
"""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import BertConfig, BertModel

import hf_pals
from hf_pals import BASE_ADAPTER_NAME, PALConfig, PALModel, pal_parameter_count
from hf_pals.tuner import registry
from hf_pals.tuner.layer import PALLayer, projected_self_attention
from peft import PeftModel, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import PeftType

HIDDEN, LAYERS, VOCAB, D_S, HEADS = 32, 2, 100, 12, 2
ATOL = 1e-6
# Adapter names must not be substrings of the prefix "pals_" (PEFT warns), so no "a"/"b".
T1, T2 = "sst", "quora"


# transformers 5.x deprecates gradient_checkpointing_enable / is_gradient_checkpointing (still the API used).
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.one_thread]



def make_bert(dropout=0.1, seed=0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertModel(config).eval()


def pal_config(**overrides):
    kwargs = dict(pal_hidden_size=D_S, pal_num_heads=HEADS, init_pal_weights="bert")
    kwargs.update(overrides)
    return PALConfig(**kwargs)


def scale_pals(model, factor=10.0):
    """Make the (N(0, 0.02)) PAL weights large enough that every adapter changes outputs clearly."""
    with torch.no_grad():
        for name, param in model.named_parameters():  # de-duplicated: shared V_E/V_D scaled once
            if ".pals_" in name:
                param.mul_(factor)


def make_inputs(batch=4, length=7, seed=1):
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (batch, length), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    attention_mask[2, 4:] = 0
    if batch > 3:
        attention_mask[3, 3:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.fixture
def two_adapters():
    """(peft model with T1 and T2, bert-initialised and scaled; an untouched deep copy of its base)."""
    bert = make_bert()
    base = copy.deepcopy(bert)
    model = get_peft_model(bert, pal_config(), adapter_name=T1)
    torch.manual_seed(1)
    model.add_adapter(T2, pal_config())
    scale_pals(model)
    model.eval()
    return model, base


def hidden(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs).last_hidden_state


def pal_layers(model):
    return [m for m in model.modules() if isinstance(m, PALLayer)]


# 1. Registration ------------------------------------------------------------------------------------


def test_registration_maps_pals_to_config_and_tuner():
    assert "PALS" in PeftType.__members__
    assert PeftType("PALS") is PeftType.PALS
    assert PeftType.PALS.value == "PALS"
    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.PALS] is PALConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.PALS] is PALModel
    assert PEFT_TYPE_TO_PREFIX_MAPPING[PeftType.PALS] == "pals_"
    assert PALConfig().peft_type is PeftType.PALS


def test_register_pals_again_is_a_noop(monkeypatch):
    import peft.utils

    def fail(**kwargs):
        raise AssertionError(f"register_peft_method called again with {kwargs}")

    before = (dict(PEFT_TYPE_TO_CONFIG_MAPPING), dict(PEFT_TYPE_TO_TUNER_MAPPING), list(PeftType.__members__))
    monkeypatch.setattr(peft.utils, "register_peft_method", fail)
    registry.register_pals()
    registry.register_pals()
    assert registry._extend_peft_type("PALS") is PeftType.PALS
    after = (dict(PEFT_TYPE_TO_CONFIG_MAPPING), dict(PEFT_TYPE_TO_TUNER_MAPPING), list(PeftType.__members__))
    assert after == before


# 2. Save / load -------------------------------------------------------------------------------------


def test_save_writes_one_folder_per_adapter(two_adapters, tmp_path):
    model, _ = two_adapters
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "adapter_model.safetensors").exists()  # non-"default" names go to subfolders
    for name in (T1, T2):
        folder = tmp_path / name
        assert (folder / "adapter_model.safetensors").is_file()
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["peft_type"] == "PALS"
        assert config["pal_hidden_size"] == D_S and config["init_pal_weights"] == "bert"
        state = load_file(folder / "adapter_model.safetensors")
        prefix = "base_model.model.encoder.layer"
        assert len(state) == LAYERS * 10  # 5 Linear modules (weight + bias) per layer
        # shared V_E is written once per layer, with equal values
        assert torch.equal(state[f"{prefix}.0.pals_encoder.weight"], state[f"{prefix}.1.pals_encoder.weight"])
        assert not torch.equal(state[f"{prefix}.0.pals_query.weight"], state[f"{prefix}.1.pals_query.weight"])


@pytest.mark.parametrize("name", [T1, T2])
def test_peft_from_pretrained_reproduces_outputs(two_adapters, tmp_path, name):
    model, base = two_adapters
    inputs = make_inputs()
    expected = hidden(model, inputs, adapter_names=name)
    assert (expected - hidden(base, inputs)).abs().max() > 1e-3
    model.save_pretrained(tmp_path)

    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / name, adapter_name=name).eval()
    assert torch.allclose(hidden(loaded, inputs), expected, atol=ATOL)
    assert torch.allclose(hidden(loaded, inputs, adapter_names=name), expected, atol=ATOL)
    layers = loaded.base_model.model.encoder.layer
    assert layers[0].pals_encoder[name] is layers[1].pals_encoder[name]  # sharing survives loading


@pytest.mark.parametrize("name", [T1, T2])
def test_transformers_load_adapter_reproduces_outputs(two_adapters, tmp_path, name):
    model, base = two_adapters
    inputs = make_inputs()
    expected = hidden(model, inputs, adapter_names=name)
    model.save_pretrained(tmp_path)

    fresh = copy.deepcopy(base)
    fresh.load_adapter(str(tmp_path / name), adapter_name=name)
    fresh.eval()
    assert len(pal_layers(fresh)) == LAYERS
    assert torch.allclose(hidden(fresh, inputs), expected, atol=ATOL)
    assert fresh.encoder.layer[0].pals_encoder[name] is fresh.encoder.layer[1].pals_encoder[name]


def test_transformers_load_two_adapters_into_one_model(two_adapters, tmp_path):
    model, base = two_adapters
    inputs = make_inputs()
    expected = {name: hidden(model, inputs, adapter_names=name) for name in (T1, T2)}
    assert (expected[T1] - expected[T2]).abs().max() > 1e-3
    model.save_pretrained(tmp_path)

    fresh = copy.deepcopy(base)
    fresh.load_adapter(str(tmp_path / T1), adapter_name=T1)
    fresh.load_adapter(str(tmp_path / T2), adapter_name=T2)
    fresh.eval()
    for layer in pal_layers(fresh):
        assert set(layer.pals_encoder) == {T1, T2}
    for name in (T2, T1):
        fresh.set_adapter(name)
        assert torch.allclose(hidden(fresh, inputs), expected[name], atol=ATOL)


def test_peft_from_pretrained_low_cpu_mem_usage(two_adapters, tmp_path):
    model, base = two_adapters
    inputs = make_inputs()
    expected = hidden(model, inputs, adapter_names=T1)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / T1, adapter_name=T1, low_cpu_mem_usage=True)
    assert torch.allclose(hidden(loaded.eval(), inputs), expected, atol=ATOL)


# 3. disable_adapter ---------------------------------------------------------------------------------


def test_disable_adapter_gives_exact_base_output(two_adapters):
    model, base = two_adapters
    model.base_model.set_adapter([T1, T2])
    inputs = make_inputs()
    base_out = hidden(base, inputs)
    with model.disable_adapter():
        assert torch.equal(hidden(model, inputs), base_out)
        assert torch.equal(hidden(model, inputs, adapter_names=T1), base_out)
        assert torch.equal(hidden(model, inputs, adapter_names=[T1, T2, T1, BASE_ADAPTER_NAME]), base_out)
    assert (hidden(model, inputs) - base_out).abs().max() > 1e-3
    assert (hidden(model, inputs, adapter_names=T1) - base_out).abs().max() > 1e-3


# 4. Parameter count ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, layers, shared",
    [({}, LAYERS, True), ({"share_projections": False}, LAYERS, False), ({"layers_to_transform": [0]}, 1, True)],
)
def test_trainable_parameters_match_formula(overrides, layers, shared):
    model = get_peft_model(make_bert(), pal_config(**overrides), adapter_name=T1)
    expected = pal_parameter_count(HIDDEN, D_S, layers, shared)
    trainable, _ = model.get_nb_trainable_parameters()
    unique = {id(p): p.numel() for p in model.parameters() if p.requires_grad}
    assert trainable == expected
    assert sum(unique.values()) == expected
    assert len(pal_layers(model)) == layers


def test_parameter_count_formula_values():
    # V_E, V_D shared: 2*32*12 + 12 + 32 = 812; MH per layer: 3*(144 + 12) = 468
    assert pal_parameter_count(32, 12, 2, True) == 812 + 2 * 468
    assert pal_parameter_count(32, 12, 2, False) == 2 * 812 + 2 * 468
    assert pal_parameter_count(768, 204, 12, True) == 1_819_836  # the paper's ~1.8M per task


def test_default_pal_hidden_size_resolution():
    assert PALConfig().resolve_pal_hidden_size(768) == 204
    assert PALConfig().resolve_pal_hidden_size(384) == 102
    assert PALConfig().resolve_pal_hidden_size(512) == 138  # 136 rounded to the nearest multiple of 6
    assert PALConfig(pal_num_heads=4).resolve_pal_hidden_size(768) == 204
    assert PALConfig(pal_hidden_size=60).resolve_pal_hidden_size(768) == 60


# 5. Shared projections ------------------------------------------------------------------------------


def test_shared_projections_are_one_parameter_and_get_summed_gradient():
    bert = make_bert()
    base = copy.deepcopy(bert)
    shared = get_peft_model(bert, pal_config(), adapter_name=T1).eval()
    untied = get_peft_model(base, pal_config(share_projections=False), adapter_name=T1).eval()
    s_layers, u_layers = shared.base_model.model.encoder.layer, untied.base_model.model.encoder.layer
    for part in ("pals_encoder", "pals_decoder"):
        assert getattr(s_layers[0], part)[T1].weight is getattr(s_layers[1], part)[T1].weight
        assert getattr(u_layers[0], part)[T1].weight is not getattr(u_layers[1], part)[T1].weight
    assert s_layers[0].pals_query[T1].weight is not s_layers[1].pals_query[T1].weight
    # Give the untied model exactly the shared model's values: the forwards are then identical, and the
    # shared gradient must be the sum of the two untied per-layer gradients.
    with torch.no_grad():
        for s_layer, u_layer in zip(s_layers, u_layers):
            for part in PALLayer.adapter_layer_names:
                getattr(u_layer, part)[T1].load_state_dict(getattr(s_layer, part)[T1].state_dict())
    inputs = make_inputs()
    weights = torch.linspace(-1, 1, HIDDEN)
    outs = []
    for model in (shared, untied):
        out = model(**inputs).last_hidden_state
        (out * weights).sum().backward()
        outs.append(out.detach())
    assert torch.allclose(outs[0], outs[1], atol=ATOL)
    for part in ("pals_encoder", "pals_decoder"):
        g_shared = getattr(s_layers[0], part)[T1].weight.grad
        g0, g1 = (getattr(u_layers[i], part)[T1].weight.grad for i in (0, 1))
        assert g0.abs().sum() > 0 and g1.abs().sum() > 0
        assert torch.allclose(g_shared, g0 + g1, atol=1e-6, rtol=1e-4)

    before = s_layers[0].pals_encoder[T1].weight.detach().clone()
    torch.optim.SGD([p for p in shared.parameters() if p.requires_grad], lr=0.1).step()
    after0, after1 = s_layers[0].pals_encoder[T1].weight, s_layers[1].pals_encoder[T1].weight
    assert not torch.equal(after0, before)
    assert torch.equal(after0, after1)


# 6. Mixed-task batches ------------------------------------------------------------------------------


@pytest.mark.parametrize("padded", [True, False])
def test_mixed_batch_equals_rows_run_alone(two_adapters, padded):
    model, base = two_adapters
    inputs = make_inputs()
    if not padded:
        inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])
    names = [T1, T2, T1, BASE_ADAPTER_NAME]
    mixed = hidden(model, inputs, adapter_names=names)
    with model.disable_adapter():
        disabled = hidden(model, inputs)
    for i, name in enumerate(names):
        row = {k: v[i : i + 1] for k, v in inputs.items()}
        alone = hidden(model, row, adapter_names=name)
        assert torch.allclose(mixed[i], alone[0], atol=ATOL), (i, name)
        other = T2 if name == T1 else T1
        assert (mixed[i] - hidden(model, row, adapter_names=other)[0]).abs().max() > 1e-3
    assert torch.allclose(mixed[3], disabled[3], atol=ATOL)
    assert torch.allclose(mixed[3], hidden(base, inputs)[3], atol=ATOL)
    # the same task for the whole batch as a string or as a list gives the same result
    assert torch.allclose(hidden(model, inputs, adapter_names=[T2] * 4), hidden(model, inputs, adapter_names=T2), atol=ATOL)


@pytest.mark.parametrize(
    "names",
    [[T1, T1, T2, T2], [T2, T2, T2, T1], [T1, T1, T2, BASE_ADAPTER_NAME], [BASE_ADAPTER_NAME, T1, T1, T2]],
    ids=["blocks-tiling", "blocks-reordered", "blocks-then-base", "base-first"],
)
def test_mixed_batch_in_task_blocks_equals_rows_run_alone_with_gradients(two_adapters, names):
    """Rows grouped by task (how `encode_mixed` builds batches) take views and one concatenation instead of
    an index scatter; outputs and the adapters' gradients still equal running each task's rows alone."""
    model, _ = two_adapters
    inputs = make_inputs()
    model.train()
    for module in model.modules():  # deterministic: no dropout, so mixed and alone runs are comparable
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    for layer in pal_layers(model):
        layer.pals_dropout = {name: 0.0 for name in layer.pals_dropout}
    params = {n: p for n, p in model.named_parameters() if ".pals_" in n}

    def grads_of(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in params.items()}

    mixed_out = model(**inputs, adapter_names=names).last_hidden_state
    mixed_grads = grads_of(mixed_out.pow(2).sum())
    alone_loss, alone_rows = 0.0, []
    for i, name in enumerate(names):
        row = {k: v[i : i + 1] for k, v in inputs.items()}
        out = model(**row, adapter_names=name).last_hidden_state
        alone_rows.append(out[0])
        alone_loss = alone_loss + out.pow(2).sum()
    torch.testing.assert_close(mixed_out, torch.stack(alone_rows), atol=1e-5, rtol=1e-5)
    alone_grads = grads_of(alone_loss)
    for n in params:
        torch.testing.assert_close(mixed_grads[n], alone_grads[n], atol=1e-4, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in mixed_grads.values())


def test_projected_self_attention_equals_the_written_out_multi_head_attention():
    """The fused Q/K/V product gives MH of the paper: per head softmax(Q K^T / sqrt(d_h) + mask) V, with
    Q, K, V from the three separate projections, and padded keys ignored."""
    torch.manual_seed(0)
    width, heads, batch, length = 12, 3, 2, 5
    query, key, value = (nn.Linear(width, width) for _ in range(3))
    x = torch.randn(batch, length, width)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    mask = keep[:, None, None, :]
    got = projected_self_attention(query, key, value, x, mask, num_heads=heads, dropout=0.0)

    def split(t):
        return t.view(batch, length, heads, width // heads).transpose(1, 2)

    q, k, v = split(query(x)), split(key(x)), split(value(x))
    scores = q @ k.transpose(-1, -2) / (width // heads) ** 0.5
    scores = scores.masked_fill(~mask, float("-inf"))
    expected = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, width)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    x2 = x.clone()
    x2[1, 3:] = 100.0  # padded positions must not change the unpadded rows
    again = projected_self_attention(query, key, value, x2, mask, num_heads=heads, dropout=0.0)
    torch.testing.assert_close(again[1, :3], got[1, :3], atol=1e-6, rtol=1e-5)


def test_unknown_adapter_name_raises(two_adapters):
    model, _ = two_adapters
    inputs = make_inputs()
    with pytest.raises(ValueError, match="nope"):
        model(**inputs, adapter_names=[T1, "nope", T1, T2])
    with pytest.raises(ValueError, match="nope"):
        model(**inputs, adapter_names="nope")


def test_wrong_length_adapter_names_raises(two_adapters):
    model, _ = two_adapters
    with pytest.raises(ValueError, match="2 entries for a batch of 4"):
        model(**make_inputs(), adapter_names=[T1, T2])


# 7. delete_adapter / unload -------------------------------------------------------------------------


def test_delete_adapter_removes_it_everywhere(two_adapters):
    model, _ = two_adapters
    inputs = make_inputs()
    expected = hidden(model, inputs, adapter_names=T1)
    model.base_model.delete_adapter(T2)
    assert set(model.peft_config) == {T1}
    layers = pal_layers(model)
    assert len(layers) == LAYERS
    for layer in layers:
        for part in PALLayer.adapter_layer_names + PALLayer.other_param_names:
            assert set(getattr(layer, part)) == {T1}, part
    assert not any(f".{T2}." in name for name, _ in model.named_parameters())
    assert torch.equal(hidden(model, inputs, adapter_names=T1), expected)
    assert torch.equal(hidden(model, inputs), expected)
    with pytest.raises(ValueError, match=T2):
        model(**inputs, adapter_names=T2)


def test_unload_returns_plain_bert(two_adapters):
    model, base = two_adapters
    inputs = make_inputs()
    plain = model.unload()
    assert type(plain) is BertModel
    assert not pal_layers(plain)
    assert not any("pals_" in name for name, _ in plain.named_parameters())
    assert torch.equal(hidden(plain, inputs), hidden(base, inputs))


# 8. Gradient checkpointing --------------------------------------------------------------------------


def _loss_and_grads(checkpointing, reentrant=None, enable_before_wrap=False):
    bert = make_bert(dropout=0.0)
    if checkpointing and enable_before_wrap:
        bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    model = get_peft_model(bert, pal_config(pal_dropout=0.0), adapter_name=T1)
    torch.manual_seed(1)
    model.add_adapter(T2, pal_config(pal_dropout=0.0))
    model.base_model.set_adapter([T1, T2])
    scale_pals(model)
    calls = []
    if checkpointing:
        if not enable_before_wrap:
            bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
        for layer in pal_layers(model):
            real = layer.base_layer._gradient_checkpointing_func

            def spy(*args, _real=real, **kwargs):
                calls.append(1)
                return _real(*args, **kwargs)

            layer.base_layer._gradient_checkpointing_func = spy
    model.train()
    out = model(**make_inputs(), adapter_names=[T1, T2, BASE_ADAPTER_NAME, T1]).last_hidden_state
    loss = (out * torch.linspace(-1, 1, HIDDEN)).sum()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, len(calls)


@pytest.mark.parametrize("enable_before_wrap", [False, True], ids=["enable-after-wrap", "enable-before-wrap"])
@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_gradient_checkpointing_matches_plain_backward(reentrant, enable_before_wrap):
    # No extra step is needed for use_reentrant=True: transformers' gradient_checkpointing_enable calls
    # enable_input_require_grads() on input_ids models, so the checkpointed layer inputs require grad.
    ref_loss, ref_grads, _ = _loss_and_grads(False)
    loss, grads, calls = _loss_and_grads(True, reentrant, enable_before_wrap)
    assert calls == LAYERS  # the PAL path really went through the checkpoint function, once per layer
    assert torch.allclose(loss, ref_loss, atol=1e-5)
    assert set(grads) == set(ref_grads)
    assert any(f".{T1}." in n for n in grads) and any(f".{T2}." in n for n in grads)
    for name, ref in ref_grads.items():
        assert ref is not None and grads[name] is not None, name
        if not (".pals_key." in name and name.endswith(".bias")):  # key bias: softmax-invariant, grad ~0
            assert ref.abs().sum() > 0, name
        assert torch.allclose(grads[name], ref, atol=1e-6, rtol=1e-4), name


# 9. Routing does not call set_adapter --------------------------------------------------------------


def test_routing_keeps_requires_grad_and_never_calls_set_adapter(two_adapters, monkeypatch):
    model, _ = two_adapters
    model.base_model.set_adapter([T1, T2])
    adapter_params = {n: p for n, p in model.named_parameters() if ".pals_" in n}
    assert adapter_params and all(p.requires_grad for p in adapter_params.values())

    def forbidden(*args, **kwargs):
        raise AssertionError("set_adapter called during a forward")

    monkeypatch.setattr(PALLayer, "set_adapter", forbidden)
    monkeypatch.setattr(PALModel, "set_adapter", forbidden)
    monkeypatch.setattr(PeftModel, "set_adapter", forbidden)
    model.train()
    inputs = make_inputs()
    for names in (T1, T2, [T2, T1, BASE_ADAPTER_NAME, T2], None, T1):
        model(**inputs, adapter_names=names)
        assert all(p.requires_grad for p in adapter_params.values()), names
    assert model.base_model.active_adapters == [T1, T2]

    model.zero_grad(set_to_none=True)
    model(**inputs, adapter_names=T1).last_hidden_state.sum().backward()
    assert all(p.grad is not None for n, p in adapter_params.items() if f".{T1}." in n)
    assert all(p.grad is None for n, p in adapter_params.items() if f".{T2}." in n)
    assert all(p.requires_grad for p in adapter_params.values())


# 10. Bad inputs -------------------------------------------------------------------------------------


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        PALConfig(pal_hidden_size=13, pal_num_heads=2)
    with pytest.raises(ValueError, match="pal_num_heads"):
        PALConfig(pal_num_heads=0)
    with pytest.raises(ValueError, match="pal_dropout"):
        PALConfig(pal_dropout=1.0)
    with pytest.raises(ValueError, match="init_pal_weights"):
        PALConfig(init_pal_weights="xavier")
    assert PALConfig(layers_to_transform=1).layers_to_transform == [1]


class _NotBert(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([nn.Linear(4, 4)])

    def forward(self, x):
        return self.encoder.layer[0](x)


def test_non_bert_layer_is_rejected_clearly():
    with pytest.raises(TypeError, match="not a BERT-style encoder layer"):
        get_peft_model(_NotBert(), pal_config(), adapter_name=T1)
    with pytest.raises(TypeError, match="BERT-style"):
        PALLayer(nn.Linear(4, 4))


def test_model_without_encoder_layers_is_rejected():
    with pytest.raises(ValueError, match="[Tt]arget modules"):
        get_peft_model(nn.Sequential(nn.Linear(4, 4)), pal_config(), adapter_name=T1)
