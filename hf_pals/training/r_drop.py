"""R-Drop: two dropout draws of the same batch pulled together (Liang et al., "R-Drop: Regularized Dropout
for Neural Networks", NeurIPS 2021).

Each training batch of a weighted task runs through the model twice; dropout draws a different mask each
time, so the two passes are two sub-models. The task's loss becomes

    L = ½ (ℓ(f₁(x), y) + ℓ(f₂(x), y)) + α · ½ (KL(p₁||p₂) + KL(p₂||p₁))

with ℓ the task's own loss (cross-entropy, MSE, ...) and α the task's weight. The divergence is SMART's
ℓ_s (`hf_pals.training.smart.symmetric_divergence`): the symmetric KL of the softmax (classification) or
Bernoulli (binary) outputs, the squared difference on the label scale for regression; the paper's term
is half of it, hence the ½. Both passes carry gradients, as in the paper's code.

Cost: one more forward and backward on the weighted tasks' batches; the other tasks train as before.
Used by `MultiTaskTrainer.compute_loss` when the trainer's `r_drop` attribute holds an `RDropConfig`
(a recipe's `r_drop:` section, e.g. `r_drop: {weights: {sst: 1.0}}`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .smart import symmetric_divergence


@dataclass
class RDropConfig:
    """R-Drop's settings.

    Args:
        weights: α of each task, e.g. {"sst": 1.0} (the paper's GLUE runs use α in 0.1-1.0); tasks not
            listed (or with weight 0) train with one pass and their plain loss.
    """

    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.weights = {str(k): float(v) for k, v in dict(self.weights or {}).items()}
        bad = {k: v for k, v in self.weights.items() if not v >= 0}
        if bad:
            raise ValueError(f"r_drop.weights must be >= 0, got {bad}")

    def weight(self, task: str) -> float:
        """α of `task` (0 when it has none)."""
        return self.weights.get(task, 0.0)


def r_drop_loss(first: dict, second: dict, kind: str, weight: float, label_max: float = 1.0) -> torch.Tensor:
    """L of one batch from the outputs of its two passes (each with "loss" and "logits")."""
    divergence = symmetric_divergence(kind, first["logits"], second["logits"], label_max)
    return 0.5 * (first["loss"] + second["loss"]) + weight * 0.5 * divergence


__all__ = ["RDropConfig", "r_drop_loss"]
