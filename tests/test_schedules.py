"""Every task schedule against its formula, determinism, round-robin order, user functions, errors."""

from __future__ import annotations

import textwrap
from collections import Counter

import numpy as np
import pytest

from hf_pals.data.sampling import (
    TASK_SCHEDULES,
    FunctionTaskSchedule,
    MultiTaskBatchSampler,
    RoundRobinTaskSchedule,
    build_task_schedule,
)
from hf_pals.recipe import RecipeError, load_recipe

from test_recipe import _base, _write

SIZES = {"quora": 13507, "sst": 8544, "sts": 6040, "tiny": 500}
DRAWS = 12000  # the standard error of a frequency is below 0.0046


def _frequencies(schedule, steps) -> dict[str, float]:
    counts = Counter(schedule.task_at(s) for s in steps)
    return {task: counts[task] / len(steps) for task in schedule.tasks}


def _expected(alpha: float) -> dict[str, float]:
    weights = {t: n**alpha for t, n in SIZES.items()}
    return {t: w / sum(weights.values()) for t, w in weights.items()}


@pytest.mark.parametrize(
    "spec, alpha",
    [
        ("proportional", 1.0),
        ("sqrt", 0.5),
        ({"name": "temperature", "temperature": 4}, 0.25),
        ("uniform", 0.0),
        ("annealed", 1.0),  # one epoch: the first annealing epoch is size-proportional
    ],
)
def test_sampled_frequencies_follow_the_formula(spec, alpha):
    schedule = build_task_schedule(spec, SIZES, num_steps=DRAWS, seed=5)
    expected = _expected(alpha)
    assert schedule.probabilities(1) == pytest.approx(expected)
    assert _frequencies(schedule, range(DRAWS)) == pytest.approx(expected, abs=0.02)


def test_annealed_epochs_flatten_from_proportional_to_alpha_0_2():
    schedule = build_task_schedule({"name": "annealed", "steps_per_epoch": DRAWS}, SIZES, num_steps=3 * DRAWS)
    assert schedule.num_epochs == 3
    for epoch, alpha in [(1, 1.0), (2, 0.6), (3, 0.2)]:
        assert schedule.probabilities(epoch) == pytest.approx(_expected(alpha))
    assert _frequencies(schedule, schedule.epoch_steps(3)) == pytest.approx(_expected(0.2), abs=0.02)


def test_round_robin_cycles_in_task_order_whatever_the_seed():
    tasks = list(SIZES)
    for seed in (0, 1):
        schedule = build_task_schedule("round_robin", SIZES, num_steps=10, seed=seed)
        assert isinstance(schedule, RoundRobinTaskSchedule)
        assert [schedule.task_at(s) for s in range(10)] == (tasks * 3)[:10]
    assert schedule.probabilities(1) == pytest.approx(dict.fromkeys(tasks, 0.25))


@pytest.mark.parametrize("name", sorted(TASK_SCHEDULES))
def test_every_schedule_is_a_pure_function_of_seed_and_step(name):
    spec = {"name": name, "steps_per_epoch": 7, "temperature": 2.0 if name == "temperature" else None}
    a, b, c = (build_task_schedule(spec, SIZES, num_steps=50, seed=seed) for seed in (3, 3, 4))
    forward = [a.task_at(s) for s in range(50)]
    assert forward == [b.task_at(s) for s in reversed(range(50))][::-1]
    if name != "round_robin":
        assert forward != [c.task_at(s) for s in range(50)]


def _favour_sst_in_epoch_1(step, epoch, num_epochs, sizes):
    """Epoch 1: sst 3 : 1 quora (sts never); later epochs: all equal (a sequence in `sizes` order)."""
    return {"sst": 3.0, "quora": 1.0} if epoch == 1 else [1.0] * len(sizes)


def test_a_user_function_sets_the_probabilities():
    sizes = {"sst": 10, "quora": 20, "sts": 30}
    schedule = build_task_schedule(
        {"name": _favour_sst_in_epoch_1, "steps_per_epoch": DRAWS}, sizes, num_steps=2 * DRAWS, seed=1
    )
    assert isinstance(schedule, FunctionTaskSchedule)
    assert schedule.probabilities(1) == pytest.approx({"sst": 0.75, "quora": 0.25, "sts": 0.0})
    assert schedule.probabilities(2) == pytest.approx(dict.fromkeys(sizes, 1 / 3))
    expected = {"sst": 0.75, "quora": 0.25, "sts": 0.0}
    assert _frequencies(schedule, schedule.epoch_steps(1)) == pytest.approx(expected, abs=0.02)


def test_a_recipe_names_a_user_function_as_module_colon_function(tmp_path, monkeypatch):
    (tmp_path / "my_sampling.py").write_text(
        textwrap.dedent(
            """
            def only_sts(step, epoch, num_epochs, sizes):
                return {"sts": 1.0}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    values = _base()
    values["sampling"] = {"name": "my_sampling:only_sts", "steps_per_epoch": 2}
    recipe = load_recipe(_write(tmp_path, values))
    schedule = build_task_schedule(vars(recipe.sampling), {"sst": 5, "sts": 5}, num_steps=8)
    assert {schedule.task_at(s) for s in range(8)} == {"sts"}


@pytest.mark.parametrize(
    "sampling, message",
    [
        ({"name": "annealing"}, "sampling.name must be one of"),
        ({"name": "temperature"}, "sampling.temperature is required"),
        ({"name": "sqrt", "temperature": 2}, "sampling.temperature applies only to name 'temperature'"),
        ({"name": "temperature", "temperature": 0}, "sampling.temperature must be a positive number"),
        ({"steps_per_epoch": 0}, "sampling.steps_per_epoch must be a positive integer"),
        ({"name": "no_such_module_xyz:fn"}, "sampling.name 'no_such_module_xyz:fn': cannot import"),
        ({"task_per": "micro_batch"}, "unknown field(s) ['task_per']"),
    ],
)
def test_bad_sampling_sections_name_file_and_field(tmp_path, sampling, message):
    values = _base()
    values["sampling"] = sampling
    path = _write(tmp_path, values)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert path in str(err.value) and message in str(err.value)


def test_a_bad_user_function_result_is_named():
    schedule = build_task_schedule(lambda *args: [1.0, -1.0], {"a": 1, "b": 1}, num_steps=4)
    with pytest.raises(ValueError, match=r"at step 0: expected 2 finite non-negative weights"):
        schedule.task_at(0)
    schedule = build_task_schedule(lambda *args: {"c": 1.0}, {"a": 1, "b": 1}, num_steps=4)
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['c'\]"):
        schedule.task_at(0)


def test_batch_sampler_follows_any_schedule():
    schedule = build_task_schedule("round_robin", {"a": 10, "b": 7}, num_steps=6)
    batches = list(MultiTaskBatchSampler(schedule, {"a": 0, "b": 10}, batch_size=3, num_steps=6, num_processes=2))
    tasks = ["a" if all(i < 10 for i in batch) else "b" for batch in batches]
    assert tasks == ["a", "a", "b", "b"] * 3
    assert np.all([len(b) == 3 for b in batches])
