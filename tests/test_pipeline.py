"""The "hf-pals" transformers pipeline on a tiny saved bundle: the same outputs as MultiTaskPredictor, for one
task, in batches, and with one task per input; label names; clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoTokenizer, pipeline
from transformers.pipelines import get_supported_tasks

from hf_pals import MultiTaskModel, MultiTaskPredictor, PALConfig
from hf_pals.pipeline import MultiTaskPipeline, load_pipeline, write_pipeline_config
from hf_pals.tasks import cs224n_task

SENTIMENTS = ("very negative", "negative", "neutral", "positive", "very positive")
SST = ["a gripping , funny film", "dull", "the plot is slow but the actors are great fun to watch", "meh", "a mess"]
PAIRS = [
    ("how do i cook rice ?", "what is the way to cook rice ?"),
    ("who won ?", "where is paris ?"),
    ("a man plays a guitar .", "a man is playing guitar ."),
]

pytestmark = pytest.mark.one_thread  # small models: one torch thread is faster and deterministic


@pytest.fixture(scope="module")
def bundle(tiny_base, tmp_path_factory):
    """A classification task with label names, a binary pair task and a siamese regression task."""
    torch.manual_seed(0)
    tasks = [
        cs224n_task("sst", label_names=list(SENTIMENTS)),
        cs224n_task("quora"),
        cs224n_task("sts", pair_encoding="siamese", head="cosine"),
    ]
    model = MultiTaskModel.from_base(tiny_base, tasks, PALConfig(init_pal_weights="bert"), freeze_encoder=True)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".pals_" in name or name.startswith("heads."):
                param.add_(torch.randn_like(param) * 0.2)
    path = tmp_path_factory.mktemp("bundle")
    model.eval().save_pretrained(str(path), tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    return path, model


@pytest.fixture(scope="module")
def predictor(bundle):
    return MultiTaskPredictor.from_pretrained(str(bundle[0]))


@pytest.fixture(scope="module")
def pipe(bundle):
    return load_pipeline(str(bundle[0]), device="cpu")


def assert_same(got, expected):
    assert [g["label"] for g in got] == pytest.approx([e["label"] for e in expected], abs=1e-5)
    assert [g["score"] for g in got] == pytest.approx([e["score"] for e in expected], abs=1e-5)


@torch.no_grad()
def test_predictor_returns_label_names(bundle, predictor):
    _, model = bundle
    sst = predictor.predict("sst", SST)
    probs = model(task="sst", **predictor.collator.encode("sst", [{"sentence1": t} for t in SST]))["logits"].softmax(-1)
    assert [p["label"] for p in sst] == [SENTIMENTS[i] for i in probs.argmax(-1).tolist()]
    torch.testing.assert_close(torch.tensor([p["score"] for p in sst]), probs.max(-1).values)
    # Tasks without label names keep their label indices (and regression its values).
    assert all(isinstance(p["label"], int) for p in predictor.predict("quora", PAIRS))
    assert all(isinstance(p["label"], float) for p in predictor.predict("sts", PAIRS))


def test_hf_pals_task_is_registered(pipe):
    assert "hf-pals" in get_supported_tasks()
    assert isinstance(pipe, MultiTaskPipeline)
    assert pipe.tasks == ["sst", "quora", "sts"]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_single_task_equals_the_predictor(pipe, predictor, batch_size):
    sst = pipe(SST, task_name="sst", batch_size=batch_size)
    assert_same(sst, predictor.predict("sst", SST))
    assert {p["label"] for p in sst} <= set(SENTIMENTS)
    for task in ("quora", "sts"):
        assert_same(pipe(PAIRS, task_name=task, batch_size=batch_size), predictor.predict(task, PAIRS))
        # transformers' text-classification pair convention gives the same predictions.
        as_dicts = [{"text": a, "text_pair": b} for a, b in PAIRS]
        assert_same(pipe(as_dicts, task_name=task, batch_size=batch_size), predictor.predict(task, PAIRS))
    # One input gives a list of one prediction, as the predictor does.
    assert_same(pipe("dull", task_name="sst"), predictor.predict("sst", "dull"))
    assert_same(pipe(PAIRS[0], task_name="quora"), predictor.predict("quora", PAIRS[0]))


def test_per_example_tasks_run_one_mixed_forward_per_batch(pipe, predictor, monkeypatch):
    items = [
        ("sst", "a gripping , funny film"),
        ("sts", PAIRS[2]),
        ("quora", {"text": PAIRS[0][0], "text_pair": PAIRS[0][1]}),
        ("sst", "dull"),
        ("sts", ("a cat sleeps .", "stocks fell today .")),
    ]
    calls = []
    forward_mixed = pipe.model.forward_mixed

    def counting_forward_mixed(**batch):
        calls.append(list(batch["tasks"]))
        return forward_mixed(**batch)

    monkeypatch.setattr(pipe.model, "forward_mixed", counting_forward_mixed)
    got = pipe([x for _, x in items], task_name=[t for t, _ in items], batch_size=2)
    assert calls == [["sst", "sts"], ["quora", "sst"], ["sts"]]
    for (task, x), result in zip(items, got):
        x = (x["text"], x["text_pair"]) if isinstance(x, dict) else x
        assert_same([result], predictor.predict(task, [x]))
    assert got[0]["label"] in SENTIMENTS and isinstance(got[2]["label"], int)


def test_transformers_pipeline_takes_a_loaded_model(bundle, predictor):
    path, _ = bundle
    model = MultiTaskModel.from_pretrained(str(path))
    pipe = pipeline("hf-pals", model=model, tokenizer=AutoTokenizer.from_pretrained(str(path)), device="cpu")
    assert isinstance(pipe, MultiTaskPipeline)
    assert_same(pipe(SST, task_name="sst", batch_size=2), predictor.predict("sst", SST))
    # A default task at creation, as any pipeline parameter.
    default = pipeline("hf-pals", model=model, tokenizer=str(path), device="cpu", task_name="quora")
    assert_same(default(PAIRS), predictor.predict("quora", PAIRS))


def test_transformers_pipeline_takes_a_bundle_directory(bundle, predictor, tmp_path):
    path, _ = bundle
    # Every saved bundle has the config.json marker; the bundle as saved loads through pipeline().
    assert json.loads((path / "config.json").read_text()) == {"model_type": "hf-pals"}
    pipe = pipeline("hf-pals", model=str(path), device="cpu")
    assert_same(pipe(PAIRS, task_name="quora", batch_size=2), predictor.predict("quora", PAIRS))
    # Without the marker (a bundle of an older hf_pals) transformers' AutoConfig stops before the registry;
    # write_pipeline_config adds it.
    old = tmp_path / "old"
    shutil.copytree(path, old)
    (old / "config.json").unlink()
    with pytest.raises(ValueError, match="model_type"):
        pipeline("hf-pals", model=str(old), device="cpu")
    marked = old
    write_pipeline_config(str(marked))
    pipe = pipeline("hf-pals", model=str(marked), device="cpu")
    assert isinstance(pipe, MultiTaskPipeline)
    assert_same(pipe(SST, task_name="sst", batch_size=2), predictor.predict("sst", SST))
    # save_pretrained writes a bundle (with the marker) that both pipeline() and the predictor load.
    saved = tmp_path / "saved"
    pipe.save_pretrained(str(saved))
    again = pipeline("hf-pals", model=str(saved), device="cpu")
    assert_same(again(PAIRS, task_name="sts"), predictor.predict("sts", PAIRS))
    assert_same(MultiTaskPredictor.from_pretrained(str(saved)).predict("sst", SST), predictor.predict("sst", SST))
    with pytest.raises(FileNotFoundError, match="not a hf_pals model directory"):
        write_pipeline_config(str(tmp_path))


def test_load_pipeline_downloads_a_hub_repo(bundle, monkeypatch):
    path, _ = bundle
    calls = []

    def fake_snapshot_download(repo_id, revision=None, token=None):
        calls.append((repo_id, revision, token))
        return str(path)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    pipe = load_pipeline("user/tiny-pals", revision="v1", device="cpu")
    assert calls == [("user/tiny-pals", "v1", None)]
    assert pipe.tasks == ["sst", "quora", "sts"]


def test_clear_errors(pipe):
    with pytest.raises(ValueError, match=r"needs task_name=: one of this model's tasks \['sst', 'quora', 'sts'\]"):
        pipe(SST)
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['nli'\]; this model has tasks \['sst', 'quora', 'sts'\]"):
        pipe(SST, task_name="nli")
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['nli'\]"):
        pipe(["dull", "meh"], task_name=["sst", "nli"])
    with pytest.raises(ValueError, match="task_name lists 1 tasks for 2 inputs"):
        pipe(["dull", "meh"], task_name=["sst"])
    with pytest.raises(ValueError, match=r"task 'quora' takes \(sentence1, sentence2\) pairs; input 1 is 'dull'"):
        pipe([PAIRS[0], "dull"], task_name="quora")
    with pytest.raises(ValueError, match="a dict input has a 'text'"):
        pipe([{"sentence": "dull"}], task_name="sst")
    with pytest.raises(TypeError, match="unexpected argument"):
        pipe(SST, task_name="sst", top_k=2)
    assert pipe([], task_name="sst") == []
