"""Loading is safetensors-only by default, and a broken bundle fails with an error naming what is wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertModel

from hf_pals import MultiTaskModel, MultiTaskPredictor, PALConfig, hub
from hf_pals.modeling import BUNDLE_CONFIG_FIELDS
from hf_pals.tasks import cs224n_task


pytestmark = pytest.mark.one_thread  # small models: one torch thread is faster and deterministic


def _model(base, freeze_encoder=True, pal_config=None):
    torch.manual_seed(0)
    tasks = [cs224n_task("sst"), cs224n_task("quora")]
    pal_config = pal_config or PALConfig(init_pal_weights="bert")
    return MultiTaskModel.from_base(base, tasks, pal_config, freeze_encoder=freeze_encoder)


@pytest.fixture(scope="module")
def saved(tiny_base, tmp_path_factory):
    """A frozen bundle and a jointly trained one, saved once; tests mutate copies."""
    out = {}
    for name, frozen in (("frozen", True), ("joint", False)):
        path = tmp_path_factory.mktemp(name)
        _model(tiny_base, freeze_encoder=frozen).save_pretrained(str(path), tokenizer=AutoTokenizer.from_pretrained(tiny_base))
        out[name] = path
    return out


@pytest.fixture
def frozen(saved, tmp_path):
    return shutil.copytree(saved["frozen"], tmp_path / "frozen")


@pytest.fixture
def joint(saved, tmp_path):
    return shutil.copytree(saved["joint"], tmp_path / "joint")


def _to_pickle(path):
    """Replace a safetensors file by the same tensors in a torch pickle of the given name."""
    safetensors_path = {
        "adapter_model.bin": "adapter_model.safetensors",
        "heads.bin": "heads.safetensors",
        "pytorch_model.bin": "model.safetensors",
    }[path.name]
    source = path.parent / safetensors_path
    torch.save(load_file(source), path)
    source.unlink()


def _heads(model):
    return {k: v.clone() for k, v in model.heads.state_dict().items()}


# 1. Pickles are refused unless the caller opts in ---------------------------------------------------
@pytest.mark.parametrize("pickle", ["adapters/sst/adapter_model.bin", "heads.bin"])
def test_pickle_only_bundle_is_refused_then_allowed(frozen, pickle):
    expected = MultiTaskModel.from_pretrained(str(frozen))
    _to_pickle(frozen / pickle)
    with pytest.raises(ValueError, match=rf"{pickle} is a pickle file .* pass allow_pickle=True"):
        MultiTaskModel.from_pretrained(str(frozen))
    with pytest.raises(ValueError, match="is a pickle file"):
        MultiTaskPredictor.from_pretrained(str(frozen))
    loaded = MultiTaskModel.from_pretrained(str(frozen), allow_pickle=True)
    for (name, a), b in zip(expected.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert MultiTaskPredictor.from_pretrained(str(frozen), allow_pickle=True).predict("sst", "fine")


def test_pickle_encoder_is_refused_then_allowed(joint):
    expected = MultiTaskModel.from_pretrained(str(joint))
    _to_pickle(joint / "encoder" / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"encoder/pytorch_model.bin is a pickle file"):
        MultiTaskModel.from_pretrained(str(joint))
    loaded = MultiTaskModel.from_pretrained(str(joint), allow_pickle=True)
    for (name, a), b in zip(expected.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_path_refuses_pickles_too(frozen, tiny_base):
    _to_pickle(frozen / "adapters" / "quora" / "adapter_model.bin")
    with pytest.raises(ValueError, match="adapter_model.bin is a pickle file"):
        _model(tiny_base).load_weights(str(frozen))


def test_upload_refuses_a_pickle_only_bundle(frozen, tmp_path):
    _to_pickle(frozen / "adapters" / "sst" / "adapter_model.bin")
    with pytest.raises(ValueError, match="adapters/sst/adapter_model.bin is a pickle file"):
        hub.prepare_upload_folder(str(frozen), str(tmp_path / "up"))


# 2. An adapter saved for another base --------------------------------------------------------------
def _other_base(tiny_base, tmp_path, **overrides):
    """The tiny base with another width or depth."""
    path = tmp_path / "other_base"
    config = BertConfig.from_pretrained(tiny_base)
    for key, value in overrides.items():
        setattr(config, key, value)
    BertModel(config).save_pretrained(path)
    return str(path)


def _rebase(bundle, base):
    config = json.loads((bundle / "hf_pals_config.json").read_text())
    config["base_model_name_or_path"] = base
    (bundle / "hf_pals_config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("pal_type", ["pal", "houlsby"])
def test_adapter_for_another_hidden_size(frozen, tiny_base, tmp_path, pal_type):
    if pal_type != "pal":  # a variant whose tensors have other names
        shutil.rmtree(frozen)
        _model(tiny_base, pal_config=PALConfig(pal_type=pal_type)).save_pretrained(str(frozen))
    other = _other_base(tiny_base, tmp_path, hidden_size=48)
    _rebase(frozen, other)
    with pytest.raises(ValueError, match=r"adapter 'sst' \(.*adapters/sst/adapter_model.safetensors\) was saved "
                                         r"for hidden size 32, this base \(.*other_base\) has 48"):
        MultiTaskModel.from_pretrained(str(frozen))


def test_adapter_for_more_layers(frozen, tiny_base, tmp_path):
    other = _other_base(tiny_base, tmp_path, num_hidden_layers=1)
    _rebase(frozen, other)
    with pytest.raises(ValueError, match=r"adapter 'sst' .* was saved for a base with at least 2 layers "
                                         r"\(it has weights for layer 1\), this base \(.*\) has 1"):
        MultiTaskModel.from_pretrained(str(frozen))


def test_load_weights_onto_another_base_is_named(frozen, tiny_base, tmp_path):
    other = _other_base(tiny_base, tmp_path, hidden_size=48)
    model = _model(other)
    with pytest.raises(ValueError, match="was saved for hidden size 32, this base .* has 48"):
        model.load_weights(str(frozen))


# 3. An unknown task ------------------------------------------------------------------------------
def test_unknown_task_lists_the_tasks(saved):
    predictor = MultiTaskPredictor.from_pretrained(str(saved["frozen"]))
    with pytest.raises(ValueError, match=r"unknown task 'mnli'; this model has tasks \['sst', 'quora'\]"):
        predictor.predict("mnli", ["a sentence"])


# 4. Corrupted or truncated safetensors -------------------------------------------------------------
@pytest.mark.parametrize(
    "rel", ["heads.safetensors", "adapters/quora/adapter_model.safetensors", "encoder/model.safetensors"]
)
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_safetensors_is_named(joint, tmp_path, rel, damage):
    path = joint / rel
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40] if damage == "truncated" else b"\x00\x01garbage" * 20)
    message = rf"{rel}: not a valid safetensors file, it may be truncated or corrupted"
    with pytest.raises(ValueError, match=message):
        MultiTaskModel.from_pretrained(str(joint))
    with pytest.raises(ValueError, match=message):
        hub.prepare_upload_folder(str(joint), str(tmp_path / "up"))


def test_damaged_heads_on_resume_is_named(frozen, tiny_base):
    path = frozen / "heads.safetensors"
    path.write_bytes(path.read_bytes()[:-8])
    model = _model(tiny_base)
    with pytest.raises(ValueError, match="heads.safetensors: not a valid safetensors file"):
        model.load_weights(str(frozen))


# 5. Unknown fields in the bundle config -------------------------------------------------------------
def test_unknown_bundle_field_is_named(frozen):
    config = json.loads((frozen / "hf_pals_config.json").read_text())
    config["freeze_encodr"] = True
    (frozen / "hf_pals_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"hf_pals_config.json: unknown field\(s\) \['freeze_encodr'\]"):
        MultiTaskModel.from_pretrained(str(frozen))


def test_unknown_task_field_is_named_with_its_file(frozen):
    config = json.loads((frozen / "hf_pals_config.json").read_text())
    config["tasks"]["sst"]["colour"] = "red"
    (frozen / "hf_pals_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"hf_pals_config.json: task 'sst': unknown field\(s\) \['colour'\]"):
        MultiTaskModel.from_pretrained(str(frozen))


def test_known_fields_cover_what_save_writes(tiny_base):
    assert set(_model(tiny_base).bundle_config()) == set(BUNDLE_CONFIG_FIELDS)
