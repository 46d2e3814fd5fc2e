"""PCGrad and A-GEM on hand-made gradients, and the episodic memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_pals.training.gradient_surgery import (
    AGEM,
    EpisodicMemory,
    PCGrad,
    agem,
    agem_project,
    build_gradient_surgery,
    count_conflicts,
    pcgrad,
)


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_pcgrad_projects_conflicting_gradients_exactly():
    grads = _t([1.0, 0.0], [-1.0, 1.0])  # g1 · g2 = -1 < 0
    # g1 - (g1·g2 / |g2|²) g2 = [1, 0] + 0.5 [-1, 1];  g2 - (g2·g1 / |g1|²) g1 = [-1, 1] + [1, 0]
    assert pcgrad(grads, np.random.default_rng(0)).tolist() == [0.5 + 0.0, 0.5 + 1.0]
    projected_1 = torch.tensor([0.5, 0.5], dtype=torch.float64)
    assert torch.dot(projected_1, grads[1]).item() == 0.0  # on the normal plane of g2


def test_pcgrad_leaves_non_conflicting_gradients_unchanged():
    grads = _t([1.0, 0.0, 2.0], [1.0, 1.0, -0.5], [0.0, 3.0, 1.0])  # every dot product >= 0
    assert count_conflicts(grads) == 0
    assert torch.equal(pcgrad(grads, np.random.default_rng(3)), grads.sum(0))


def test_pcgrad_projects_against_the_original_gradients_in_the_drawn_order():
    grads = _t([1.0, 0.0], [-1.0, 0.5], [-0.2, -1.0])
    rng = np.random.default_rng(7)
    orders = [rng.permutation([j for j in range(3) if j != i]) for i in range(3)]
    expected = []
    for i, order in enumerate(orders):
        g = grads[i].clone()
        for j in order:
            dot = torch.dot(g, grads[j])
            if dot < 0:
                g = g - dot / torch.dot(grads[j], grads[j]) * grads[j]
        expected.append(g)
    assert torch.allclose(pcgrad(grads, np.random.default_rng(7)), torch.stack(expected).sum(0))
    assert count_conflicts(grads) == 3  # every pair conflicts


def test_pcgrad_orders_are_a_function_of_seed_and_step():
    grads = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    surgery = PCGrad(seed=5)
    assert torch.equal(surgery.combine(grads, step=3), PCGrad(seed=5).combine(grads, step=3))


def test_agem_projection_formula():
    g, g_ref = _t([1.0, 1.0])[0], _t([-1.0, 0.0])[0]  # conflicting: g · g_ref = -1
    projected = agem_project(g, g_ref)
    assert projected.tolist() == (g - (torch.dot(g, g_ref) / torch.dot(g_ref, g_ref)) * g_ref).tolist() == [0.0, 1.0]
    assert torch.dot(projected, g_ref).item() == 0.0
    agreeing = _t([0.5, 2.0])[0]
    assert agem_project(agreeing, g_ref.neg()) is agreeing  # g · g_ref >= 0: unchanged


def test_agem_step_does_not_increase_the_memory_loss_to_first_order():
    torch.manual_seed(0)
    x_mem, y_mem = torch.randn(32, 5, dtype=torch.float64), torch.randn(32, dtype=torch.float64)
    theta = torch.randn(5, dtype=torch.float64, requires_grad=True)

    def memory_loss(t):
        return ((x_mem @ t - y_mem) ** 2).mean()

    (g_ref,) = torch.autograd.grad(memory_loss(theta), theta)
    g = -g_ref + 0.3 * torch.randn(5, dtype=torch.float64)  # a current-task gradient that conflicts
    assert torch.dot(g, g_ref) < 0
    eta = 1e-7
    with torch.no_grad():
        before = memory_loss(theta)
        plain_rate = (memory_loss(theta - eta * g) - before) / eta
        projected_rate = (memory_loss(theta - eta * agem_project(g, g_ref)) - before) / eta
    assert plain_rate > 1e-2  # the plain step would increase the memory loss at first order
    assert abs(projected_rate) < 1e-4 * plain_rate  # the projected step: unchanged at first order


def test_agem_across_tasks_uses_the_other_tasks_mean_memory_gradient():
    grads = _t([1.0, 0.0], [0.0, 1.0], [1.0, 1.0])
    memory = _t([-1.0, 0.5], [-1.0, -0.5], [2.0, 2.0])
    expected = torch.zeros(2, dtype=torch.float64)
    for i in range(3):
        reference = torch.stack([memory[j] for j in range(3) if j != i]).mean(0)
        expected += agem_project(grads[i], reference)
    assert torch.allclose(agem(grads, memory), expected)
    assert not torch.allclose(expected, grads.sum(0))  # some projection happened
    assert torch.equal(AGEM().combine(grads[:1], step=0, memory_grads=memory[:1]), grads[0])


def test_build_gradient_surgery_names():
    assert build_gradient_surgery("none") is None
    assert isinstance(build_gradient_surgery("pcgrad", seed=1), PCGrad)
    assert isinstance(build_gradient_surgery("agem"), AGEM)
    with pytest.raises(ValueError, match="multitask.gradient_surgery"):
        build_gradient_surgery("gem")


def test_episodic_memory_is_fixed_size_and_seeded():
    data = {
        "a": Dataset.from_list([{"sentence1": f"a{i}", "label": i % 2} for i in range(50)]),
        "b": Dataset.from_list([{"sentence1": f"b{i}", "label": i % 2} for i in range(5)]),
    }
    memory = EpisodicMemory(data, memory_size=8, seed=3, collate=lambda rows: {"rows": rows})
    assert [len(memory.indices[t]) for t in ("a", "b")] == [8, 5]  # b has only 5 examples
    assert len(set(memory.indices["a"])) == 8
    assert memory.indices == EpisodicMemory(data, memory_size=8, seed=3).indices
    assert memory.indices["a"] != EpisodicMemory(data, memory_size=8, seed=4).indices["a"]
    rows = memory.batches["a"]["rows"]
    assert [r["sentence1"] for r in rows] == [f"a{i}" for i in memory.indices["a"]]
    assert {r["task"] for r in rows} == {"a"}
    with pytest.raises(ValueError, match="memory_size"):
        EpisodicMemory(data, memory_size=0)
