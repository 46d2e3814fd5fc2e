"""Loss balancing for joint multi-task steps: how the per-task losses L_i of one step become one loss.

Every balancer turns {task: L_i} into per-task terms whose sum is the step's loss (`terms`), so that
gradient surgery (`gradient_surgery`) can take the gradient of each task's term on its own:

    sum          L = Σ_i L_i                                       the plain multi-task sum
    squares      L = Σ_i L_i²                                      CS224N report "Multi-BERT" (L1² + L2² + L3²)
    dwa          L = Σ_i λ_i L_i, λ from the last two windows' loss ratios   Liu et al., 2019
    uncertainty  L = Σ_i f_i exp(-s_i) L_i + s_i, s_i = log σ_i² learnt      Kendall et al., 2018
    gradnorm     L = Σ_i w_i L_i, w learnt to balance gradient norms         Chen et al., 2018

A balancer is an `nn.Module`: learnable balancing parameters (s_i, w_i) are `nn.Parameter`s that the
trainer puts in the optimizer (group "loss_balancing", no weight decay); everything a balancer remembers
(loss histories, initial losses) is a buffer. `state_dict()` therefore holds all of it, and checkpoints
save and restore it (exact resume).

The trainer calls, per optimizer step: `start_step()` once before the step's first micro-batch,
`terms(losses)` for every micro-batch, and `observe(mean_losses)` once after the last one, with each task's
loss averaged over the step's micro-batches and over all processes (so the state is the same on every
rank). `GradNorm.backward_weights` gives w its gradient (see its docstring).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import nn

#: Tensors that only start meaning something after the first step hold NaN until then.
_UNSET = float("nan")


class LossBalancer(nn.Module):
    """Base class: the loss of a joint step from the tasks' losses. Subclasses override `loss_weights`
    (linear combinations) or `terms`.

    Args:
        tasks: the task names, in a fixed order (the order of every per-task tensor).
    """

    name = ""

    def __init__(self, tasks: Sequence[str]):
        super().__init__()
        if not tasks:
            raise ValueError("loss balancing needs at least one task")
        self.tasks = list(tasks)

    def loss_weights(self) -> Optional[torch.Tensor]:
        """The current weight of each task's loss (in `tasks` order), or None when the combination is not
        linear. Constants: gradients flow into the losses, not into these weights."""
        return None

    def terms(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Task -> its term of the step's loss; the terms add up to the loss."""
        weights = self.loss_weights()
        return {task: weights[i].to(losses[task]) * losses[task] for i, task in enumerate(self.tasks)}

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The step's loss: the sum of `terms`."""
        missing = [t for t in self.tasks if t not in losses]
        if missing:
            raise ValueError(f"loss balancing: no loss for task(s) {missing}")
        return torch.stack(list(self.terms(losses).values())).sum()

    def start_step(self) -> None:
        """Called before the first micro-batch of every optimizer step."""

    def observe(self, mean_losses: torch.Tensor) -> None:
        """Called after every optimizer step with each task's loss of the step (`tasks` order)."""


class SumLoss(LossBalancer):
    """L = Σ_i L_i: every task's loss counts once (the baseline of joint multi-task training)."""

    name = "sum"

    def loss_weights(self) -> torch.Tensor:
        return torch.ones(len(self.tasks))


class SquaredLoss(LossBalancer):
    """L = Σ_i L_i² (Zhang, "Multi-BERT", Stanford CS224N report, 2024): a task whose loss is large
    penalises itself more, since dL/dθ = Σ_i 2 L_i ∇L_i weights each task by twice its own loss."""

    name = "squares"

    def terms(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {task: losses[task] ** 2 for task in self.tasks}


class DynamicWeightAverage(LossBalancer):
    """Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention",
    CVPR 2019, eq. 7):

        λ_k(t) = K exp(w_k(t-1) / T) / Σ_i exp(w_i(t-1) / T),   w_k(t-1) = L_k(t-1) / L_k(t-2)

    K tasks, so Σ_k λ_k = K; a task whose loss fell less over the last window gets more weight; a large
    temperature T makes all weights 1. λ_k = 1 for the first two windows (no ratio yet).

    Averaging window: L_k(t) is task k's loss averaged over window t, a run of `window` consecutive
    optimizer steps (each step's loss itself being the mean over its micro-batches and processes).
    `window=1` uses the last two steps; Liu et al. average over an epoch, i.e. `window` = the steps of an
    epoch (e.g. `sampling.steps_per_epoch`). The weights change only when a window completes.
    """

    name = "dwa"

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0, window: int = 1):
        super().__init__(tasks)
        if not temperature > 0:
            raise ValueError(f"dwa temperature must be positive, got {temperature!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"dwa window must be a positive number of steps, got {window!r}")
        self.temperature = float(temperature)
        self.window = window
        k = len(self.tasks)
        #: Rows: L(t-2), L(t-1), the mean losses of the last two complete windows.
        self.register_buffer("history", torch.full((2, k), _UNSET, dtype=torch.float64))
        self.register_buffer("window_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("window_steps", torch.zeros(1, dtype=torch.long))

    def loss_weights(self) -> torch.Tensor:
        if torch.isnan(self.history).any():
            return torch.ones(len(self.tasks))
        ratios = self.history[1] / self.history[0]
        return (len(self.tasks) * torch.softmax(ratios / self.temperature, dim=0)).float()

    def observe(self, mean_losses: torch.Tensor) -> None:
        self.window_sum += mean_losses.detach().to(self.window_sum)
        self.window_steps += 1
        if int(self.window_steps) == self.window:
            self.history[0] = self.history[1]
            self.history[1] = self.window_sum / self.window
            self.window_sum.zero_()
            self.window_steps.zero_()


def kendall_factors(task_kinds: Mapping[str, str]) -> dict[str, float]:
    """Kendall et al.'s factor of each task: 2 for a classification (softmax likelihood, L/σ² + log σ),
    1 for a regression (Gaussian likelihood, L/(2σ²) + log σ), both times 2 so that s = log σ² enters as
    + s. `task_kinds` maps task -> "classification" or "regression" (`TaskSpec.kind`)."""
    return {task: 2.0 if kind == "classification" else 1.0 for task, kind in task_kinds.items()}


class UncertaintyWeighting(LossBalancer):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty
    to Weigh Losses for Scene Geometry and Semantics", CVPR 2018):

        L = Σ_i f_i exp(-s_i) L_i + s_i,   s_i = log σ_i² learnt (initialised to 0)

    With f_i = 1 for every task (the default) this is the common form. Kendall et al.'s derivation gives a
    regression (Gaussian likelihood) L_i/(2σ²) + log σ and a classification (softmax) L_i/σ² + log σ, i.e.
    (times 2) f_i = 1 for regression and f_i = 2 for classification: pass `factors=kendall_factors(...)`.
    ∂L/∂s_i = 1 - f_i exp(-s_i) L_i, so σ_i² settles at f_i L_i: noisy (large-loss) tasks weigh less, and
    the + s_i term stops every σ from growing without bound.
    """

    name = "uncertainty"

    def __init__(self, tasks: Sequence[str], factors: Optional[Mapping[str, float]] = None):
        super().__init__(tasks)
        factors = dict(factors or {})
        unknown = sorted(set(factors) - set(self.tasks))
        if unknown:
            raise ValueError(f"uncertainty factors name unknown task(s) {unknown}")
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))
        self.register_buffer("factors", torch.tensor([float(factors.get(t, 1.0)) for t in self.tasks]))

    def loss_weights(self) -> torch.Tensor:
        return (self.factors * torch.exp(-self.log_vars)).detach()

    def terms(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            task: self.factors[i] * torch.exp(-self.log_vars[i]) * losses[task] + self.log_vars[i]
            for i, task in enumerate(self.tasks)
        }


class GradNorm(LossBalancer):
    """GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive
    Loss Balancing in Deep Multitask Networks", ICML 2018, Algorithm 1):

        L       = Σ_i w_i L_i                                   (the network's loss; w held fixed)
        G_i     = ‖∇_W w_i L_i‖₂,  Ḡ = mean_i G_i               W: the last shared layer's weights
        r_i     = L̃_i / mean_j L̃_j,  L̃_i = L_i(t) / L_i(0)    relative inverse training rate
        L_grad  = Σ_i | G_i - Ḡ · r_i^α |                        (Ḡ · r_i^α held constant)

    w (initialised to 1) is updated by the optimizer from ∇_w L_grad only, and renormalised to Σ_i w_i = K
    before every step (`start_step`, i.e. after every update). α (`alpha`) sets how strongly tasks that
    train slower (larger r_i) are pulled up; α = 0 equalises the gradient norms. L_i(0) is the loss of the
    first step (averaged over processes); r_i = 1 until it is known.
    """

    name = "gradnorm"

    def __init__(self, tasks: Sequence[str], alpha: float = 1.5):
        super().__init__(tasks)
        if not alpha >= 0:
            raise ValueError(f"gradnorm alpha must be >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial_losses", torch.full((len(self.tasks),), _UNSET, dtype=torch.float64))

    def loss_weights(self) -> torch.Tensor:
        return self.weights.detach().clone()

    def start_step(self) -> None:
        with torch.no_grad():
            self.weights.clamp_(min=1e-6)
            self.weights.mul_(len(self.tasks) / self.weights.sum())

    def observe(self, mean_losses: torch.Tensor) -> None:
        if torch.isnan(self.initial_losses).any():
            self.initial_losses.copy_(mean_losses.detach().to(self.initial_losses))

    def inverse_training_rates(self, losses: torch.Tensor) -> torch.Tensor:
        """r_i = L̃_i / mean_j L̃_j with L̃_i = L_i(t) / L_i(0); ones before L(0) is known."""
        if torch.isnan(self.initial_losses).any():
            return torch.ones_like(losses)
        relative = losses.detach().double() / self.initial_losses
        return (relative / relative.mean()).to(losses.dtype)

    def gradnorm_loss(self, grad_norms: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """L_grad from ‖∇_W L_i‖ (`grad_norms`, so G_i = w_i ‖∇_W L_i‖) and the current losses L_i(t)."""
        norms = self.weights * grad_norms.detach().to(self.weights)
        target = (norms.mean() * self.inverse_training_rates(losses).to(norms) ** self.alpha).detach()
        return (norms - target).abs().sum()

    def backward_weights(self, losses: Mapping[str, torch.Tensor], layer: torch.Tensor, scale: float = 1.0) -> None:
        """Accumulate ∇_w L_grad (times `scale`) into `weights.grad`; ∇_W L_i of each task is taken on the
        shared weight `layer` with the graphs kept for the network's backward."""
        norms = []
        for task in self.tasks:
            (grad,) = torch.autograd.grad(losses[task], layer, retain_graph=True, allow_unused=True)
            if grad is None:
                raise ValueError(f"gradnorm: task {task!r}'s loss does not depend on the shared layer")
            norms.append(grad.norm())
        current = torch.stack([losses[t].detach() for t in self.tasks])
        (self.gradnorm_loss(torch.stack(norms), current) * scale).backward()


#: Balancers by the name a recipe uses (`multitask.loss_balancing`).
LOSS_BALANCERS: dict[str, type[LossBalancer]] = {
    cls.name: cls for cls in (SumLoss, SquaredLoss, DynamicWeightAverage, UncertaintyWeighting, GradNorm)
}
