"""Tests for the adapter variants of the "pals" tuner, `PALConfig(pal_type=...)`: pal, low_rank, pal_lora, houlsby.

Each variant against its equation and parameter formula, and with everything an adapter must support: both
loaders, disable_adapter, mixed-task batches (also across variants), delete_adapter, unload and gradient
checkpointing. Tiny random BERTs (hidden 32, 2 layers, vocab 100), dropout 0, eval mode, one CPU thread;
adapter weights are perturbed so that every adapter clearly changes the output.
"""

import copy
import json
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

import hf_pals  # noqa: F401  (registers the "pals" PEFT method)
from hf_pals.tuner import (
    BASE_ADAPTER_NAME,
    PAL_TYPES,
    PALConfig,
    PALLayer,
    houlsby_parameter_count,
    low_rank_parameter_count,
    pal_lora_parameter_count,
    pal_parameter_count,
)
from hf_pals.tuner.layer import VARIANT_MODULES
from peft import PeftConfig, PeftModel, get_peft_model

HIDDEN, LAYERS, VOCAB, D_S, HEADS, RANK, M = 32, 2, 100, 12, 2, 3, 5
ATOL = 1e-6
VARIANTS = ("pal", "low_rank", "pal_lora", "houlsby")

# transformers 5.x deprecates gradient_checkpointing_enable / is_gradient_checkpointing (still the API used).
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.one_thread]



def make_bert(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertModel(config).eval()


def variant_config(pal_type, **overrides):
    kwargs = dict(
        pal_type=pal_type,
        pal_hidden_size=D_S,
        pal_num_heads=HEADS,
        pal_lora_rank=RANK,
        houlsby_size=M,
        pal_dropout=0.0,
        init_pal_weights="bert",
    )
    kwargs.update(overrides)
    return PALConfig(**kwargs)


def adapter(variant, index=1):
    """Adapter names such as "pal1" or "houlsby2" (names must not be substrings of the prefix "pals_")."""
    return f"{variant}{index}"


def perturb(model, seed=3):
    """Scale the N(0, 0.02) adapter weights and give every bias a value, so each adapter changes outputs
    clearly and biases count in the comparisons (shared V_E/V_D are perturbed once)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():  # de-duplicated
            if ".pals_" in name:
                param.mul_(10.0).add_(0.05 * torch.randn(param.shape, generator=gen))


def make_inputs(batch=4, length=7, seed=1):
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (batch, length), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    for row, keep in zip(range(1, batch), (5, 4, 3, 6)):
        attention_mask[row, keep:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def hidden(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs).last_hidden_state


def pal_layers(model):
    return [m for m in model.modules() if isinstance(m, PALLayer)]


def encoder_layers(model):
    return model.base_model.model.encoder.layer


ALL_ADAPTERS = [adapter(v, i) for v in VARIANTS for i in (1, 2)]


@pytest.fixture(scope="module")
def zoo():
    """(a tiny BERT with two perturbed adapters of every variant, an untouched copy of its base).

    Adapter 1 of each variant is on every layer (V_E/V_D shared for pal and low_rank); adapter 2 only on
    layer 1. All adapters are active. Tests that change the model work on a deep copy."""
    bert = make_bert()
    base = copy.deepcopy(bert)
    model = get_peft_model(bert, variant_config("pal"), adapter_name=adapter("pal"))
    for seed, name in enumerate(ALL_ADAPTERS[1:], start=1):
        torch.manual_seed(seed)
        variant, index = name[:-1], int(name[-1])
        model.add_adapter(name, variant_config(variant, layers_to_transform=None if index == 1 else [1]))
    model.base_model.set_adapter(ALL_ADAPTERS)
    perturb(model)
    return model.eval(), base


@pytest.fixture(scope="module")
def saved_zoo(zoo, tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo")
    zoo[0].save_pretrained(path)
    return path


# 1. Config --------------------------------------------------------------------------------------------


def test_config_defaults():
    config = PALConfig()
    assert (config.pal_type, config.pal_lora_rank, config.houlsby_size) == ("pal", 2, 64)
    assert PAL_TYPES == VARIANTS


def test_config_validation():
    with pytest.raises(ValueError, match="pal_type must be one of pal, low_rank, pal_lora, houlsby; got 'lora'"):
        PALConfig(pal_type="lora")
    with pytest.raises(ValueError, match="pal_lora_rank must be >= 1"):
        PALConfig(pal_type="pal_lora", pal_lora_rank=0)
    with pytest.raises(ValueError, match="houlsby_size must be >= 1"):
        PALConfig(pal_type="houlsby", houlsby_size=0)
    with pytest.raises(ValueError, match="divisible"):
        PALConfig(pal_hidden_size=13, pal_num_heads=2)
    assert PALConfig(pal_type="low_rank", pal_hidden_size=13, pal_num_heads=2).pal_hidden_size == 13  # no heads
    with pytest.raises(TypeError, match=r"unknown field\(s\) \['rank'\]"):
        PALConfig(rank=4)


def test_adapter_size_per_variant():
    assert variant_config("pal").resolve_adapter_size(HIDDEN) == D_S
    assert variant_config("low_rank").resolve_adapter_size(HIDDEN) == D_S
    assert variant_config("pal_lora").resolve_adapter_size(HIDDEN) == RANK
    assert variant_config("houlsby").resolve_adapter_size(HIDDEN) == M
    assert PALConfig(pal_type="low_rank").resolve_adapter_size(768) == 204


# 2. Each variant computes its equation -----------------------------------------------------------------


def _linear(module, x):
    return x @ module.weight.T + module.bias


def _projected_attention(layer, name, x, mask):
    """MH written out: softmax(q kᵀ / sqrt(d_h) + mask) v per head, heads concatenated."""
    batch, length, width = x.shape
    heads = layer.pals_num_heads[name]

    def split(module):
        return _linear(module, x).view(batch, length, heads, width // heads).transpose(1, 2)

    q, k, v = (split(getattr(layer, f"pals_{part}")[name]) for part in ("query", "key", "value"))
    scores = q @ k.transpose(-1, -2) / (width // heads) ** 0.5 + mask
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, width)


def _houlsby(layer, site, name, y):
    down = getattr(layer, f"pals_{site}_adapter_down")[name]
    up = getattr(layer, f"pals_{site}_adapter_up")[name]
    return y + _linear(up, F.gelu(_linear(down, y)))


def reference_layer(layer, variant, name, h, mask):
    """The variant's equation, from the BertLayer's own modules and the adapter's weights."""
    base = layer.base_layer
    if variant == "houlsby":
        sub = base.attention.output
        a = sub.LayerNorm(_houlsby(layer, "attention", name, sub.dense(base.attention.self(h, mask)[0])) + h)
        out = base.output
        return out.LayerNorm(_houlsby(layer, "output", name, out.dense(base.intermediate(a))) + a)
    encoder, decoder = layer.pals_encoder[name], layer.pals_decoder[name]
    if variant == "pal":
        ts = F.gelu(_linear(decoder, _projected_attention(layer, name, _linear(encoder, h), mask)))
    elif variant == "low_rank":
        ts = _linear(decoder, F.gelu(_linear(encoder, h)))
    else:  # pal_lora: (h·W1 + b1)·W2 + b2
        ts = _linear(decoder, _linear(encoder, h))
    a = base.attention(h, mask)[0]
    return base.output(base.intermediate(a), a + ts)


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_computes_the_variant_equation(zoo, variant):
    model, _ = zoo
    layer = encoder_layers(model)[1]
    torch.manual_seed(5)
    h = torch.randn(3, 6, HIDDEN)
    mask = torch.zeros(3, 1, 1, 6)
    mask[1, ..., 4:] = torch.finfo(torch.float32).min
    name = adapter(variant)
    with torch.no_grad():
        out = layer(h, mask, adapter_names=name)
        expected = reference_layer(layer, variant, name, h, mask)
        plain = layer.base_layer(h, mask)
    assert torch.allclose(out, expected, atol=1e-5)
    assert (out - plain).abs().max() > 1e-2


@pytest.mark.parametrize("variant", VARIANTS)
def test_zeros_init_leaves_the_base_model_exactly_and_still_learns(variant):
    bert = make_bert()
    base = copy.deepcopy(bert)
    model = get_peft_model(bert, variant_config(variant, init_pal_weights="zeros"), adapter_name=adapter(variant))
    inputs = make_inputs()
    assert torch.equal(hidden(model.eval(), inputs), hidden(base, inputs))
    model.train()
    (model(**inputs).last_hidden_state * torch.linspace(-1, 1, HIDDEN)).sum().backward()
    zero_outputs = [p for n, p in model.named_parameters() if re.search(r"pals_(decoder|\w+_up)\.", n)]
    assert zero_outputs and all(p.grad.abs().sum() > 0 for p in zero_outputs)  # the zero projection trains


def test_pal_lora_dropout_applies_to_ts():
    model = get_peft_model(make_bert(), variant_config("pal_lora", pal_dropout=0.5), adapter_name="lora1")
    perturb(model)
    layer = encoder_layers(model)[0]
    h = torch.randn(2, 5, HIDDEN)
    with torch.no_grad():
        eval_ts = layer.eval().task_specific("lora1", h, None)
        torch.manual_seed(0)
        train_ts = layer.train().task_specific("lora1", h, None)
    dropped = train_ts == 0
    assert 0.2 < dropped.float().mean() < 0.8
    assert torch.allclose(train_ts[~dropped], 2 * eval_ts[~dropped], atol=ATOL)


# 3. Parameter counts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "overrides, layers",
    [({}, LAYERS), ({"share_projections": False}, LAYERS), ({"layers_to_transform": [0]}, 1)],
    ids=["default", "unshared", "one-layer"],
)
def test_trainable_parameters_match_formula(variant, overrides, layers):
    config = variant_config(variant, **overrides)
    model = get_peft_model(make_bert(), config, adapter_name=adapter(variant))
    shared = config.share_projections
    expected = {
        "pal": lambda: pal_parameter_count(HIDDEN, D_S, layers, shared),
        "low_rank": lambda: low_rank_parameter_count(HIDDEN, D_S, layers, shared),
        "pal_lora": lambda: pal_lora_parameter_count(HIDDEN, RANK, layers),
        "houlsby": lambda: houlsby_parameter_count(HIDDEN, M, layers),
    }[variant]()
    unique = {id(p): p.numel() for p in model.parameters() if p.requires_grad}
    assert model.get_nb_trainable_parameters()[0] == expected
    assert sum(unique.values()) == expected
    assert config.parameter_count(HIDDEN, layers) == expected


def test_parameter_count_formulas():
    # V_E + V_D: 2·32·12 + 12 + 32 = 812, once (shared) or per layer
    assert low_rank_parameter_count(32, 12, 2, True) == 812
    assert low_rank_parameter_count(32, 12, 2, False) == 2 * 812
    # PAL adds MH per layer: 3·(12² + 12) = 468
    assert pal_parameter_count(32, 12, 2, True) == 812 + 2 * 468
    # PAL-LoRA per layer: 2·32·3 + 3 + 32 = 227
    assert pal_lora_parameter_count(32, 3, 2) == 2 * 227
    # Houlsby, two adapters per layer: 2·32·5 + 5 + 32 = 357 each
    assert houlsby_parameter_count(32, 5, 2) == 2 * 2 * 357
    # BERT-base (d = 768, 12 layers): the paper's ~1.8M PALs; report 002's 12·2·d·d_s low-rank (plus biases);
    # Houlsby's 2md + d + m per adapter with m = 64; PAL-LoRA with the report's r = 2
    assert pal_parameter_count(768, 204, 12, True) == 1_819_836
    assert low_rank_parameter_count(768, 204, 12, False) == 12 * (2 * 768 * 204 + 204 + 768) == 3_771_792
    assert houlsby_parameter_count(768, 64, 12) == 24 * (2 * 64 * 768 + 768 + 64) == 2_379_264
    assert pal_lora_parameter_count(768, 2, 12) == 12 * (2 * 768 * 2 + 2 + 768) == 46_104


# 4. Sharing across layers -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_projections_are_shared_only_by_pal_and_low_rank(variant):
    model = get_peft_model(make_bert(), variant_config(variant), adapter_name=adapter(variant))
    layer0, layer1 = encoder_layers(model)
    for part in VARIANT_MODULES[variant]:
        first, second = getattr(layer0, part)[adapter(variant)], getattr(layer1, part)[adapter(variant)]
        shared = variant in ("pal", "low_rank") and part in ("pals_encoder", "pals_decoder")
        assert (first is second) == shared, part


# 5. Save and load -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_saved_keys_are_flat_and_per_variant(zoo, saved_zoo, variant):
    for index, layers in ((1, LAYERS), (2, 1)):
        name = adapter(variant, index)
        state = load_file(saved_zoo / name / "adapter_model.safetensors")
        parts = set()
        for key in state:
            match = re.fullmatch(r"base_model\.model\.encoder\.layer\.(\d)\.(pals_[a-z_]+)\.(weight|bias)", key)
            assert match, key
            parts.add(match.group(2))
        assert parts == set(VARIANT_MODULES[variant])
        assert len(state) == 2 * len(VARIANT_MODULES[variant]) * layers
        config = json.loads((saved_zoo / name / "adapter_config.json").read_text())
        assert config["pal_type"] == variant


def _load(loader, base, path, name):
    if loader == "transformers":
        model = copy.deepcopy(base)
        model.load_adapter(str(path), adapter_name=name)
        return model.eval()
    low_cpu = loader == "peft-low-cpu-mem"
    return PeftModel.from_pretrained(copy.deepcopy(base), path, adapter_name=name, low_cpu_mem_usage=low_cpu).eval()


@pytest.mark.parametrize("index", [1, 2])
@pytest.mark.parametrize("variant", VARIANTS)
def test_both_loaders_reproduce_outputs(zoo, saved_zoo, variant, index):
    model, base = zoo
    name = adapter(variant, index)
    inputs = make_inputs()
    expected = hidden(model, inputs, adapter_names=name)
    assert (expected - hidden(base, inputs)).abs().max() > 1e-3
    outputs = {}
    for loader in ("peft", "peft-low-cpu-mem", "transformers"):
        loaded = _load(loader, base, saved_zoo / name, name)
        outputs[loader] = hidden(loaded, inputs)
        assert torch.allclose(outputs[loader], expected, atol=ATOL), loader
        layers = pal_layers(loaded)
        assert len(layers) == (LAYERS if index == 1 else 1)
        assert all(layer.pals_type == {name: variant} for layer in layers)
        if variant in ("pal", "low_rank") and index == 1:  # sharing survives loading
            assert layers[0].pals_encoder[name] is layers[1].pals_encoder[name]
    assert torch.equal(outputs["peft"], outputs["transformers"])


def test_transformers_loads_adapters_of_different_variants_into_one_model(zoo, saved_zoo):
    model, base = zoo
    inputs = make_inputs()
    fresh = copy.deepcopy(base)
    names = [adapter(v) for v in VARIANTS]
    for name in names:
        fresh.load_adapter(str(saved_zoo / name), adapter_name=name)
    fresh.eval()
    for name in names:
        fresh.set_adapter(name)
        assert torch.allclose(hidden(fresh, inputs), hidden(model, inputs, adapter_names=name), atol=ATOL), name


def _edit_saved_config(saved_zoo, tmp_path, name, edit):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes((saved_zoo / name / "adapter_model.safetensors").read_bytes())
    config = json.loads((saved_zoo / name / "adapter_config.json").read_text())
    edit(config)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_unknown_field_in_adapter_config_is_an_error(zoo, saved_zoo, tmp_path):
    # PEFT alone drops unknown keys with a warning; a dropped `pal_type` would silently build another model.
    _, base = zoo
    folder = _edit_saved_config(saved_zoo, tmp_path, "houlsby1", lambda c: c.update(pal_typo="houlsby"))
    message = r"PALConfig: unknown field\(s\) \['pal_typo'\]"
    with pytest.raises(TypeError, match=message):
        PeftConfig.from_pretrained(folder)
    with pytest.raises(TypeError, match=message):
        PALConfig.from_pretrained(folder)
    with pytest.raises(TypeError, match=message):
        PeftModel.from_pretrained(copy.deepcopy(base), folder, adapter_name="houlsby1")
    with pytest.raises(TypeError, match=message):
        copy.deepcopy(base).load_adapter(str(folder), adapter_name="houlsby1")


def test_unknown_pal_type_in_adapter_config_is_an_error(saved_zoo, tmp_path):
    folder = _edit_saved_config(saved_zoo, tmp_path, "houlsby1", lambda c: c.update(pal_type="prefix"))
    with pytest.raises(ValueError, match="pal_type must be one of pal, low_rank, pal_lora, houlsby"):
        PeftConfig.from_pretrained(folder)


def test_config_saved_before_variants_loads_as_pal(zoo, saved_zoo, tmp_path):
    model, base = zoo

    def drop_new_fields(config):
        for key in ("pal_type", "pal_lora_rank", "houlsby_size"):
            del config[key]

    folder = _edit_saved_config(saved_zoo, tmp_path, "pal1", drop_new_fields)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), folder, adapter_name="pal1").eval()
    assert loaded.peft_config["pal1"].pal_type == "pal"
    inputs = make_inputs()
    assert torch.allclose(hidden(loaded, inputs), hidden(model, inputs, adapter_names="pal1"), atol=ATOL)


# 6. disable_adapter, mixed batches, requires_grad ---------------------------------------------------------


def test_disable_adapter_gives_exact_base_output(zoo):
    model, base = zoo
    inputs = make_inputs(batch=5)
    base_out = hidden(base, inputs)
    mixed = [adapter(v) for v in VARIANTS] + [BASE_ADAPTER_NAME]
    with model.disable_adapter():
        for names in [None, mixed] + ALL_ADAPTERS:
            assert torch.equal(hidden(model, inputs, adapter_names=names), base_out), names
    for name in ALL_ADAPTERS:
        assert (hidden(model, inputs, adapter_names=name) - base_out).abs().max() > 1e-3, name


@pytest.mark.parametrize(
    "names",
    [[adapter(v, 1), adapter(v, 2), adapter(v, 1), BASE_ADAPTER_NAME] for v in VARIANTS]
    + [[adapter(v) for v in VARIANTS] + [BASE_ADAPTER_NAME]]
    + [["houlsby2", "pal1", "low_rank2", "houlsby1", "pal_lora2"]],
    ids=[*VARIANTS, "across-variants", "across-variants-one-layer"],
)
def test_mixed_batch_equals_rows_run_alone(zoo, names):
    model, base = zoo
    inputs = make_inputs(batch=len(names))
    mixed = hidden(model, inputs, adapter_names=names)
    base_out = hidden(base, inputs)
    for i, name in enumerate(names):
        row = {k: v[i : i + 1] for k, v in inputs.items()}
        assert torch.allclose(mixed[i], hidden(model, row, adapter_names=name)[0], atol=ATOL), (i, name)
        if name == BASE_ADAPTER_NAME:
            assert torch.allclose(mixed[i], base_out[i], atol=ATOL)
        else:
            assert (mixed[i] - base_out[i]).abs().max() > 1e-3, (i, name)


def test_set_adapter_freezes_and_unfreezes_every_variant(zoo):
    model = copy.deepcopy(zoo[0])
    adapter_params = {n: p for n, p in model.named_parameters() if ".pals_" in n}
    for chosen in (["houlsby2"], ["pal_lora1", "low_rank2"], ALL_ADAPTERS):
        model.base_model.set_adapter(chosen)
        for param_name, param in adapter_params.items():
            owner = re.search(r"\.pals_[a-z_]+\.(\w+)\.", param_name).group(1)
            assert param.requires_grad == (owner in chosen), (chosen, param_name)


def test_adapter_of_a_new_variant_is_added_frozen_until_activated():
    model = get_peft_model(make_bert(), variant_config("pal"), adapter_name="pal1")
    model.add_adapter("houlsby1", variant_config("houlsby"))
    added = [p for n, p in model.named_parameters() if ".houlsby1." in n]
    assert added and not any(p.requires_grad for p in added)
    assert all(p.requires_grad for n, p in model.named_parameters() if ".pal1." in n)
    model.base_model.set_adapter(["pal1", "houlsby1"])
    assert all(p.requires_grad for p in added)


# 7. delete_adapter / unload ----------------------------------------------------------------------------


# Not "pal1": it is the PeftModel's own `active_adapter`, and PeftModel (which assumes one active adapter)
# keeps that name after deleting it while several adapters are active (a KeyError on the next forward).
@pytest.mark.parametrize("gone", ALL_ADAPTERS[1:])
def test_delete_adapter_removes_it_everywhere(zoo, gone):
    model = copy.deepcopy(zoo[0])
    inputs = make_inputs()
    kept = [name for name in ALL_ADAPTERS if name != gone]
    expected = {name: hidden(model, inputs, adapter_names=name) for name in kept}
    model.delete_adapter(gone)
    assert set(model.peft_config) == set(kept)
    for layer in pal_layers(model):
        for part in layer.adapter_layer_names + layer.other_param_names:
            assert gone not in getattr(layer, part), part
    assert not any(f".{gone}." in name for name, _ in model.named_parameters())
    for name in kept:
        assert torch.equal(hidden(model, inputs, adapter_names=name), expected[name]), name
    with pytest.raises(ValueError, match=gone):
        model(**inputs, adapter_names=gone)


def test_deleting_every_adapter_of_a_variant_keeps_the_others_working(zoo):
    model = copy.deepcopy(zoo[0])
    inputs = make_inputs()
    expected = hidden(model, inputs, adapter_names="pal_lora1")
    for name in ("houlsby1", "houlsby2"):
        model.delete_adapter(name)
    assert torch.equal(hidden(model, inputs, adapter_names="pal_lora1"), expected)


def test_unload_returns_plain_bert(zoo):
    model, base = zoo
    inputs = make_inputs()
    plain = copy.deepcopy(model).unload()
    assert type(plain) is BertModel
    assert not pal_layers(plain)
    assert not any("pals_" in name for name, _ in plain.named_parameters())
    assert torch.equal(hidden(plain, inputs), hidden(base, inputs))


# 8. Gradient checkpointing ----------------------------------------------------------------------------


def _loss_and_grads(variant, checkpointing, reentrant=None):
    bert = make_bert()
    model = get_peft_model(bert, variant_config(variant), adapter_name=adapter(variant, 1))
    torch.manual_seed(1)
    model.add_adapter(adapter(variant, 2), variant_config(variant))
    model.base_model.set_adapter([adapter(variant, 1), adapter(variant, 2)])
    perturb(model)
    calls = []
    if checkpointing:
        bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
        for layer in pal_layers(model):
            real = layer.base_layer._gradient_checkpointing_func

            def spy(*args, _real=real, **kwargs):
                calls.append(1)
                return _real(*args, **kwargs)

            layer.base_layer._gradient_checkpointing_func = spy
    model.train()
    names = [adapter(variant, 1), adapter(variant, 2), BASE_ADAPTER_NAME, adapter(variant, 1)]
    out = model(**make_inputs(), adapter_names=names).last_hidden_state
    loss = (out * torch.linspace(-1, 1, HIDDEN)).sum()
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}, len(calls)


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_checkpointing_matches_plain_backward(variant, reentrant):
    ref_loss, ref_grads, _ = _loss_and_grads(variant, False)
    loss, grads, calls = _loss_and_grads(variant, True, reentrant)
    assert calls == LAYERS
    assert torch.allclose(loss, ref_loss, atol=1e-5)
    assert set(grads) == set(ref_grads)
    assert all(any(f".{adapter(variant, i)}." in n for n in grads) for i in (1, 2))
    for name, ref in ref_grads.items():
        if not (".pals_key." in name and name.endswith(".bias")):  # key bias: softmax-invariant, grad ~0
            assert ref.abs().sum() > 0, name
        assert torch.allclose(grads[name], ref, atol=1e-6, rtol=1e-4), name
