"""Weight averaging: an exponential moving average (EMA) or a stochastic weight average (SWA) of the
trainable weights, which becomes the run's final model.

Recipe section:

    weight_averaging: {method: ema, decay: 0.999, start_step: 0}      # Polyak averaging, EMA form
    weight_averaging: {method: swa, start_step: 1000, every: 10}      # Izmailov et al., 2018: equal weights

An average of the weights along the end of a run usually generalises a little better than the last
step's weights, and smooths out the last steps' noise. The averaged copy is a
`torch.optim.swa_utils.AveragedModel` (EMA through `get_ema_multi_avg_fn(decay)`, SWA its default running
mean) of the *trainable* parameters only (a frozen encoder is not copied); the model has no batch norm,
so no buffers are averaged (`use_buffers=False`).

- After each optimizer step s (1-based, `state.global_step`) with s >= max(start_step, 1) and
  (s - start_step) % every == 0, `WeightAveragingCallback.on_step_end` folds the weights into the
  average. The first update copies them (EMA: W_0 = the weights at the first update; then
  W <- decay * W + (1 - decay) * weights; SWA: the mean of the weights at every update step).
- At the end of training (`on_train_end`, after transformers' loop and before `run.train` saves the bundle
  and scores the dev files) the averaged parameters are copied into the model: the final bundle, the dev
  report and anything the caller does with `trainer.model` afterwards see the average. The periodic
  evaluations during training score the raw weights.
- Resume: `MultiTaskTrainer` saves the average in every checkpoint next to the optimizer state
  (`weight_averaging.safetensors`, written before `trainer_state.json`, so any checkpoint a resume picks has
  it) and loads it back with the optimizer, so a killed run resumes with the average it had.
- `load_best_model_at_end` is refused: it would replace the final weights by a checkpoint's raw weights
  (or, applied after it, the average would replace the "best" model), so the two cannot both say what the
  final model is. Early stopping without it is fine (the average up to the stop).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

#: The averaged weights in a checkpoint folder (tensor name -> averaged tensor, plus the update count).
WEIGHT_AVERAGING_NAME = "weight_averaging.safetensors"
_COUNT_KEY = "__n_averaged__"
METHODS = ("ema", "swa")
DEFAULT_EMA_DECAY = 0.999


@dataclass
class WeightAveragingConfig:
    """The `weight_averaging` recipe section.

    Args:
        method: "ema" (exponential moving average) or "swa" (equal-weight running mean).
        decay: EMA only: the share of the old average kept at each update, 0 < decay < 1 (default 0.999;
            about the last 1 / (1 - decay) updates count).
        start_step: the first optimizer step whose weights enter the average (0 or 1: from the first step).
        every: average every `every`-th step from `start_step` on (SWA's averaging period; EMA too).
    """

    method: str = "ema"
    decay: Optional[float] = None
    start_step: int = 0
    every: int = 1

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"weight_averaging.method must be one of {list(METHODS)}, got {self.method!r}")
        if self.method == "ema":
            self.decay = DEFAULT_EMA_DECAY if self.decay is None else self.decay
            if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)) or not 0 < self.decay < 1:
                raise ValueError(f"weight_averaging.decay must be a number with 0 < decay < 1, got {self.decay!r}")
            self.decay = float(self.decay)
        elif self.decay is not None:
            raise ValueError("weight_averaging.decay is for method ema only; method swa averages with equal weights")
        for name, low in (("start_step", 0), ("every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"weight_averaging.{name} must be an integer >= {low}, got {value!r}")

    @classmethod
    def from_value(cls, value: Any) -> "WeightAveragingConfig":
        return value if isinstance(value, cls) else cls(**dict(value or {}))

    def updates_at(self, step: int) -> bool:
        """Whether the weights after optimizer step `step` (1-based) enter the average."""
        return step >= max(self.start_step, 1) and (step - self.start_step) % self.every == 0

    def updates_until(self, step: int) -> int:
        """How many updates the steps 1..`step` make."""
        first = max(self.start_step, 1)
        first += (self.start_step - first) % self.every  # the first step s >= 1 with (s - start) % every == 0
        return 0 if step < first else (step - first) // self.every + 1


class _Trainable(nn.Module):
    """A model's trainable parameters (the tensors themselves, not copies) as one module: what the
    `AveragedModel` copies and averages, so frozen weights cost nothing."""

    def __init__(self, model: nn.Module):
        super().__init__()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = nn.ParameterList([p for _, p in named])


class WeightAveragingCallback(TrainerCallback):
    """Keeps the EMA/SWA of the model's trainable weights and puts it into the model when training ends
    (see the module docstring). `MultiTaskTrainer` finds it among its callbacks to save it in (and load it
    from) every checkpoint."""

    def __init__(self, config: Any):
        self.config = WeightAveragingConfig.from_value(config)
        self.averaged: Optional[AveragedModel] = None
        self._source: Optional[_Trainable] = None
        self._loaded_step: Optional[int] = None
        self.applied = False

    # ------------------------------------------------------------------------------------- state
    def attach(self, model: nn.Module) -> None:
        """Build the averaged copy of `model`'s trainable weights (once)."""
        if self.averaged is not None:
            return
        self._source = _Trainable(model)
        if not self._source.names:
            raise ValueError("weight_averaging: the model has no trainable parameters to average")
        avg = get_ema_multi_avg_fn(self.config.decay) if self.config.method == "ema" else None
        self.averaged = AveragedModel(self._source, multi_avg_fn=avg, use_buffers=False)
        self.averaged.requires_grad_(False)

    @property
    def updates(self) -> int:
        """How many steps' weights the average holds."""
        return int(self.averaged.n_averaged) if self.averaged is not None else 0

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Parameter name -> averaged tensor (CPU copies), plus the update count."""
        tensors = {n: p.detach().cpu().clone() for n, p in zip(self._source.names, self.averaged.module.params)}
        tensors[_COUNT_KEY] = self.averaged.n_averaged.detach().cpu().reshape(1).clone()
        return tensors

    def save(self, directory: str) -> str:
        """Write the average to `directory`/weight_averaging.safetensors (a checkpoint folder)."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, WEIGHT_AVERAGING_NAME)
        metadata = {"format": "pt", **{k: str(v) for k, v in asdict(self.config).items()}}
        save_file(self.state_dict(), path, metadata=metadata)
        return path

    def load(self, directory: str, model: nn.Module, step: Optional[int] = None) -> None:
        """Load the average a checkpoint saved (a resume); errors name the file and what does not fit."""
        self.attach(model)
        path = os.path.join(directory, WEIGHT_AVERAGING_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: checkpoint {directory} has no averaged weights for weight_averaging "
                f"(was it written by a run without weight_averaging, or with save_only_model?)"
            )
        tensors = load_file(path)
        count = tensors.pop(_COUNT_KEY, None)
        if count is None or set(tensors) != set(self._source.names):
            missing = sorted(set(self._source.names) - set(tensors))
            extra = sorted(set(tensors) - set(self._source.names))
            raise ValueError(
                f"{path}: the averaged weights do not fit this model's trainable parameters "
                f"(missing {missing[:3]}, unexpected {extra[:3]}{', no update count' if count is None else ''})"
            )
        with torch.no_grad():
            for name, param in zip(self._source.names, self.averaged.module.params):
                if tensors[name].shape != param.shape:
                    saved, wanted = tuple(tensors[name].shape), tuple(param.shape)
                    raise ValueError(f"{path}: {name} has shape {saved}, the model's {wanted}")
                param.copy_(tensors[name])
            self.averaged.n_averaged.fill_(int(count.item()))
        self._loaded_step = step

    def apply(self, model: Optional[nn.Module] = None) -> bool:
        """Copy the averaged weights into the model's parameters; False (a warning, raw weights kept) when
        no step was averaged yet (the run stopped before `start_step`)."""
        if self.averaged is None or self.updates == 0:
            logger.warning(
                f"weight_averaging: no step reached start_step {self.config.start_step}; "
                "the final weights are not averaged"
            )
            return False
        with torch.no_grad():
            for param, averaged in zip(self._source.params, self.averaged.module.params):
                param.copy_(averaged)
        self.applied = True
        return True

    def summary(self) -> dict[str, Any]:
        """The settings and the number of averaged steps, for the run's report."""
        return {**asdict(self.config), "updates": self.updates, "applied": self.applied}

    # ---------------------------------------------------------------------------------- callbacks
    def on_init_end(self, args, state, control, **kwargs):
        if args.load_best_model_at_end:
            raise ValueError(
                "weight_averaging and load_best_model_at_end both choose the final weights (the average vs the best "
                "checkpoint's raw weights): use one of them"
            )

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0 and self._loaded_step is None:
            self.averaged = None  # a fresh run: a fresh average
        self.attach(model)
        expected = self.config.updates_until(state.global_step)
        if state.global_step > 0 and self._loaded_step is None and expected > 0:
            raise ValueError(
                f"weight_averaging: training resumes at step {state.global_step} but no averaged weights were loaded "
                f"from its checkpoint; MultiTaskTrainer loads them ({WEIGHT_AVERAGING_NAME})"
            )
        if self._loaded_step is not None and self.updates != expected:
            raise ValueError(
                f"weight_averaging: the checkpoint's average holds {self.updates} steps, but {self.config} averages "
                f"{expected} by step {state.global_step} (was the checkpoint written with another weight_averaging?)"
            )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.config.updates_at(state.global_step):
            self.attach(model)
            self.averaged.update_parameters(self._source)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.apply()


def find_weight_averaging(callbacks) -> Optional[WeightAveragingCallback]:
    """The `WeightAveragingCallback` among a trainer's callbacks, if any."""
    return next((c for c in callbacks if isinstance(c, WeightAveragingCallback)), None)
