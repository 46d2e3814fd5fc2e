"""`hf-pals bench serving` on a tiny base: every dtype, batch size, stream and side is reported, and the
figures agree with each other (texts/s with the latencies, percentiles in order, ratios of the reported
rates). Only a real run on a quiet machine says anything about speed."""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch
from transformers import AutoTokenizer

from hf_pals import MultiTaskPredictor
from hf_pals.benchmarks import serving

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]

SIZES, MIN_BATCHES, MIN_TEXTS, MICRO_BATCH = (1, 4), 3, 4, 3  # batches of 4: two micro-batches a call


@pytest.fixture(scope="module")
def result(tiny_base, data_dir):
    return serving.run(str(data_dir), base_model=tiny_base, batch_sizes=SIZES, min_batches=MIN_BATCHES,
                       min_texts=MIN_TEXTS, micro_batch=MICRO_BATCH)


def check_side(figures: dict, batch_size: int) -> None:
    batches = max(MIN_BATCHES, math.ceil(MIN_TEXTS / batch_size))
    assert figures["batches"] == batches and figures["texts"] == batches * batch_size
    assert figures["texts_per_s"] == pytest.approx(figures["texts"] / figures["seconds"], rel=1e-3)
    latency = figures["latency_ms"]
    assert latency["mean"] * batches / 1000 == pytest.approx(figures["seconds"], rel=1e-3)
    assert 0 < latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
    assert latency["min"] <= latency["mean"] <= latency["max"]


def test_every_dtype_size_stream_and_side_is_reported_consistently(result):
    assert list(result["results"]) == ["float32", "bf16"]
    for dtype, by_size in result["results"].items():
        assert list(by_size) == [str(s) for s in SIZES]
        for size, by_stream in by_size.items():
            assert list(by_stream) == list(serving.STREAMS)
            for stream, figures in by_stream.items():
                for side in ("pal", "plain"):
                    check_side(figures[side], int(size))
                ratio = figures["pal"]["texts_per_s"] / figures["plain"]["texts_per_s"]
                assert figures["pal_over_plain_texts_per_s"] == pytest.approx(ratio, rel=2e-3), (dtype, size, stream)
                assert figures["pal_over_plain_paired"] > 0
    for size, by_stream in result["bf16_over_float32_texts_per_s"].items():
        for stream, sides in by_stream.items():
            for side, ratio in sides.items():
                rates = [result["results"][d][size][stream][side]["texts_per_s"] for d in ("bf16", "float32")]
                assert ratio == pytest.approx(rates[0] / rates[1], rel=2e-3)


def test_streams_and_models_are_described(result, tiny_base):
    assert result["model"]["bundle"].startswith(f"built from {tiny_base}")
    assert list(result["model"]["tasks"]) == ["sst", "quora", "sts"]
    assert result["model"]["tasks"]["sts"]["pair_encoding"] == "siamese"
    assert result["plain_model"].startswith("AutoModelForSequenceClassification of ")
    assert result["plain_model"].endswith("/encoder, one per task")  # the bundle's trained encoder
    streams = result["streams"]
    assert streams["single_task"]["tasks"] == ["sst"] and streams["mixed_task"]["tasks"] == ["sst", "quora", "sts"]
    assert streams["mixed_task"]["encoder_rows_per_text"] == {
        "pal": {"sst": 1, "quora": 1, "sts": 2}, "plain": {"sst": 1, "quora": 1, "sts": 1}
    }


def test_the_batching_policy_is_recorded(result):
    batching = result["batching"]
    assert batching["micro_batch"] == MICRO_BATCH and batching["order"] == "by length"
    assert set(batching) == {"micro_batch", "order", "pal", "plain"}
    default = inspect.signature(serving.run).parameters["micro_batch"].default
    assert default == serving.MICRO_BATCH == inspect.signature(MultiTaskPredictor).parameters["batch_size"].default


def test_stream_takes_the_tasks_in_turn_and_cycles_their_inputs():
    inputs = {"a": ["a0", "a1"], "b": ["b0"]}
    assert serving.stream(inputs, ["a", "b"], 5) == [("a", "a0"), ("b", "b0"), ("a", "a1"), ("b", "b0"), ("a", "a0")]
    assert serving.stream(inputs, ["a"], 3) == [("a", "a0"), ("a", "a1"), ("a", "a0")]


def test_latency_summary_arithmetic():
    summary = serving.latency_summary([0.1, 0.3, 0.2, 0.4], batch_size=8)
    assert summary["batches"] == 4 and summary["texts"] == 32
    assert summary["seconds"] == pytest.approx(1.0) and summary["texts_per_s"] == pytest.approx(32.0)
    assert summary["latency_ms"]["p50"] == pytest.approx(250.0)
    assert summary["latency_ms"]["p99"] == pytest.approx(397.0)  # numpy's linear interpolation
    assert (summary["latency_ms"]["min"], summary["latency_ms"]["max"]) == (pytest.approx(100.0), pytest.approx(400.0))


def test_plain_models_predict_mixed_items_in_order(tiny_base):
    tasks = {t.name: t for t in serving.recipe_tasks()}
    plain = serving.PlainModels(tiny_base, AutoTokenizer.from_pretrained(tiny_base), tasks, max_length=32)
    items = [("quora", ("how ?", "why ?")), ("sst", "a fine film"), ("sts", ("a man .", "a dog .")), ("sst", "dull")]
    results = plain.predict_mixed(items)
    assert [r["task"] for r in results] == ["quora", "sst", "sts", "sst"]
    assert results[1]["label"] in range(5) and results[0]["label"] in (0, 1)
    assert isinstance(results[2]["label"], float)
    assert [r["label"] for r in plain.predict("sst", ["a fine film", "dull"])] == [results[1]["label"], results[3]["label"]]


def test_dev_inputs_refuse_tasks_without_cs224n_files(data_dir):
    with pytest.raises(ValueError, match=r"task\(s\) \['cfimdb'\] are not among"):
        serving.dev_inputs(str(data_dir), ["sst", "cfimdb"])
    inputs = serving.dev_inputs(str(data_dir), ["sst", "quora"])
    assert isinstance(inputs["sst"][0], str) and len(inputs["quora"][0]) == 2


def test_cli_serves_an_existing_bundle(tiny_base, data_dir, tmp_path, capsys):
    """`--model-dir`: a frozen-encoder bundle (no encoder/), so the plain models are the base's."""
    from hf_pals import MultiTaskModel, PALConfig
    from hf_pals.cli import main

    torch.manual_seed(0)
    model = MultiTaskModel.from_base(tiny_base, serving.recipe_tasks()[:2], PALConfig(), freeze_encoder=True)
    model.save_pretrained(str(tmp_path), tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    argv = ["bench", "serving", "--data-dir", str(data_dir), "--model-dir", str(tmp_path), "--batch-sizes", "2",
            "--min-batches", "2", "--min-texts", "2"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    figures = json.loads(captured.out)
    assert "bench serving: batch sizes 2, >= 2 batches" in captured.err  # the plan
    assert figures["model"]["bundle"] == f"bundle {tmp_path}"
    assert figures["plain_model"] == f"AutoModelForSequenceClassification of {tiny_base}, one per task"
    assert figures["streams"]["mixed_task"]["tasks"] == ["sst", "quora"]
    assert figures["results"]["bf16"]["2"]["mixed_task"]["pal"]["texts"] == 4


@torch.no_grad()
def one_forward(plain: serving.PlainModels, task: str, inputs: list) -> torch.Tensor:
    """`task`'s outputs for `inputs` in one padded forward, in the inputs' order (the plain side before it
    sorted and cut micro-batches)."""
    spec = plain.specs[task]
    columns = [list(c) for c in zip(*inputs)] if spec.is_pair else [list(inputs)]
    encoded = plain.tokenizer(*columns, padding=True, truncation=True, max_length=plain.max_length, return_tensors="pt")
    logits = plain.models[task](**encoded).logits.float()
    return logits if spec.kind == "classification" else logits.squeeze(-1)


def test_plain_models_sort_and_cut_micro_batches_without_changing_results(tiny_base, monkeypatch):
    """`PlainModels.predict` runs length-sorted micro-batches (as `MultiTaskPredictor` does) and gives the
    labels and scores of one forward over the inputs in order."""
    tasks = {t.name: t for t in serving.recipe_tasks()}
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    plain = serving.PlainModels(tiny_base, tokenizer, tasks, max_length=32, micro_batch=2)
    sst = ["an overlong , muddled and tiresome film", "dull", "a gripping , funny film", "bad", "fine"]
    pairs = [("how do i cook rice well at home ?", "what is the way to cook rice ?"), ("who ?", "why ?"),
             ("a man plays a guitar .", "a man is playing guitar ."), ("a cat .", "a dog .")]
    for task, inputs in (("sst", sst), ("quora", pairs), ("sts", pairs)):
        model = plain.models[task]
        widths, sizes = [], []
        forward = model.forward

        def spy(input_ids=None, **kwargs):
            widths.append(input_ids.shape[1])
            sizes.append(input_ids.shape[0])
            return forward(input_ids=input_ids, **kwargs)

        monkeypatch.setattr(model, "forward", spy)
        results = plain.predict(task, inputs)
        monkeypatch.undo()
        assert sizes == [2] * (len(inputs) // 2) + [1] * (len(inputs) % 2) and widths == sorted(widths)
        expected = MultiTaskPredictor._results(tasks[task], one_forward(plain, task, inputs))
        assert [r["label"] for r in results] == pytest.approx([e["label"] for e in expected], abs=1e-4)
        assert [r["score"] for r in results] == pytest.approx([e["score"] for e in expected], abs=1e-4)
    assert plain.predict("sst", []) == []
