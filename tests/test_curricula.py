"""Curricula as task schedules: `sequential` (task after task) and `hybrid` (sequential and joint epochs
alternate, CS224N report 002)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from hf_pals.data.sampling import (
    CURRICULA,
    HybridTaskSchedule,
    MultiTaskBatchSampler,
    SequentialTaskSchedule,
    apportion,
    build_task_schedule,
)
from hf_pals.recipe import RecipeError, load_recipe

from test_recipe import _base, _write

SIZES = {"sst": 8544, "quora": 13507, "sts": 6040}


def _runs(tasks):
    """[(task, run length), ...] of consecutive equal tasks."""
    return [(task, len(list(group))) for task, group in itertools.groupby(tasks)]


@pytest.mark.parametrize("total", [3, 10, 100, 997])
@pytest.mark.parametrize("weights", [[8544, 13507, 6040], [1, 1, 1], [1, 1000, 1], [5, 3]])
def test_apportion_sums_to_total_and_follows_the_weights(total, weights):
    counts = apportion(total, weights)
    assert sum(counts) == total
    assert min(counts) >= 1
    share = np.asarray(weights) / sum(weights) * total
    if min(share) >= 1:
        assert np.all(np.abs(np.asarray(counts) - share) < 1)


def test_sequential_is_one_block_per_task_in_recipe_order():
    schedule = build_task_schedule("sequential", SIZES, num_steps=100, seed=7)
    assert isinstance(schedule, SequentialTaskSchedule) and "sequential" in CURRICULA
    runs = _runs(schedule.task_at(s) for s in range(100))
    assert [task for task, _ in runs] == ["sst", "quora", "sts"]
    total = sum(SIZES.values())
    for task, length in runs:
        assert abs(length - 100 * SIZES[task] / total) < 1
    assert schedule.probabilities(1) == pytest.approx({t: n / 100 for t, n in runs})


def test_sequential_repeats_the_order_every_epoch():
    schedule = build_task_schedule({"name": "sequential", "steps_per_epoch": 30}, SIZES, num_steps=75)
    tasks = [schedule.task_at(s) for s in range(75)]
    assert [t for t, _ in _runs(tasks)] == ["sst", "quora", "sts"] * 3
    for epoch in (1, 2, 3):  # the last epoch has 15 steps, still split by size
        steps = schedule.epoch_steps(epoch)
        blocks = [n for _, n in _runs(tasks[steps.start : steps.stop])]
        assert blocks == schedule.block_lengths(epoch) == apportion(len(steps), list(SIZES.values()))
        assert schedule.probabilities(epoch) == pytest.approx(
            {t: n / len(steps) for t, n in zip(SIZES, blocks)}
        )


def test_sequential_is_a_pure_function_of_step_and_ignores_the_seed():
    a, b = (build_task_schedule({"name": "sequential", "steps_per_epoch": 7}, SIZES, 50, seed=s) for s in (0, 9))
    forward = [a.task_at(s) for s in range(50)]
    assert forward == [a.task_at(s) for s in reversed(range(50))][::-1] == [b.task_at(s) for s in range(50)]
    assert all(a.probabilities_at(s)[a.tasks.index(t)] == 1.0 for s, t in enumerate(forward))


def test_a_recipe_selects_the_sequential_curriculum(tmp_path):
    values = _base()
    values["sampling"] = {"name": "sequential"}
    recipe = load_recipe(_write(tmp_path, values))
    assert recipe.sampling.name == "sequential"


def test_batch_sampler_follows_the_sequential_blocks():
    schedule = build_task_schedule("sequential", {"a": 30, "b": 10}, num_steps=8)
    sampler = MultiTaskBatchSampler(schedule, {"a": 0, "b": 30}, batch_size=4, num_steps=8)
    tasks = ["a" if all(i < 30 for i in batch) else "b" for batch in sampler]
    assert tasks == ["a"] * 6 + ["b"] * 2


def test_unknown_names_list_the_curricula():
    with pytest.raises(ValueError, match="sequential"):
        build_task_schedule("sequentail", SIZES, num_steps=10)


# ------------------------------------------------------------------------------------------- hybrid
def test_hybrid_alternates_sequential_and_joint_epochs():
    schedule = build_task_schedule({"name": "hybrid", "steps_per_epoch": 10}, SIZES, num_steps=45, seed=3)
    assert isinstance(schedule, HybridTaskSchedule)
    assert [schedule.is_joint(s) for s in range(45)] == ([False] * 10 + [True] * 10) * 2 + [False] * 5
    for epoch in (1, 3, 5):  # sequential: one block per task in order, only that task's parameters train
        steps = schedule.epoch_steps(epoch)
        tasks = [schedule.task_at(s) for s in steps]
        assert [t for t, _ in _runs(tasks)] == list(SIZES)
        assert [n for _, n in _runs(tasks)] == apportion(len(steps), list(SIZES.values()))
        assert all(schedule.trains_only(s) == schedule.task_at(s) for s in steps)
        assert all(schedule.tasks_at(s) == [schedule.task_at(s)] for s in steps)
    for epoch in (2, 4):  # joint: every task every step, everything trains
        for s in schedule.epoch_steps(epoch):
            assert schedule.task_at(s) is None and schedule.trains_only(s) is None
            assert schedule.tasks_at(s) == list(SIZES)
        assert schedule.probabilities(epoch) == dict.fromkeys(SIZES, 1.0)


def test_hybrid_downsamples_the_largest_task_in_joint_epochs():
    spec = {"name": "hybrid", "steps_per_epoch": 10}
    schedule = build_task_schedule(spec, SIZES, num_steps=40, seed=3)
    assert schedule.joint_sizes() == {"sst": 8544, "quora": 8544, "sts": 6040}  # quora shrinks to sst's size
    pool = schedule.joint_pool("quora", 2)
    assert len(pool) == len(np.unique(pool)) == 8544 and pool.min() >= 0 and pool.max() < 13507
    assert not np.array_equal(pool, schedule.joint_pool("quora", 4))  # a new pool every joint epoch
    assert np.array_equal(pool, build_task_schedule(spec, SIZES, num_steps=40, seed=3).joint_pool("quora", 2))
    assert not np.array_equal(pool, build_task_schedule(spec, SIZES, num_steps=40, seed=4).joint_pool("quora", 2))
    assert np.array_equal(schedule.joint_pool("sst", 2), np.arange(8544))
    assert np.array_equal(schedule.joint_pool("sts", 4), np.arange(6040))


def test_hybrid_needs_epochs():
    with pytest.raises(ValueError, match="sampling.steps_per_epoch is required by the hybrid curriculum"):
        build_task_schedule("hybrid", SIZES, num_steps=10)


def test_hybrid_batch_sampler_follows_the_phases():
    from hf_pals.training.curriculum import HybridBatchSampler

    sizes, offsets = {"a": 20, "b": 6, "c": 4}, {"a": 0, "b": 20, "c": 26}
    schedule = build_task_schedule({"name": "hybrid", "steps_per_epoch": 6}, sizes, num_steps=12, seed=1)
    sampler = HybridBatchSampler(schedule, offsets, batch_size=2, num_steps=12, num_processes=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 24 and sampler.batch_size is None

    def task_of(i):
        return "a" if i < 20 else "b" if i < 26 else "c"

    for b, batch in enumerate(batches):
        step = b // 2  # both processes' batches of a step share its phase and task
        if schedule.is_joint(step):
            assert [task_of(i) for i in batch] == ["a", "a", "b", "b", "c", "c"]
        else:
            assert len(batch) == 2 and {task_of(i) for i in batch} == {schedule.task_at(step)}
    joint_a = {i for b, batch in enumerate(batches) if schedule.is_joint(b // 2) for i in batch if i < 20}
    assert joint_a == set(schedule.joint_pool("a", 2).tolist()) and len(joint_a) == 6  # downsampled to b's size
    assert batches == list(sampler)  # a pure function of the seed: resume sees the same batches


def test_a_recipe_selects_the_hybrid_curriculum_with_joint_steps(tmp_path):
    values = _base()
    values["sampling"] = {"name": "hybrid", "steps_per_epoch": 4}
    with pytest.raises(RecipeError, match="multitask.step_mode: joint"):
        load_recipe(_write(tmp_path, values))
    values["multitask"] = {"step_mode": "joint"}
    assert load_recipe(_write(tmp_path, values)).sampling.name == "hybrid"
    values["sampling"] = {"name": "hybrid"}
    with pytest.raises(RecipeError, match="steps_per_epoch"):
        load_recipe(_write(tmp_path, values))


def _snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


class ParameterSnapshots(TrainerCallback):
    """Records a copy of every parameter before training and after each optimizer step (`snapshots`)."""

    def __init__(self):
        self.snapshots = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.snapshots.append(_snapshot(model))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.snapshots.append(_snapshot(model))


def _hybrid_trainer(tiny_base, output_dir, max_steps=4, callbacks=None, **args):
    from transformers import AutoTokenizer, TrainingArguments

    from hf_pals import PALConfig
    from hf_pals.modeling import MultiTaskModel
    from hf_pals.tasks import cs224n_task
    from hf_pals.training.curriculum import HybridTrainer
    from test_trainer import _datasets

    torch.manual_seed(0)
    tasks = {"sst": cs224n_task("sst"), "quora": cs224n_task("quora"), "sts": cs224n_task("sts", pair_encoding="siamese")}
    model = MultiTaskModel.from_base(tiny_base, tasks, PALConfig(init_pal_weights="bert"))
    values = dict(
        output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=4, learning_rate=1e-3,
        weight_decay=0.1, save_strategy="no", logging_steps=100, seed=11, use_cpu=True, report_to="none",
    )
    return HybridTrainer(
        model, TrainingArguments(**{**values, **args}), train_datasets=_datasets(), max_length=16,
        tokenizer=AutoTokenizer.from_pretrained(tiny_base), sampling={"name": "hybrid", "steps_per_epoch": 2},
        multitask={"step_mode": "joint", "loss_balancing": "dwa"}, callbacks=callbacks,
    )


def test_hybrid_trainer_trains_only_the_current_task_in_sequential_steps(tmp_path, tiny_base):
    """Epoch 1 (steps 0, 1) is sequential: step 0 trains sst's adapter and head only, step 1 quora's;
    epoch 2 (steps 2, 3) is joint: the encoder and every task train. Weight decay is on, so a parameter
    that merely had a zero gradient would still move."""
    from hf_pals.training.curriculum import task_parameters

    recorder = ParameterSnapshots()
    snapshots = recorder.snapshots
    trainer = _hybrid_trainer(tiny_base, tmp_path, callbacks=[recorder])
    model, tasks = trainer.model, ["sst", "quora", "sts"]
    schedule = trainer.schedule
    assert [schedule.tasks_at(s) for s in range(4)] == [["sst"], ["quora"], tasks, tasks]
    assert trainer.task_steps() == {"sst": 3, "quora": 3, "sts": 2}
    trainer.train()
    assert len(snapshots) == 5

    ids = {id(p): name for name, p in model.named_parameters()}
    owner = {ids[id(p)]: task for task, params in task_parameters(model, tasks).items() for p in params}
    assert {t for t in owner.values()} == set(tasks)

    def changed(before, after):
        return {n for n in before if not torch.equal(before[n], after[n])}

    for step, task in ((0, "sst"), (1, "quora")):
        moved = changed(snapshots[step], snapshots[step + 1])
        assert moved and all(owner.get(n) == task for n in moved), (step, sorted(moved)[:5])
    moved = changed(snapshots[2], snapshots[4])
    assert {owner.get(n) for n in moved} == {None, "sst", "quora", "sts"}  # None: the shared encoder


def test_hybrid_trainer_needs_joint_steps_and_the_hybrid_schedule(tmp_path, tiny_base):
    from transformers import AutoTokenizer, TrainingArguments

    from hf_pals.modeling import MultiTaskModel
    from hf_pals.tasks import cs224n_task
    from hf_pals.training.curriculum import HybridTrainer
    from test_trainer import _datasets

    model = MultiTaskModel.from_base(tiny_base, {"sst": cs224n_task("sst")})
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, use_cpu=True, report_to="none")
    common = dict(train_datasets={"sst": _datasets()["sst"]}, tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    with pytest.raises(ValueError, match="multitask.step_mode: joint"):
        HybridTrainer(model, args, sampling={"name": "hybrid", "steps_per_epoch": 1}, multitask={"step_mode": "single"}, **common)
    with pytest.raises(ValueError, match="sampling name 'hybrid'"):
        HybridTrainer(model, args, sampling="sequential", **common)


def test_a_killed_hybrid_run_resumes_to_the_same_weights(tmp_path, tiny_base):
    from test_trainer import _Kill

    straight = _hybrid_trainer(tiny_base, tmp_path / "straight", max_steps=6)
    straight.train()
    expected = {k: v.clone() for k, v in straight.model.state_dict().items()}

    run = dict(max_steps=6, save_strategy="steps", save_steps=2)
    killed = _hybrid_trainer(tiny_base, tmp_path / "killed", callbacks=[_Kill(at=3)], **run)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = _hybrid_trainer(tiny_base, tmp_path / "killed", **run)
    resumed.train(resume_from_checkpoint=str(tmp_path / "killed" / "checkpoint-2"))
    got = resumed.model.state_dict()
    assert resumed.state.global_step == 6
    for name, value in expected.items():
        assert torch.equal(got[name], value), name


@pytest.mark.slow
def test_hybrid_under_ddp_two_processes_agree(tmp_path, data_dir, minilm_path):
    """`accelerate launch` with two CPU processes: sequential and joint steps alternate (with gradient
    accumulation), both ranks train the same tasks at every step on different rows, and end equal."""
    import json
    import os
    import sys

    from test_accelerate import CONFIGS, TINY, _run

    out = tmp_path / "run"
    overrides = {
        "training.max_steps": 4,
        "training.gradient_accumulation_steps": 2,
        "training.per_device_train_batch_size": 4,
        "training.save_steps": 4,
        "sampling": "{name: hybrid, steps_per_epoch: 1}",
        "multitask": "{step_mode: joint}",
        "data.max_eval_examples": "{sst: 8, quora: 8, sts: 8}",
    }
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch"]
    cmd += ["--config_file", str(CONFIGS / "cpu_2proc.yaml"), "--main_process_port", "0"]
    cmd += ["-m", "hf_pals.cli", "train", str(TINY), "--data-dir", str(data_dir), "--output-dir", str(out)]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    code, output = _run(cmd, {**os.environ, "HF_PALS_TASK_LOG": "1", "OMP_NUM_THREADS": "1"}, timeout=540)
    assert code == 0, output[-3000:]
    logs = [[json.loads(line) for line in (out / f"task_log.rank{k}.jsonl").read_text().splitlines()] for k in (0, 1)]
    batches = [[(r["step"], r["task"]) for r in log if "task" in r] for log in logs]
    # steps 0, 2 sequential (2 micro-batches of one task); steps 1, 3 joint (2 micro-batches of 3 tasks)
    assert batches[0] == batches[1] and [s for s, _ in batches[0]] == [0] * 2 + [1] * 6 + [2] * 2 + [3] * 6
    digests = [[r["batch"] for r in log if "task" in r] for log in logs]
    assert all(a != b for a, b in zip(*digests))
    assert logs[0][-1]["weights"] == logs[1][-1]["weights"]
    assert json.loads((out / "eval_results.json").read_text())["task_steps"] == {"sst": 4, "quora": 2, "sts": 2}
