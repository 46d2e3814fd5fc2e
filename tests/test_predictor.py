"""MultiTaskPredictor on tiny saved bundles, and plain transformers code loading a bundle's adapters."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

import hf_pals
from hf_pals import MultiTaskModel, MultiTaskPredictor, PALConfig
from hf_pals.evaluation import predict
from hf_pals.predictor import mixed_length
from hf_pals.tasks import cs224n_task

SST = ["a gripping , funny film", "dull", "the plot is slow but the actors are great fun to watch"]
PAIRS = [
    ("how do i cook rice ?", "what is the way to cook rice ?"),
    ("who won ?", "where is paris ?"),
    ("a man plays a guitar .", "a man is playing guitar ."),
]


pytestmark = pytest.mark.one_thread  # small models: one torch thread is faster and deterministic


def save_bundle(base: str, path, freeze_encoder: bool) -> MultiTaskModel:
    """A tiny bundle whose adapters, heads (and encoder, when trained) all differ from a fresh model."""
    torch.manual_seed(0)
    tasks = [cs224n_task("sst"), cs224n_task("quora"), cs224n_task("sts", pair_encoding="siamese", head="cosine")]
    model = MultiTaskModel.from_base(base, tasks, PALConfig(init_pal_weights="bert"), freeze_encoder=freeze_encoder)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".pals_" in name or name.startswith("heads.") or not freeze_encoder:
                param.add_(torch.randn_like(param) * 0.2)
    model.eval().save_pretrained(str(path), tokenizer=AutoTokenizer.from_pretrained(base))
    return model


@pytest.fixture(scope="module", params=[True, False], ids=["frozen", "joint"])
def bundle(request, tiny_base, tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle")
    model = save_bundle(tiny_base, path, freeze_encoder=request.param)
    return path, model


@torch.no_grad()
def test_predict_labels_and_scores_match_the_model(bundle):
    path, model = bundle
    predictor = MultiTaskPredictor.from_pretrained(str(path))
    assert predictor.tasks == ["sst", "quora", "sts"]
    collator = predictor.collator

    sst = predictor.predict("sst", SST)
    batch = collator.encode("sst", [{"sentence1": t} for t in SST])
    probs = model(task="sst", **batch)["logits"].softmax(-1)
    assert [p["label"] for p in sst] == probs.argmax(-1).tolist()
    assert all(isinstance(p["label"], int) for p in sst)
    torch.testing.assert_close(torch.tensor([p["score"] for p in sst]), probs.max(-1).values)

    quora = predictor.predict("quora", PAIRS)
    rows = [{"sentence1": a, "sentence2": b} for a, b in PAIRS]
    positive = model(task="quora", **collator.encode("quora", rows))["logits"].sigmoid()
    assert [p["label"] for p in quora] == (positive > 0.5).long().tolist()
    expected = torch.where(positive > 0.5, positive, 1 - positive)
    torch.testing.assert_close(torch.tensor([p["score"] for p in quora]), expected)

    sts = predictor.predict("sts", PAIRS)
    scores = model(task="sts", **collator.encode("sts", rows))["logits"]
    torch.testing.assert_close(torch.tensor([p["score"] for p in sts]), scores)
    assert all(p["label"] == p["score"] and isinstance(p["label"], float) for p in sts)


def test_predictor_and_evaluation_share_one_path(bundle):
    path, _ = bundle
    predictor = MultiTaskPredictor.from_pretrained(str(path), batch_size=2)
    rows = [{"sentence1": t} for t in SST]
    labels = predict(predictor.model, predictor.collator, rows, "sst", batch_size=2)
    assert [p["label"] for p in predictor.predict("sst", SST)] == labels.astype(int).tolist()
    # Batching and input order do not change a row's prediction.
    one_by_one = [predictor.predict("sst", t, batch_size=1)[0] for t in SST]
    together = predictor.predict("sst", SST, batch_size=8)
    assert [p["label"] for p in one_by_one] == [p["label"] for p in together]
    assert [p["score"] for p in one_by_one] == pytest.approx([p["score"] for p in together], abs=1e-5)


def test_single_inputs_and_bad_inputs(bundle):
    path, _ = bundle
    predictor = MultiTaskPredictor.from_pretrained(str(path))
    assert len(predictor.predict("sst", "dull")) == 1
    assert predictor.predict("quora", PAIRS[0]) == predictor.predict("quora", [PAIRS[0]])
    with pytest.raises(ValueError, match=r"task 'quora' takes \(sentence1, sentence2\) pairs; input 0 is 'dull'"):
        predictor.predict("quora", ["dull"])
    with pytest.raises(ValueError, match="task 'sst' takes single texts"):
        predictor.predict("sst", [PAIRS[0]])
    assert predictor.predict("sst", []) == []


def test_from_pretrained_downloads_a_hub_repo(bundle, monkeypatch):
    path, _ = bundle
    calls = []

    def fake_snapshot_download(repo_id, revision=None, token=None):
        calls.append((repo_id, revision, token))
        return str(path)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    predictor = MultiTaskPredictor.from_pretrained("user/tiny-pals", revision="v1")
    assert calls == [("user/tiny-pals", "v1", None)]
    assert predictor.tasks == ["sst", "quora", "sts"]


@pytest.mark.parametrize("how", ["adapter_dir", "subfolder"])
def test_plain_transformers_load_adapter_matches_the_bundle(bundle, tiny_base, how):
    """`import hf_pals` + `model.load_adapter(...)` on the plain base (frozen bundle) or on the bundle's own
    encoder (joint bundle) gives the encoder states the bundle computes for that task."""
    path, model = bundle
    encoder = "encoder" if (path / "encoder").is_dir() else None
    plain = AutoModel.from_pretrained(str(path), subfolder=encoder) if encoder else AutoModel.from_pretrained(tiny_base)
    if how == "adapter_dir":
        plain.load_adapter(str(path / "adapters" / "sst"), adapter_name="sst")
    else:  # as the model card shows it for a Hub repo
        plain.load_adapter(str(path), adapter_name="sst", adapter_kwargs={"subfolder": "adapters/sst"})
    plain.eval()
    batch = MultiTaskPredictor.from_pretrained(str(path)).collator.encode("sst", [{"sentence1": t} for t in SST])
    with torch.no_grad():
        expected = model.encoder(**batch, adapter_names="sst").last_hidden_state
        got = plain(**batch).last_hidden_state
        base_only = AutoModel.from_pretrained(tiny_base).eval()(**batch).last_hidden_state
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, base_only, atol=1e-3)  # the adapter really is in use
    assert hf_pals.PALConfig  # imported, so "pals" is registered with PEFT


def test_predict_mixed_equals_single_task_predictions(bundle):
    path, _ = bundle
    predictor = MultiTaskPredictor.from_pretrained(str(path), batch_size=4)  # items span two batches
    items = [
        ("sst", "a gripping , funny film"),
        ("sts", ("a man plays a guitar .", "a man is playing guitar .")),
        ("quora", ("how do i cook rice ?", "what is the way to cook rice ?")),
        ("sst", "dull"),
        ("sts", ("a cat sleeps .", "stocks fell today .")),
    ]
    mixed = predictor.predict_mixed(items)
    for item, result in zip(items, mixed):
        (alone,) = predictor.predict(item[0], [item[1]])
        assert result["task"] == item[0]
        assert result["label"] == pytest.approx(alone["label"], abs=1e-4)
        assert result["score"] == pytest.approx(alone["score"], abs=1e-4)


MIXED = [
    ("quora", ("how do i learn to cook rice well at home ?", "what is the best way to cook rice at home ?")),
    ("sst", "dull"),
    ("sts", ("a man plays a guitar .", "a man is playing guitar .")),
    ("sst", "the plot is slow but the actors are great fun to watch"),
    ("quora", ("who won ?", "where is paris ?")),
    ("sts", ("a cat sleeps .", "stocks fell sharply today in new york and london .")),
    ("sst", "a gripping , funny film"),
    ("quora", ("why ?", "how ?")),
    ("sts", ("a dog runs .", "a dog is running .")),
    ("sst", "bad"),
    ("sst", "an overlong , muddled and ultimately tiresome piece of work"),
]


def spy_on_encode_mixed(predictor, monkeypatch) -> list[tuple[list, dict]]:
    """Records each call of the predictor's `collator.encode_mixed`: (its features, the batch it made)."""
    calls = []
    encode_mixed = predictor.collator.encode_mixed

    def spy(features):
        batch = encode_mixed(features)
        calls.append((list(features), batch))
        return batch

    monkeypatch.setattr(predictor.collator, "encode_mixed", spy)
    return calls


@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_predict_mixed_runs_length_sorted_batches_and_keeps_the_items_order(bundle, batch_size, monkeypatch):
    """`predict_mixed` sorts the items by length before cutting batches (each a mixed forward, the tasks'
    rows in blocks), and every item gets what it gets predicted alone, in the items' order."""
    path, _ = bundle
    predictor = MultiTaskPredictor.from_pretrained(str(path), batch_size=batch_size)
    alone = [predictor.predict(task, [inputs])[0] for task, inputs in MIXED]
    calls = spy_on_encode_mixed(predictor, monkeypatch)
    mixed = predictor.predict_mixed(MIXED)

    assert [r["task"] for r in mixed] == [task for task, _ in MIXED]
    for result, expected in zip(mixed, alone):
        assert result["label"] == pytest.approx(expected["label"], abs=1e-4)
        assert result["score"] == pytest.approx(expected["score"], abs=1e-4)
    assert [len(features) for features, _ in calls] == [
        min(batch_size, len(MIXED) - start) for start in range(0, len(MIXED), batch_size)
    ]
    lengths = [[mixed_length(predictor.model.tasks[f["task"]], f) for f in features] for features, _ in calls]
    assert all(max(a) <= min(b) for a, b in zip(lengths, lengths[1:]))  # the batches are cut from one sorted list
    widths = [batch["input_ids"].shape[1] for _, batch in calls]
    assert widths == sorted(widths)  # so the padded widths grow (characters stand for tokens: not "meh", 2 tokens)
    for _, batch in calls:  # each task's rows form one block
        tasks = batch["row_tasks"]
        assert len(list(dict.fromkeys(tasks))) == sum(1 for a, b in zip([None] + tasks, tasks) if a != b)


def test_predict_mixed_sorting_cuts_the_padding(bundle, monkeypatch):
    """Fewer padding tokens than batches cut in the items' order (what `predict_mixed` did before)."""
    path, _ = bundle
    predictor = MultiTaskPredictor.from_pretrained(str(path), batch_size=3)
    collator = predictor.collator
    rows = [dict(MultiTaskPredictor._row(predictor.model.tasks[t], x, i), task=t) for i, (t, x) in enumerate(MIXED)]
    unsorted = sum(
        int((collator.encode_mixed(rows[i : i + 3])["attention_mask"] == 0).sum()) for i in range(0, len(rows), 3)
    )
    calls = spy_on_encode_mixed(predictor, monkeypatch)
    predictor.predict_mixed(MIXED)
    padding = sum(int((batch["attention_mask"] == 0).sum()) for _, batch in calls)
    assert padding < unsorted / 2


def test_predict_mixed_of_nothing_and_bad_items(bundle):
    path, _ = bundle
    predictor = MultiTaskPredictor.from_pretrained(str(path))
    assert predictor.predict_mixed([]) == []
    with pytest.raises(ValueError, match=r"task 'quora' takes \(sentence1, sentence2\) pairs; input 1 is 'dull'"):
        predictor.predict_mixed([("sst", "fine"), ("quora", "dull")])
    with pytest.raises(ValueError, match="unknown task 'mnli'"):
        predictor.predict_mixed([("mnli", "fine")])


def encode_mixed_per_text(collator, features):
    """`MultiTaskCollator.encode_mixed` as it was: one tokenizer call per text (or packed pair)."""
    rows, row_tasks, row_example = [], [], []
    for index, feature in enumerate(features):
        spec = collator.tasks[feature["task"]]
        texts = [feature[c] for c in spec.text_columns]
        kwargs = dict(truncation=True, max_length=collator.max_length)
        if spec.is_siamese:
            encoded = [collator.tokenizer(text, **kwargs) for text in texts]
        else:
            encoded = [collator.tokenizer(*texts, **kwargs)]
        for part in encoded:
            rows.append(dict(part))
            row_tasks.append(spec.name)
            row_example.append(index)
    batch = dict(collator.tokenizer.pad(rows, return_tensors="pt"))
    batch.update(row_tasks=row_tasks, row_example=torch.tensor(row_example), tasks=[f["task"] for f in features])
    return batch


@pytest.mark.parametrize("max_length", [128, 8])  # 8: long texts and pairs are truncated
def test_encode_mixed_tokenizes_per_task_into_the_same_batch(bundle, max_length):
    path, _ = bundle
    collator = MultiTaskPredictor.from_pretrained(str(path)).collator
    collator.max_length = max_length
    features = [dict(MultiTaskPredictor._row(collator.tasks[t], x, i), task=t) for i, (t, x) in enumerate(MIXED)]
    got, expected = collator.encode_mixed(features), encode_mixed_per_text(collator, features)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        if torch.is_tensor(value):
            assert torch.equal(got[key], value), key
        else:
            assert got[key] == value, key


@torch.no_grad()
def test_predict_under_bf16_autocast_is_close_to_float32(bundle):
    """Inference in bfloat16 (CPU autocast around `predict`, as the README shows): the scores of float32
    to bfloat16's precision, for a classification, a binary and a regression task."""
    path, _ = bundle
    predictor = MultiTaskPredictor.from_pretrained(str(path))
    rounded = 0
    for task, inputs in (("sst", SST), ("quora", PAIRS), ("sts", PAIRS)):
        full = predictor.predict(task, inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = predictor.predict(task, inputs)
        assert all(isinstance(h["score"], float) for h in half)
        torch.testing.assert_close(
            torch.tensor([h["score"] for h in half]), torch.tensor([f["score"] for f in full]), atol=0.05, rtol=0.05
        )
        rounded += sum(h["score"] != f["score"] for h, f in zip(half, full))
    assert rounded  # the forward did run in bfloat16
