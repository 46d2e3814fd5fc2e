"""`hf-pals bench processes` on the tiny shape: two real gloo workers report every figure, the ratios
are those of the reported times, the all-reduce sums, and DDP's gradients are the single-process ones.
The timings themselves mean something only from a real run on an idle machine, never here."""

from __future__ import annotations

import json
import statistics
import time

import pytest

from hf_pals.benchmarks import processes as bench
from hf_pals.benchmarks import processes_figures as figures
from hf_pals.benchmarks import processes_steps as steps

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]

ROWS, LENGTH, STEPS = 3, 16, 1
ACCUMULATE = f"bucket_25mb_accumulate_{steps.ACCUMULATION}"
#: The tests of the real 2-process run share one run (`result`): ~20-25 s on a busy 2-core machine.
SLOW = pytest.mark.slow


@pytest.fixture(scope="module")
def result(data_dir, minilm_path):
    # The tests share 2 cores with other jobs: OpenMP threads that sleep instead of spinning keep the
    # 2-thread steps from waiting on descheduled threads (module docstring).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_WAIT_POLICY", "passive")
        return bench.run(str(data_dir), shape="tiny", batch_size=ROWS, max_length=LENGTH, steps=STEPS)


@SLOW
def test_every_figure_is_there(result):
    assert result["shape"] == "tiny" and result["processes"] == 2
    assert result["batch"] == {"task": "sst", "split": "train", "rows_per_process": ROWS, "max_length": LENGTH}
    assert result["rounds"] == {"warmup": steps.WARMUP, "timed": STEPS}
    assert result["model"]["tasks"] == 3 and result["model"]["trainable_parameters"] > 0
    assert result["optimizer"].startswith("torch.optim.AdamW(")
    compute = result["compute_scaling"]
    assert set(compute) == set(steps.COMPUTE) | {"ratios"}
    assert compute["one_process_2_threads"]["threads_per_process"] == 2
    assert compute["two_independent_processes"]["processes"] == 2
    assert set(result["communication"]["all_reduce"]) == {"flat", "buckets_25mb", "buckets_100mb"}
    assert list(result["ddp"]) == list(steps.DDP_CONFIGS)
    for name, figures in result["ddp"].items():
        assert len(figures["step_seconds"]) == 2 and all(s > 0 for s in figures["step_seconds"]), name
        assert figures["bucket_sizes_bytes"], name
    assert result["ddp"]["bucket_200mb"]["bucket_cap_mb"] == 200 and result["ddp"]["bucket_25mb"]["bucket_cap_mb"] is None
    assert result["ddp"][ACCUMULATE]["accumulation_steps"] == steps.ACCUMULATION
    assert result["ddp"]["bucket_25mb_gradient_as_bucket_view"]["gradient_as_bucket_view"] is True
    assert result["environment"]["OMP_WAIT_POLICY"] == "passive"
    assert set(result["reading"]) >= {"upper_bound_of_two_processes", "all_reduce_share_of_ddp_step",
                                      "best_ddp_configuration", "summary"}


@SLOW
def test_buckets_hold_every_trainable_gradient(result):
    """The tiny model's gradients fit one 25 MB bucket; DDP's buckets hold them all (float32)."""
    gradient_bytes = 4 * result["model"]["trainable_parameters"]
    assert result["communication"]["bytes"] == gradient_bytes
    for figures in result["ddp"].values():
        assert sum(figures["bucket_sizes_bytes"]) == gradient_bytes
    assert result["ddp"]["bucket_200mb"]["bucket_sizes_bytes"] == [gradient_bytes]  # an explicit cap: one bucket
    assert {f["buckets"] for f in result["communication"]["all_reduce"].values()} == {1}


@SLOW
def test_examples_per_s_and_ratios_are_those_of_the_reported_times(result):
    compute, ddp = result["compute_scaling"], result["ddp"]
    approx = lambda x: pytest.approx(x, rel=1e-3)  # noqa: E731 - the figures carry 5 significant digits
    rate = {}
    for name, figures in compute.items():
        if name == "ratios":
            continue
        rate[name] = sum(figures["micro_batches_per_step"] * ROWS / s for s in figures["step_seconds"])
        assert figures["examples_per_s"] == approx(rate[name]), name
    ratios = compute["ratios"]
    assert ratios["one_thread_over_two_threads"] == approx(rate["one_process_1_thread"] / rate["one_process_2_threads"])
    bound = rate["two_independent_processes"] / rate["one_process_2_threads"]
    assert ratios["two_independent_over_one_process_2_threads"] == approx(bound)
    for name, figures in ddp.items():
        micro = figures["accumulation_steps"]
        examples = sum(micro * ROWS / s for s in figures["step_seconds"])
        assert figures["examples_per_step"] == 2 * micro * ROWS
        assert figures["examples_per_s"] == approx(examples), name
        assert figures["over_one_process_2_threads"] == approx(examples / rate["one_process_2_threads"]), name
        same = rate[f"one_process_2_threads_accumulate_{micro}"] if micro > 1 else rate["one_process_2_threads"]
        assert figures["over_one_process_same_accumulation"] == approx(examples / same), name
        assert figures["over_two_independent_processes"] == approx(examples / rate["two_independent_processes"]), name
    nbytes = result["communication"]["bytes"]
    for figures in result["communication"]["all_reduce"].values():
        assert figures["seconds"] == max(figures["seconds_per_rank"])
        assert figures["bytes_per_s"] == approx(nbytes / figures["seconds"])


@SLOW
def test_reading_is_computed_from_the_figures(result):
    reading, ddp = result["reading"], result["ddp"]
    bound = result["compute_scaling"]["ratios"]["two_independent_over_one_process_2_threads"]
    assert reading["upper_bound_of_two_processes"] == bound
    assert reading["no_two_process_configuration_can_beat_one_process"] == (bound < 1)
    all_reduce = result["communication"]["all_reduce"]["buckets_25mb"]["seconds"]
    ddp_step = statistics.mean(ddp["bucket_25mb"]["step_seconds"])
    independent = statistics.mean(result["compute_scaling"]["two_independent_processes"]["step_seconds"])
    assert reading["all_reduce_share_of_ddp_step"] == pytest.approx(all_reduce / ddp_step, rel=2e-3)
    assert reading["all_reduce_hidden_share"] == pytest.approx(1 - (ddp_step - independent) / all_reduce, rel=2e-3, abs=2e-3)
    best = max(ddp, key=lambda name: ddp[name]["over_one_process_2_threads"])
    assert reading["best_ddp_configuration"] == best
    assert reading["best_ddp_over_one_process_2_threads"] == ddp[best]["over_one_process_2_threads"]
    assert reading["two_processes_at_least_one_process"] == (ddp[best]["over_one_process_2_threads"] >= 1)
    assert f"{bound:.2f}x one process" in reading["summary"] and best in reading["summary"]


@SLOW
def test_all_reduce_of_ones_sums_to_the_world_size(result):
    checks = result["checks"]
    assert checks["world_size"] == 2
    assert checks["all_reduce_of_ones"] == {"min": 2.0, "max": 2.0}
    assert checks["all_reduce_sums"] is True
    assert 0 <= checks["waiting_rank_cpu_share"] < 1  # blocked in a barrier, not spinning through the wait


@SLOW
def test_ddp_gradients_are_those_of_one_process_on_all_rows(result):
    """One DDP step, each rank on its half of the rows, averages to the gradient of one step on the
    concatenated batch (eval mode: no dropout); the other tasks' parts get no gradient on either side."""
    checked = result["checks"]["ddp_gradients_vs_single_process"]
    assert set(checked) == set(steps.CHECKED_CONFIGS)
    for name, figures in checked.items():
        assert figures["max_abs_gradient"] > 0, name
        assert figures["max_abs_difference"] <= 1e-5 * figures["max_abs_gradient"], name
        assert figures["mismatched_parameters"] == 0, name


def test_gradient_difference_counts_a_gradient_where_there_should_be_none():
    import torch

    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 3.0])
    reference = {"a": torch.tensor([1.0, 2.5]), "b": None}
    assert steps.gradient_difference({"a": a, "b": b}, reference) == {
        "max_abs_difference": 0.5, "max_abs_gradient": 2.5, "mismatched_parameters": 1
    }
    b.grad = torch.zeros(2)  # zeros where the reference has none: what DDP may leave on unused parameters
    assert steps.gradient_difference({"a": a, "b": b}, reference)["mismatched_parameters"] == 0


def fake_ranks(step: dict[str, float], all_reduce: float) -> list[dict]:
    """Two workers' outputs with the given median seconds (the same on both ranks)."""
    medians = {**step, **{name: all_reduce for name in steps.all_reduce_names()}}
    ones = {"min": 2.0, "max": 2.0, "world_size": 2}
    return [
        {"rank": r, "trainable_parameters": 1000, "medians": medians, "waiting_cpu_share": 0.01, "optimizer": "x",
         "bucket_sizes_bytes": {name: [4000] for name in steps.DDP_CONFIGS},
         "checks": {"all_reduce_of_ones": ones, "ddp_gradients": {}}}
        for r in range(2)
    ]


@pytest.mark.parametrize("independent, can_beat", [(2.5, False), (1.6, True)])
def test_reading_says_whether_two_processes_can_beat_one(independent, can_beat):
    """One process with 2 threads at 1 s per step of 10 rows; two independent processes at `independent`
    s each: (c)/(a) = 2 / independent; each DDP step 0.5 s slower, of which the all-reduce is 0.4 s."""
    step = {name: 1.0 for name in steps.COMPUTE}
    step[steps.INDEPENDENT] = independent
    step[f"one_process_2_threads_accumulate_{steps.ACCUMULATION}"] = steps.ACCUMULATION * 0.9
    step.update({name: c.accumulation_steps * independent + 0.5 for name, c in steps.DDP_CONFIGS.items()})
    result = figures.figures(fake_ranks(step, 0.4), "label", "tiny", 10, 16, 3)
    reading = result["reading"]
    assert reading["upper_bound_of_two_processes"] == pytest.approx(2 / independent)
    assert reading["no_two_process_configuration_can_beat_one_process"] is not can_beat
    assert reading["all_reduce_share_of_ddp_step"] == pytest.approx(0.4 / (independent + 0.5), rel=1e-3)
    assert reading["all_reduce_hidden_share"] == pytest.approx(1 - 0.5 / 0.4)  # the step costs more than the all-reduce
    assert reading["best_ddp_configuration"] == ACCUMULATE  # the 0.5 s paid once per 4 micro-batches
    best = 2 * steps.ACCUMULATION * 10 / (steps.ACCUMULATION * independent + 0.5) / 10
    assert reading["best_ddp_over_one_process_2_threads"] == pytest.approx(best, rel=1e-4)
    assert result["ddp"][ACCUMULATE]["over_one_process_same_accumulation"] == pytest.approx(
        best * 0.9, rel=1e-4
    )
    assert ("no 2-process configuration can beat one process" in reading["summary"]) is not can_beat
    assert "more than the all-reduce itself" in reading["summary"]


def test_plan_names_the_run_and_its_minutes():
    line = bench.plan("minilm", 16, 64, 10)
    assert line.startswith("bench processes: shape minilm, 2 processes, 16 rows x 64 tokens per process, 2 + 10 rounds")
    minutes = int(line.rsplit("about ", 1)[1].split()[0])
    assert 1 <= minutes <= 8  # the default run is meant to take under ~8 minutes on 2 cores


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "--batch-size must be an integer >= 1, got 0"),
        ({"steps": 0}, "--steps must be an integer >= 1, got 0"),
        ({"max_length": 4}, "--max-length must be an integer >= 8, got 4"),
        ({"shape": "bert-huge"}, "unknown shape 'bert-huge'; choose from minilm, bert-base, tiny"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench.run("no/such/dir", **kwargs)


def test_a_failed_worker_stops_the_other_and_raises_its_error(tmp_path):
    """Rank 1 fails at once (a bad rendezvous address); rank 0, left waiting for it, is stopped."""
    good = f"tcp://127.0.0.1:{bench.free_port()}"
    common = dict(base="unused", data_dir=str(tmp_path), batch_size=1, max_length=8, steps=1)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="the worker of rank 1 failed"):
        bench.run_workers([dict(common, rank=0, init_method=good), dict(common, rank=1, init_method="nonsense://x")])
    assert time.perf_counter() - start < 120  # not the collective's 10-minute timeout


def test_cli_passes_the_flags_and_refuses_bad_ones(monkeypatch, capsys, data_dir):
    from hf_pals.cli import main

    calls = []
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: calls.append((args, kwargs)) or {"ok": True})
    assert main(["bench", "processes", "--data-dir", str(data_dir)]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True}
    assert calls[-1] == (
        (str(data_dir), "sentence-transformers/all-MiniLM-L6-v2"),
        {"shape": "minilm", "batch_size": 16, "max_length": 64, "steps": 10},
    )
    argv = ["bench", "processes", "--data-dir", "d", "--shapes", "tiny", "--batch-size", "4", "--max-length", "32",
            "--steps", "3", "--base-model", "b"]
    assert main(argv) == 0
    assert calls[-1] == (("d", "b"), {"shape": "tiny", "batch_size": 4, "max_length": 32, "steps": 3})
    capsys.readouterr()
    assert main(["bench", "processes", "--data-dir", "d", "--shapes", "tiny,minilm"]) == 2
    assert "bench processes takes one shape in --shapes, got 'tiny,minilm'" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["bench", "processes", "--data-dir", "d", "--batch-size", "0"]) == 2
    assert "--batch-size must be an integer >= 1, got 0" in capsys.readouterr().err
