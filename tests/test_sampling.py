"""Annealed task sampling against p_i ∝ N_i^alpha, and the batch sampler's one-task-per-step rule."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from hf_pals.data.sampling import (
    AnnealedTaskSchedule,
    MultiTaskBatchSampler,
    annealed_alpha,
    annealed_probabilities,
)

SIZES = {"quora": 13507, "sst": 8544, "sts": 6040}


def test_alpha_follows_the_paper():
    assert annealed_alpha(1, 5) == 1.0
    assert annealed_alpha(5, 5) == pytest.approx(0.2)
    assert annealed_alpha(3, 5) == pytest.approx(0.6)
    assert annealed_alpha(1, 1) == 1.0


def test_probabilities_formula():
    p = annealed_probabilities(list(SIZES.values()), epoch=4, num_epochs=4)
    expected = np.array(list(SIZES.values()), dtype=float) ** 0.2
    np.testing.assert_allclose(p, expected / expected.sum())
    assert p.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("epoch, alpha", [(1, 1.0), (3, 0.2)])
def test_sampled_frequencies_match_first_and_last_epoch(epoch, alpha):
    steps_per_epoch = 20000
    schedule = AnnealedTaskSchedule(SIZES, steps_per_epoch=steps_per_epoch, num_steps=3 * steps_per_epoch, seed=7)
    assert schedule.num_epochs == 3
    start = (epoch - 1) * steps_per_epoch
    counts = Counter(schedule.task_at(s) for s in range(start, start + steps_per_epoch))
    weights = {t: n**alpha for t, n in SIZES.items()}
    total = sum(weights.values())
    for task, weight in weights.items():
        # 20,000 draws: the standard error of a frequency is below 0.0036
        assert counts[task] / steps_per_epoch == pytest.approx(weight / total, abs=0.015)
    assert schedule.probabilities(epoch)["quora"] == pytest.approx(weights["quora"] / total)


def test_schedule_is_a_pure_function_of_seed_and_step():
    a = AnnealedTaskSchedule(SIZES, steps_per_epoch=10, num_steps=50, seed=3)
    b = AnnealedTaskSchedule(SIZES, steps_per_epoch=10, num_steps=50, seed=3)
    assert [a.task_at(s) for s in range(50)] == [b.task_at(s) for s in reversed(range(50))][::-1]
    c = AnnealedTaskSchedule(SIZES, steps_per_epoch=10, num_steps=50, seed=4)
    assert [a.task_at(s) for s in range(50)] != [c.task_at(s) for s in range(50)]


def test_schedule_rejects_empty_tasks():
    with pytest.raises(ValueError, match="sts"):
        AnnealedTaskSchedule({"sst": 10, "sts": 0}, steps_per_epoch=5, num_steps=10)


def _sampler(num_processes=1, accumulation=1, num_steps=40):
    sizes = {"a": 10, "b": 7}
    schedule = AnnealedTaskSchedule(sizes, steps_per_epoch=20, num_steps=num_steps, seed=0)
    offsets = {"a": 0, "b": 10}
    return MultiTaskBatchSampler(schedule, offsets, 4, num_steps, num_processes, accumulation), schedule


def test_batches_hold_one_task_and_cycle_through_its_data():
    sampler, schedule = _sampler()
    batches = list(sampler)
    assert len(batches) == len(sampler) == 40
    seen = {"a": [], "b": []}
    for step, batch in enumerate(batches):
        task = schedule.task_at(step)
        low, high = (0, 10) if task == "a" else (10, 17)
        assert all(low <= i < high for i in batch), (step, task, batch)
        seen[task].extend(batch)
    # every full pass over a task visits each of its examples exactly once
    assert sorted(seen["a"][:10]) == list(range(10))
    assert sorted(seen["b"][:7]) == list(range(10, 17))


@pytest.mark.parametrize("num_processes, accumulation", [(2, 1), (1, 3), (2, 2)])
def test_all_batches_of_one_optimizer_step_share_a_task(num_processes, accumulation):
    sampler, schedule = _sampler(num_processes, accumulation, num_steps=12)
    batches = list(sampler)
    per_step = num_processes * accumulation
    assert len(batches) == 12 * per_step
    for step in range(12):
        task = schedule.task_at(step)
        for batch in batches[step * per_step : (step + 1) * per_step]:
            assert all((i < 10) == (task == "a") for i in batch)


def test_sampler_is_deterministic_for_resume():
    first, _ = _sampler()
    second, _ = _sampler()
    assert list(first) == list(second)


def test_length_grouping_keeps_every_row_and_cuts_padding():
    from hf_pals.data.length_grouping import group_by_length

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 80, size=1000)
    order = rng.permutation(1000)
    grouped = group_by_length(order, lengths, batch_size=32, rng=np.random.default_rng(1))
    assert sorted(grouped.tolist()) == list(range(1000))

    def padded(o):
        return sum(lengths[o[i : i + 32]].max() * len(o[i : i + 32]) for i in range(0, len(o), 32))

    assert padded(grouped) < 0.7 * padded(order)
    # batches are not sorted globally: the longest batch is not always first
    firsts = [lengths[grouped[i : i + 32]].max() for i in range(0, 1000, 32)]
    assert firsts != sorted(firsts, reverse=True)


def test_batch_sampler_groups_lengths_within_a_task():
    sizes = {"a": 64, "b": 64}
    schedule = AnnealedTaskSchedule(sizes, steps_per_epoch=8, num_steps=8, seed=0)
    lengths = {"a": list(range(64)), "b": list(range(64))}
    sampler = MultiTaskBatchSampler(schedule, {"a": 0, "b": 64}, 8, 8, lengths=lengths)
    for batch in sampler:
        local = [i % 64 for i in batch]
        assert max(local) - min(local) == 7  # eight consecutive lengths
