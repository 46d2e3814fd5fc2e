"""Loss balancing for joint steps: each balancer against its paper's formula."""

from __future__ import annotations

import math

import pytest
import torch

from hf_pals.training.loss_balancing import (
    LOSS_BALANCERS,
    DynamicWeightAverage,
    GradNorm,
    SquaredLoss,
    SumLoss,
    UncertaintyWeighting,
    kendall_factors,
)

TASKS = ["sst", "quora", "sts"]


def _losses(*values, requires_grad=False):
    return {t: torch.tensor(float(v), requires_grad=requires_grad) for t, v in zip(TASKS, values)}


def test_registry_names():
    assert list(LOSS_BALANCERS) == ["sum", "squares", "dwa", "uncertainty", "gradnorm"]


def test_sum_is_the_plain_sum():
    assert SumLoss(TASKS)(_losses(0.5, 1.5, 2.0)).item() == pytest.approx(4.0)


def test_squares_is_the_sum_of_squared_losses():
    losses = _losses(0.5, 1.5, 2.0, requires_grad=True)
    balancer = SquaredLoss(TASKS)
    total = balancer(losses)
    assert total.item() == pytest.approx(0.25 + 2.25 + 4.0)
    total.backward()  # dL/dL_i = 2 L_i
    assert [losses[t].grad.item() for t in TASKS] == pytest.approx([1.0, 3.0, 4.0])
    assert balancer.loss_weights() is None


def test_dwa_weights_follow_the_formula_and_sum_to_the_number_of_tasks():
    dwa = DynamicWeightAverage(TASKS, temperature=2.0, window=1)
    assert dwa.loss_weights().tolist() == [1.0, 1.0, 1.0]  # no history yet
    dwa.observe(torch.tensor([1.0, 2.0, 0.5]))  # L(t-2)
    assert dwa.loss_weights().tolist() == [1.0, 1.0, 1.0]  # one window is not a ratio
    dwa.observe(torch.tensor([0.5, 1.8, 0.6]))  # L(t-1)
    ratios = [0.5 / 1.0, 1.8 / 2.0, 0.6 / 0.5]
    denominator = sum(math.exp(r / 2.0) for r in ratios)
    expected = [3 * math.exp(r / 2.0) / denominator for r in ratios]
    weights = dwa.loss_weights()
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    assert weights.sum().item() == pytest.approx(3.0)
    assert weights.argmax().item() == 2  # the task whose loss went up gets the most weight
    total = dwa(_losses(1.0, 2.0, 3.0))
    assert total.item() == pytest.approx(expected[0] * 1 + expected[1] * 2 + expected[2] * 3, rel=1e-6)


def test_dwa_window_averages_the_steps_of_a_window():
    dwa = DynamicWeightAverage(["a", "b"], temperature=1.0, window=2)
    for losses in ([4.0, 1.0], [2.0, 1.0], [1.0, 1.0], [1.0, 3.0]):  # windows: [3, 1] then [1, 2]
        dwa.observe(torch.tensor(losses))
    assert dwa.history.tolist() == [[3.0, 1.0], [1.0, 2.0]]
    ratios = torch.tensor([1.0 / 3.0, 2.0])
    assert torch.allclose(dwa.loss_weights(), 2 * torch.softmax(ratios, 0).float())
    dwa.observe(torch.tensor([5.0, 5.0]))  # half a window: the weights do not change yet
    assert torch.allclose(dwa.loss_weights(), 2 * torch.softmax(ratios, 0).float())


def test_dwa_large_temperature_gives_equal_weights():
    dwa = DynamicWeightAverage(["a", "b"], temperature=1e6)
    dwa.observe(torch.tensor([1.0, 1.0]))
    dwa.observe(torch.tensor([0.1, 5.0]))
    assert dwa.loss_weights().tolist() == pytest.approx([1.0, 1.0], abs=1e-5)


@pytest.mark.parametrize("kendall", [False, True])
def test_uncertainty_gradient_wrt_log_variance_is_analytic(kendall):
    kinds = {"sst": "classification", "quora": "classification", "sts": "regression"}
    factors = kendall_factors(kinds) if kendall else None
    balancer = UncertaintyWeighting(TASKS, factors=factors)
    with torch.no_grad():
        balancer.log_vars.copy_(torch.tensor([0.3, -0.7, 1.2]))
    values = [0.8, 1.7, 2.5]
    total = balancer(_losses(*values))
    f = [2.0, 2.0, 1.0] if kendall else [1.0, 1.0, 1.0]
    s = [0.3, -0.7, 1.2]
    expected_total = sum(fi * math.exp(-si) * li + si for fi, si, li in zip(f, s, values))
    assert total.item() == pytest.approx(expected_total, rel=1e-6)
    total.backward()
    analytic = [1 - fi * math.exp(-si) * li for fi, si, li in zip(f, s, values)]
    assert balancer.log_vars.grad.tolist() == pytest.approx(analytic, rel=1e-5)
    assert balancer.loss_weights().tolist() == pytest.approx([fi * math.exp(-si) for fi, si in zip(f, s)], rel=1e-6)


def test_uncertainty_settles_at_sigma_squared_equal_to_the_loss():
    balancer = UncertaintyWeighting(["a", "b"])
    optimizer = torch.optim.SGD(balancer.parameters(), lr=0.1)
    for _ in range(500):
        optimizer.zero_grad()
        balancer({"a": torch.tensor(4.0), "b": torch.tensor(0.25)}).backward()
        optimizer.step()
    assert torch.exp(balancer.log_vars).tolist() == pytest.approx([4.0, 0.25], rel=1e-3)


def test_kendall_factors():
    assert kendall_factors({"a": "classification", "b": "regression"}) == {"a": 2.0, "b": 1.0}


def _two_task_problem():
    """A shared layer W feeding two heads; task a's loss is 10x task b's, so its gradient on W is larger."""
    torch.manual_seed(0)
    shared = torch.nn.Linear(4, 4)
    x = torch.randn(16, 4)
    target_a, target_b = torch.randn(16, 4), torch.randn(16, 4)

    def losses():
        h = shared(x)
        return {"a": 10 * ((h - target_a) ** 2).mean(), "b": ((h - target_b) ** 2).mean()}

    def grad_norm(loss):
        (grad,) = torch.autograd.grad(loss, shared.weight, retain_graph=True)
        return grad.norm().item()

    return shared, losses, grad_norm


@pytest.mark.parametrize("alpha", [0.0, 1.5])
def test_gradnorm_moves_weights_toward_balanced_gradient_norms(alpha):
    shared, losses, grad_norm = _two_task_problem()
    balancer = GradNorm(["a", "b"], alpha=alpha)
    optimizer = torch.optim.SGD(balancer.parameters(), lr=0.01)

    def imbalance():
        current = losses()
        w = balancer.weights.detach()
        return abs(w[0] * grad_norm(current["a"]) - w[1] * grad_norm(current["b"])).item()

    before = imbalance()
    for _ in range(30):
        balancer.start_step()
        optimizer.zero_grad()
        current = losses()
        balancer.backward_weights(current, shared.weight)
        optimizer.step()
        balancer.observe(torch.stack([current["a"].detach(), current["b"].detach()]))
    balancer.start_step()
    w = balancer.weights.detach()
    assert w.sum().item() == pytest.approx(2.0)  # renormalised to the number of tasks
    assert w[0] < 1.0 < w[1]  # the task with the large gradient is weighted down
    assert imbalance() < 0.5 * before


def test_gradnorm_loss_and_inverse_training_rates():
    balancer = GradNorm(["a", "b"], alpha=1.0)
    assert balancer.inverse_training_rates(torch.tensor([3.0, 1.0])).tolist() == [1.0, 1.0]  # no L(0) yet
    balancer.observe(torch.tensor([2.0, 1.0]))
    rates = balancer.inverse_training_rates(torch.tensor([1.0, 1.0]))  # L~ = [0.5, 1.0]
    assert rates.tolist() == pytest.approx([0.5 / 0.75, 1.0 / 0.75])
    with torch.no_grad():
        balancer.weights.copy_(torch.tensor([1.5, 0.5]))
    grad_norms = torch.tensor([2.0, 4.0])  # G = [3, 2], mean 2.5
    loss = balancer.gradnorm_loss(grad_norms, torch.tensor([1.0, 1.0]))
    target = [2.5 * rates[0].item(), 2.5 * rates[1].item()]
    assert loss.item() == pytest.approx(abs(3 - target[0]) + abs(2 - target[1]), rel=1e-6)
    loss.backward()  # d|w_i n_i - target_i| / dw_i = sign(.) n_i
    assert balancer.weights.grad.tolist() == pytest.approx([2.0, -4.0])
    balancer.observe(torch.tensor([9.0, 9.0]))
    assert balancer.initial_losses.tolist() == [2.0, 1.0]  # L(0) is the first step's loss only


def test_balancer_state_round_trips_through_state_dict():
    dwa = DynamicWeightAverage(TASKS, window=2)
    for losses in ([1.0, 2.0, 3.0], [0.9, 2.1, 2.0], [0.5, 1.0, 1.0]):
        dwa.observe(torch.tensor(losses))
    restored = DynamicWeightAverage(TASKS, window=2)
    restored.load_state_dict(dwa.state_dict())
    for balancer in (dwa, restored):
        balancer.observe(torch.tensor([0.4, 1.0, 0.9]))
    assert torch.equal(dwa.loss_weights(), restored.loss_weights())
    assert set(UncertaintyWeighting(TASKS).state_dict()) == {"log_vars", "factors"}
    assert set(GradNorm(TASKS).state_dict()) == {"weights", "initial_losses"}
