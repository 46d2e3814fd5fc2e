"""`hf-pals bench tasks` on the tiny shape: the JSON has every figure per shape and task count, and its
arithmetic holds (parameters and bundle bytes per added task, ratios of the reported times). The timings
themselves mean something only from a real run on a quiet machine, never here."""

from __future__ import annotations

import json

import pytest

from hf_pals.benchmarks import tasks as bench
from hf_pals.benchmarks import tasks_memory
from hf_pals.tuner import PALConfig

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]

TINY = bench.SHAPES["tiny"]
ROWS, LENGTH = 6, 16


def expected_per_task(num_labels: int) -> int:
    """A task's own parameters: its PALs (the PALConfig formula) and a linear head of `num_labels`."""
    pal = PALConfig(**bench.PAL_SETTINGS).parameter_count(TINY["hidden_size"], TINY["num_hidden_layers"])
    return pal + TINY["hidden_size"] * num_labels + num_labels


def expected_stored(hidden: int, layers: int) -> int:
    """Numbers in one task's adapter file: V_E and V_D stored once per layer although shared, plus MH."""
    ds = PALConfig(**bench.PAL_SETTINGS).resolve_adapter_size(hidden)
    return layers * (2 * hidden * ds + ds + hidden) + layers * 3 * (ds * ds + ds)


@pytest.fixture(scope="module")
def result(data_dir, minilm_path):
    return bench.run(str(data_dir), tasks=(3, 1), shapes=("tiny",), batch_size=ROWS, max_length=LENGTH, repeats=1, memory=False)


def test_every_figure_is_there_per_task_count(result):
    assert result["batch"] == {"task": "sst", "split": "train", "rows": ROWS, "max_length": LENGTH, "threads": result["batch"]["threads"]}
    shape = result["shapes"]["tiny"]
    assert (shape["hidden_size"], shape["num_layers"]) == (TINY["hidden_size"], TINY["num_hidden_layers"])
    assert list(shape["by_tasks"]) == ["1", "3"]  # sorted
    for n, entry in shape["by_tasks"].items():
        assert entry["tasks"] == {f"task{i:02d}": 2 + i % 4 for i in range(int(n))}
        assert set(entry) >= {"parameters", "bundle", "train_step_seconds", "inference", "separate_models"}
        assert "memory_mib" not in entry  # memory=False
        assert entry["separate_models"]["method"] == "measured: N distinct copies"  # tiny copies always fit


def test_parameters_grow_by_exactly_each_added_task(result):
    shape = result["shapes"]["tiny"]
    assert shape["pal_parameters_per_task"] == PALConfig(**bench.PAL_SETTINGS).parameter_count(48, 2)
    one, three = (shape["by_tasks"][n]["parameters"] for n in ("1", "3"))
    for counts in (one, three):
        assert counts["trainable"] == counts["total"]  # the main recipe trains the encoder
        assert counts["total"] == counts["encoder"] + sum(counts["per_task"].values())
        for i, (task, own) in enumerate(counts["per_task"].items()):
            assert own == expected_per_task(2 + i % 4), task
    assert one["encoder"] == three["encoder"]
    added = three["per_task"]["task01"] + three["per_task"]["task02"]
    assert three["trainable"] - one["trainable"] == added
    assert shape["growth"]["trainable_parameters_per_added_task"] == pytest.approx(added / 2, abs=0.05)
    # The separate models' encoder is the same encoder (plus BertForSequenceClassification's 2-label head).
    assert shape["plain_model_parameters"] == one["encoder"] + 2 * (TINY["hidden_size"] + 1)


def test_bundle_grows_by_each_added_task(result):
    shape = result["shapes"]["tiny"]
    one, three = (shape["by_tasks"][n]["bundle"] for n in ("1", "3"))
    assert one["encoder_bytes"] == three["encoder_bytes"] > 0
    stored = expected_stored(TINY["hidden_size"], TINY["num_hidden_layers"])
    assert set(three["adapter_stored_elements"].values()) == {stored}
    per_task = shape["by_tasks"]["3"]["parameters"]["per_task"]
    head_floats = (per_task["task01"] + per_task["task02"]) / 2 - shape["pal_parameters_per_task"]
    per_task_floats = stored + head_floats  # the mean of the two added tasks
    grown = (three["bytes"] - one["bytes"]) / 2
    assert grown == shape["growth"]["bundle_bytes_per_added_task"]
    # Each added task adds its float32 tensors plus a few KB of safetensors header and adapter_config.json.
    assert 4 * per_task_floats <= grown <= 4 * per_task_floats + 16_384
    assert three["adapters_bytes"] > one["adapters_bytes"] and three["heads_bytes"] > one["heads_bytes"]
    assert one["bytes"] > one["encoder_bytes"] + one["adapters_bytes"] + one["heads_bytes"]  # + tokenizer, configs


def test_ratios_are_those_of_the_reported_times(result):
    shape = result["shapes"]["tiny"]
    first = shape["by_tasks"]["1"]
    assert first["train_step_over_fewest_tasks"] == 1.0 and first["train_step_over_fewest_tasks_paired"] == 1.0
    for n, entry in shape["by_tasks"].items():
        ratio = entry["train_step_seconds"] / first["train_step_seconds"]
        assert entry["train_step_over_fewest_tasks"] == pytest.approx(ratio, rel=1e-3)
        inference = entry["inference"]
        seconds = inference["seconds"]
        assert set(seconds) == {"mixed", "single_task", "separate_models"}
        assert sum(inference["rows_per_task"]) == inference["rows"] == ROWS and len(inference["rows_per_task"]) == int(n)
        assert inference["mixed_over_single_task_time"] == pytest.approx(seconds["mixed"] / seconds["single_task"], rel=1e-3)
        assert inference["separate_models_over_mixed_time"] == pytest.approx(
            seconds["separate_models"] / seconds["mixed"], rel=1e-3
        )
        for name, rate in inference["rows_per_s"].items():
            assert rate == pytest.approx(ROWS / seconds[name], rel=1e-3)
        separate = entry["separate_models"]
        assert separate["pal_throughput_gain"] == inference["separate_models_over_mixed_time"]
        assert separate["disk_bytes"] == int(n) * shape["plain_model_bytes"]
        assert separate["disk_over_pal_bundle"] == pytest.approx(separate["disk_bytes"] / entry["bundle"]["bytes"], rel=1e-3)
    assert shape["growth"]["train_step_most_over_fewest_tasks"] == shape["by_tasks"]["3"]["train_step_over_fewest_tasks"]


@pytest.mark.slow  # two fresh Python processes: ~20 s on a busy 2-core machine
def test_memory_figures_of_one_task_count(data_dir, minilm_path):
    """The child processes report the PAL model's serving and training memory and the separate models'."""
    with bench.quiet_loading(), bench.shape_base("tiny", "sentence-transformers/all-MiniLM-L6-v2") as (base, _):
        memory = tasks_memory.measure(base, str(data_dir), 2, ROWS, LENGTH, "measured")
    assert set(memory) == {"pal_serving", "pal_training", "pal_training_step_growth", "separate_models_serving"}
    assert memory["pal_training"] > memory["pal_serving"] > 0  # training adds gradients and AdamW's state
    assert memory["pal_training"] >= memory["pal_training_step_growth"] > 0
    assert memory["separate_models_serving"] > 0


def test_estimated_separate_memory_is_n_copies_of_one(monkeypatch):
    calls = []

    def fake_child(module, function, **kwargs):
        calls.append((function, kwargs.get("copies")))
        return {"pal_serving": 10.0} if function == "pal_child" else 7.5

    monkeypatch.setattr(tasks_memory, "in_child", fake_child)
    memory = tasks_memory.measure("base", "data", 16, 4, 8, "estimated")
    assert memory == {"pal_serving": 10.0, "separate_models_serving": 120.0}
    assert calls == [("pal_child", None), ("separate_child", 1)]
    tasks_memory.measure("base", "data", 16, 4, 8, "measured")
    assert calls[-1] == ("separate_child", 16)


def test_separate_figures_and_growth_with_memory():
    entry = {
        "bundle": {"bytes": 1000},
        "inference": {"separate_models_over_mixed_time": 2.5},
        "memory_mib": {"pal_serving": 100.0, "pal_training": 300.0, "separate_models_serving": 250.0},
    }
    figures = bench.separate_figures(entry, 4, "estimated", 500)
    assert figures == {
        "method": "estimated: N x one measured copy",
        "disk_bytes": 2000,
        "disk_over_pal_bundle": 2.0,
        "pal_throughput_gain": 2.5,
        "serving_mib": 250.0,
        "pal_memory_saving": 2.5,
    }


def test_separate_mode_falls_back_to_one_copy_when_n_copies_do_not_fit(monkeypatch):
    monkeypatch.setattr(bench, "available_mib", lambda: 10_000.0)
    assert bench.separate_mode("auto", 16, 22_700_000) == "measured"  # 16 MiniLM copies: ~1.8 GB
    assert bench.separate_mode("auto", 16, 109_500_000) == "estimated"  # 16 BERT-base copies: ~8.7 GB
    assert bench.separate_mode("measured", 16, 109_500_000) == "measured"
    with pytest.raises(ValueError, match="unknown separate-models mode 'some'"):
        bench.separate_mode("some", 1, 1)


def test_minilm_shape_is_the_base_models_own_weights(tiny_base):
    """"minilm" builds on `base_model` itself (all-MiniLM-L6-v2 unless told otherwise), no random weights."""
    with bench.shape_base("minilm", tiny_base) as (base, label):
        assert base == label == tiny_base


def test_plan_and_refusals(data_dir):
    line = bench.plan(["minilm", "bert-base"], [1, 3, 8, 16], 5, 32, 64, memory=True)
    assert line.startswith("bench tasks: shapes minilm,bert-base, N = 1,3,8,16, 32 rows x 64 tokens, 5 rounds")
    assert line.endswith("min")
    with pytest.raises(ValueError, match="unknown shape 'bert-huge'; choose from minilm, bert-base, tiny"):
        bench.run(str(data_dir), shapes=("bert-huge",))
    with pytest.raises(ValueError, match="task counts >= 1"):
        bench.run(str(data_dir), tasks=(0, 2), shapes=("tiny",))


def test_cli_prints_the_figures(data_dir, minilm_path, capsys):
    from hf_pals.cli import main

    argv = ["bench", "tasks", "--data-dir", str(data_dir), "--shapes", "tiny", "--tasks", "1,2", "--repeats", "1",
            "--batch-size", "4", "--max-length", "16", "--no-memory"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    figures = json.loads(captured.out)
    assert "bench tasks: shapes tiny, N = 1,2" in captured.err  # the plan
    assert figures["repeats"] == 1 and figures["batch"]["rows"] == 4
    by_tasks = figures["shapes"]["tiny"]["by_tasks"]
    assert list(by_tasks) == ["1", "2"]
    assert by_tasks["2"]["parameters"]["trainable"] - by_tasks["1"]["parameters"]["trainable"] == expected_per_task(3)
    assert main(argv[:7] + ["1,x"] + argv[8:]) == 2
    assert "--tasks takes a comma-separated list of int values, got '1,x'" in capsys.readouterr().err
