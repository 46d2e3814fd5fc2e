"""`pair_encoding: both`: a pair encoded packed and siamese, the two linear head parts' logits averaged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from hf_pals import MultiTaskModel, MultiTaskPredictor, PALConfig
from hf_pals.data.length_grouping import text_lengths
from hf_pals.data.multitask import MultiTaskCollator
from hf_pals.evaluation import predict_outputs
from hf_pals.heads import TaskHead, task_loss
from hf_pals.predictor import mixed_length
from hf_pals.tasks import TaskSpec, cs224n_task

pytestmark = pytest.mark.one_thread  # small models: one torch thread is faster and deterministic

QUORA = [
    {"sentence1": "how do i cook rice ?", "sentence2": "what is the way to cook rice ?", "label": 1},
    {"sentence1": "who won ?", "sentence2": "where is paris ?", "label": 0},
    {"sentence1": "a man plays a guitar .", "sentence2": "a man is playing guitar in the park today .", "label": 1},
]
SST = [{"sentence1": "a gripping , funny film", "label": 4}, {"sentence1": "dull", "label": 0}]


def _tasks(top_layer=False):
    return {"sst": cs224n_task("sst", pooling="cls"), "quora": cs224n_task("quora", pair_encoding="both", top_layer=top_layer)}


def _model(tiny_base, freeze_encoder=False, seed=0, top_layer=False):
    """A model whose adapters and heads differ from fresh ones (a fresh PAL is the identity, a fresh head ~0)."""
    torch.manual_seed(seed)
    tasks = _tasks(top_layer)
    model = MultiTaskModel.from_base(tiny_base, tasks, PALConfig(init_pal_weights="bert"), freeze_encoder=freeze_encoder)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".pals_" in name or name.startswith("heads."):
                param.add_(torch.randn_like(param) * 0.2)
    return model.eval()


def _collator(tiny_base, tasks, max_length=32):
    return MultiTaskCollator(AutoTokenizer.from_pretrained(tiny_base), tasks, max_length=max_length)


def _rows(batch):
    """Each row of a padded batch without its padding: {key: list} per row."""
    lengths = batch["attention_mask"].sum(-1).tolist()
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in batch]
    return [{k: batch[k][i, :n].tolist() for k in keys} for i, n in enumerate(lengths)]


# --------------------------------------------------------------------------------------------- spec
def test_spec_validation_and_round_trip():
    spec = cs224n_task("quora", pair_encoding="both")
    assert spec.is_both and not spec.is_siamese and spec.rows_per_example == 3
    assert cs224n_task("quora").rows_per_example == 1
    assert cs224n_task("quora", pair_encoding="siamese").rows_per_example == 2
    assert TaskSpec.from_dict("quora", {k: v for k, v in spec.to_dict().items() if k != "name"}) == spec
    for head in ("cosine", "cosine_relu", "linear_cosine"):
        with pytest.raises(ValueError, match=rf"task 'quora': pair_encoding 'both' takes head 'linear' only.*'{head}'"):
            cs224n_task("quora", pair_encoding="both", head=head)
    with pytest.raises(ValueError, match=r"task 'sst': pair_encoding 'both' needs a sentence pair"):
        cs224n_task("sst", pair_encoding="both")
    with pytest.raises(ValueError, match=r"task 'quora': pair_encoding must be one of \['packed', 'siamese', 'both'\]"):
        cs224n_task("quora", pair_encoding="triple")


def test_head_has_two_linear_parts():
    head = TaskHead(cs224n_task("quora", pair_encoding="both"), 8)
    assert head.packed_classifier.in_features == 8 and head.siamese_classifier.in_features == 32
    assert not hasattr(head, "classifier")
    nli = TaskHead(TaskSpec("nli", "classification", num_labels=3, text_columns=("a", "b"), pair_encoding="both"), 8)
    u, v, p = torch.randn(3, 4, 8).unbind(0)
    assert nli.eval()(u, v, packed=p).shape == (4, 3)
    with pytest.raises(ValueError, match="task 'quora' has pair_encoding 'both'"):
        head(u, v)


# ----------------------------------------------------------------------------------------- collator
@pytest.mark.parametrize("max_length", [32, 8])  # 8 truncates the packed pairs
def test_collator_rows_are_the_packed_then_the_siamese_rows(tiny_base, max_length):
    both = cs224n_task("quora", pair_encoding="both")
    packed, siamese = cs224n_task("quora"), cs224n_task("quora", pair_encoding="siamese")
    collator = _collator(tiny_base, {"both": both, "packed": packed, "siamese": siamese}, max_length)
    batch = collator([dict(r, task="both") for r in QUORA])
    n = len(QUORA)
    assert batch["input_ids"].shape[0] == 3 * n and batch["labels"].tolist() == [1.0, 0.0, 1.0]
    expected = _rows(collator.encode("packed", QUORA)) + _rows(collator.encode("siamese", QUORA))
    assert _rows(batch) == expected
    assert batch["attention_mask"].shape[1] == max(len(r["input_ids"]) for r in expected)

    mixed = collator.encode_mixed([dict(r, task="both") for r in QUORA])
    assert mixed["row_example"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert mixed["row_tasks"] == ["quora"] * 9  # the spec's name routes the rows
    by_example = [expected[j] if k == 0 else expected[n + j] if k == 1 else expected[2 * n + j] for j in range(n) for k in range(3)]
    assert _rows(mixed) == by_example


def test_lengths_count_a_both_pair_as_packed():
    spec = cs224n_task("quora", pair_encoding="both")
    row = QUORA[0]
    assert mixed_length(spec, row) == len(row["sentence1"]) + len(row["sentence2"])
    columns = {c: [r[c] for r in QUORA] for c in spec.text_columns}
    assert text_lengths(columns, spec.text_columns, siamese=spec.is_siamese) == [mixed_length(spec, r) for r in QUORA]


# ------------------------------------------------------------------------------------------- model
def test_logits_are_the_mean_of_the_two_parts_and_loss_is_on_the_mean(tiny_base):
    model = _model(tiny_base)
    collator = _collator(tiny_base, model.tasks)
    batch = collator([dict(r, task="quora") for r in QUORA])
    out = model(**batch)
    n = len(QUORA)

    # by hand: the encoder's token states through the task's adapter, mean pooling per row
    hidden = model.encoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
        adapter_names=["quora"] * (3 * n),
    ).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    p, u, v = pooled[:n], pooled[n : 2 * n], pooled[2 * n :]
    head = model.heads["quora"]
    packed_logits = F.linear(p, head.packed_classifier.weight, head.packed_classifier.bias).squeeze(-1)
    features = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)
    siamese_logits = F.linear(features, head.siamese_classifier.weight, head.siamese_classifier.bias).squeeze(-1)
    expected = (packed_logits + siamese_logits) / 2

    assert out["logits"].shape == (n,)
    torch.testing.assert_close(out["logits"], expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(packed_logits, siamese_logits, atol=1e-3)  # the two parts really differ
    labels = batch["labels"]
    torch.testing.assert_close(out["loss"], F.binary_cross_entropy_with_logits(expected, labels), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out["loss"], task_loss(model.tasks["quora"], out["logits"], labels))

    with pytest.raises(ValueError, match="task 'quora' has pair_encoding 'both': a batch holds 3 rows per example"):
        model(task="quora", input_ids=batch["input_ids"][:4], attention_mask=batch["attention_mask"][:4])


def test_gradients_reach_both_head_parts_and_the_adapter(tiny_base):
    model = _model(tiny_base).train()
    batch = _collator(tiny_base, model.tasks)([dict(r, task="quora") for r in QUORA])
    model(**batch)["loss"].backward()
    head = model.heads["quora"]
    for layer in (head.packed_classifier, head.siamese_classifier):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
        assert layer.bias.grad is not None and layer.bias.grad.abs().sum() > 0
    quora_pals = [p for p in model.adapter_parameters("quora") if p.grad is not None and p.grad.abs().sum() > 0]
    assert quora_pals
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.adapter_parameters("sst"))


@pytest.mark.parametrize("freeze_encoder", [True, False], ids=["frozen", "joint"])
def test_bundle_round_trip(tiny_base, tmp_path, freeze_encoder):
    model = _model(tiny_base, freeze_encoder=freeze_encoder)
    collator = _collator(tiny_base, model.tasks)
    batch = collator([dict(r, task="quora") for r in QUORA])
    model.save_pretrained(str(tmp_path), tokenizer=collator.tokenizer)
    loaded = MultiTaskModel.from_pretrained(str(tmp_path))
    assert loaded.tasks["quora"] == model.tasks["quora"] and loaded.tasks["quora"].pair_encoding == "both"
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch)["logits"], model(**batch)["logits"], atol=0, rtol=0)


@pytest.mark.parametrize("top_layer", [False, True], ids=["plain", "top_layer"])
def test_forward_mixed_equals_each_task_alone(tiny_base, top_layer):
    model = _model(tiny_base, top_layer=top_layer)
    collator = _collator(tiny_base, model.tasks)
    features = [dict(QUORA[0], task="quora"), dict(SST[0], task="sst"), dict(QUORA[2], task="quora"),
                dict(SST[1], task="sst"), dict(QUORA[1], task="quora")]
    batch = collator.encode_mixed(features)
    assert batch["input_ids"].shape[0] == 3 * 3 + 2
    assert batch["row_example"].tolist() == [0, 0, 0, 1, 2, 2, 2, 3, 4, 4, 4]
    with torch.no_grad():
        mixed = model.forward_mixed(**batch)
        alone = {
            "quora": model(**collator([dict(r, task="quora") for r in QUORA]))["logits"],
            "sst": model(**collator([dict(r, task="sst") for r in SST]))["logits"],
        }
    assert mixed["quora"][0].tolist() == [0, 2, 4] and mixed["sst"][0].tolist() == [1, 3]
    torch.testing.assert_close(mixed["quora"][1], alone["quora"][[0, 2, 1]], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mixed["sst"][1], alone["sst"], atol=1e-5, rtol=1e-4)


def test_predictor_predict_and_predict_mixed(tiny_base, tmp_path):
    model = _model(tiny_base)
    model.save_pretrained(str(tmp_path), tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    predictor = MultiTaskPredictor.from_pretrained(str(tmp_path), batch_size=2)
    pairs = [(r["sentence1"], r["sentence2"]) for r in QUORA]
    rows = [{"sentence1": a, "sentence2": b} for a, b in pairs]
    with torch.no_grad():
        logits = model(**predictor.collator([dict(r, task="quora") for r in rows]))["logits"]
    got = predictor.predict("quora", pairs)
    assert [p["label"] for p in got] == (logits > 0).long().tolist()
    positive = logits.sigmoid()
    torch.testing.assert_close(
        torch.tensor([p["score"] for p in got]), torch.where(logits > 0, positive, 1 - positive), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(predict_outputs(predictor.model, predictor.collator, rows, "quora"), logits, atol=1e-5, rtol=1e-4)
    assert predictor.predict("quora", pairs[0]) == [got[0]]

    sst = predictor.predict("sst", [r["sentence1"] for r in SST])
    items = [("quora", pairs[0]), ("sst", SST[0]["sentence1"]), ("quora", pairs[1]), ("quora", pairs[2]), ("sst", SST[1]["sentence1"])]
    mixed = predictor.predict_mixed(items)
    expected = [dict(task="quora", **got[0]), dict(task="sst", **sst[0]), dict(task="quora", **got[1]),
                dict(task="quora", **got[2]), dict(task="sst", **sst[1])]
    assert [(m["task"], m["label"]) for m in mixed] == [(e["task"], e["label"]) for e in expected]
    assert [m["score"] for m in mixed] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_smart_penalty_runs_on_a_both_task(tiny_base):
    from hf_pals.training.smart import SMARTConfig, smart_penalty

    model = _model(tiny_base).train()
    batch = _collator(tiny_base, model.tasks)([dict(r, task="quora") for r in QUORA])
    clean = model(**batch)["logits"]
    penalty = smart_penalty(model, batch, clean, SMARTConfig(weights={"quora": 1.0}, epsilon=1e-1, step_size=1e-1))
    assert penalty.ndim == 0 and torch.isfinite(penalty) and penalty >= 0
    penalty.backward()
    assert model.heads["quora"].siamese_classifier.weight.grad is not None
