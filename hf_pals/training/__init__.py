"""Training: the multi-task `Trainer` subclass."""

from .trainer import MultiTaskTrainer, NonFiniteLossError

__all__ = ["MultiTaskTrainer", "NonFiniteLossError"]
