"""MultiTaskModel: routing to adapters and heads, and the bundle's save/load round trip."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import AutoTokenizer

from hf_pals import PALConfig
from hf_pals.data.multitask import MultiTaskCollator
from hf_pals.modeling import MultiTaskModel
from hf_pals.tasks import cs224n_task

ROWS = {
    "sst": [{"sentence1": "a gripping , funny film", "label": 4}, {"sentence1": "dull", "label": 0}],
    "quora": [
        {"sentence1": "how do i cook rice ?", "sentence2": "what is the way to cook rice ?", "label": 1},
        {"sentence1": "who won ?", "sentence2": "where is paris ?", "label": 0},
    ],
    "sts": [
        {"sentence1": "a man plays a guitar .", "sentence2": "a man is playing guitar .", "label": 4.6},
        {"sentence1": "a cat sleeps .", "sentence2": "stocks fell today .", "label": 0.2},
    ],
}


def _tasks():
    return {
        "sst": cs224n_task("sst"),
        "quora": cs224n_task("quora"),
        "sts": cs224n_task("sts", pair_encoding="siamese", head="cosine"),
    }


def _model(tiny_base, freeze_encoder=False):
    torch.manual_seed(0)
    return MultiTaskModel.from_base(tiny_base, _tasks(), PALConfig(init_pal_weights="bert"), freeze_encoder=freeze_encoder)


def _batches(tiny_base, model):
    collator = MultiTaskCollator(AutoTokenizer.from_pretrained(tiny_base), model.tasks, max_length=32)
    return {task: collator([dict(r, task=task) for r in rows]) for task, rows in ROWS.items()}


def test_forward_shapes_and_losses(tiny_base):
    model = _model(tiny_base).eval()
    batches = _batches(tiny_base, model)
    out = {task: model(**batch) for task, batch in batches.items()}
    assert out["sst"]["logits"].shape == (2, 5)
    assert out["quora"]["logits"].shape == (2,)
    assert batches["sts"]["input_ids"].shape[0] == 4  # siamese: both sentences of 2 pairs
    assert out["sts"]["logits"].shape == (2,)
    assert all(torch.isfinite(o["loss"]) for o in out.values())
    with pytest.raises(ValueError, match="unknown task 'mnli'"):
        model(task="mnli", input_ids=batches["sst"]["input_ids"], attention_mask=batches["sst"]["attention_mask"])


def test_each_task_uses_its_own_adapter(tiny_base):
    model = _model(tiny_base).eval()
    batch = _batches(tiny_base, model)["sst"]
    args = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    sst = model.encode("sst", **args)
    quora = model.encode("quora", **args)
    with model.encoder.disable_adapter():
        base = model.encode("sst", **args)
    assert not torch.allclose(sst, quora)
    assert not torch.allclose(sst, base)


def test_trainable_parameters(tiny_base):
    joint = _model(tiny_base)
    frozen = _model(tiny_base, freeze_encoder=True)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable and all(".pals_" in n or n.startswith("heads.") for n in trainable)
    assert all(p.requires_grad for p in joint.parameters())


@pytest.mark.parametrize("freeze_encoder", [False, True])
def test_bundle_round_trip(tiny_base, tmp_path, freeze_encoder):
    model = _model(tiny_base, freeze_encoder=freeze_encoder)
    with torch.no_grad():  # make the encoder differ from the base so a lost encoder would show
        weight = model.encoder.get_base_model().embeddings.word_embeddings.weight
        weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    model.eval()
    batches = _batches(tiny_base, model)
    expected = {task: model(**batch)["logits"] for task, batch in batches.items()}
    model.save_pretrained(str(tmp_path))
    files = sorted(os.listdir(tmp_path))
    assert "hf_pals_config.json" in files and "heads.safetensors" in files
    assert ("encoder" in files) == (not freeze_encoder)
    for task in ROWS:
        config = json.loads((tmp_path / "adapters" / task / "adapter_config.json").read_text())
        assert config["peft_type"] == "PALS"
        assert (tmp_path / "adapters" / task / "adapter_model.safetensors").exists()
    loaded = MultiTaskModel.from_pretrained(str(tmp_path))
    for task, batch in batches.items():
        got = loaded(**batch)["logits"]
        if freeze_encoder:  # the frozen bundle reloads the untouched base: outputs differ by the edit
            assert not torch.allclose(got, expected[task])
        else:
            torch.testing.assert_close(got, expected[task])


def test_load_weights_in_place_restores_everything(tiny_base, tmp_path):
    source = _model(tiny_base)
    source.save_pretrained(str(tmp_path))
    target = _model(tiny_base)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.05)
    target.load_weights(str(tmp_path))
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_bundle_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="hf_pals_config.json"):
        MultiTaskModel.from_pretrained(str(tmp_path))


def test_mixed_task_batch_equals_each_task_alone(tiny_base):
    model = _model(tiny_base).eval()
    model.tasks["sst"].pooling = "cls"  # pooling differs by task in the mixed batch
    collator = MultiTaskCollator(AutoTokenizer.from_pretrained(tiny_base), model.tasks, max_length=32)
    features = [dict(r, task=t) for t in ("sts", "sst", "quora") for r in ROWS[t]]
    features = [features[i] for i in (2, 0, 4, 1, 5, 3)]  # interleave the tasks
    batch = collator.encode_mixed(features)
    assert batch["input_ids"].shape[0] == 8  # two siamese examples give two rows each
    mixed = model.forward_mixed(**batch)
    alone = {task: model(**collator([dict(r, task=task) for r in ROWS[task]]))["logits"] for task in ROWS}
    for task, (examples, logits) in mixed.items():
        assert [features[i]["task"] for i in examples.tolist()] == [task, task]
        order = [ROWS[task].index({k: v for k, v in features[i].items() if k != "task"}) for i in examples.tolist()]
        torch.testing.assert_close(logits, alone[task][order], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="mnli"):
        model.forward_mixed(**{**batch, "tasks": ["mnli"] + batch["tasks"][1:]})
