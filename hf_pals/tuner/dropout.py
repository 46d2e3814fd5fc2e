"""Dropout for the adapters' own modules, with a cheaper random draw than `torch.nn.functional.dropout`.

Why: on a CPU, `F.dropout` draws one Bernoulli sample per element through `bernoulli_`, then divides and
multiplies by a float noise tensor. For the PAL's projected attention (32 x 6 x 64 x 64 probabilities per
layer on the benchmark batch) that is ~6 ms a layer, more than the rest of the projected attention, and it
made the PAL training step ~6% slower than the same step with `pal_dropout=0` (the two timed side by
side on the adapter benchmark's batch).
Here one 64-bit random word gives four 16-bit lanes, each compared with a threshold: the same
independent Bernoulli draws (with the drop probability rounded to a multiple of 1/65536), about a quarter
of the random-number work, and a bool mask instead of a float noise tensor. The seed is torch's global
generator's, so `torch.manual_seed` makes runs repeatable as with `F.dropout`.

The adapters' modules use it always; the shared encoder's own dropout layers use it through
`hf_pals.encoder_dropout.use_fast_dropout` (on by default in `hf-pals train`).
"""

from __future__ import annotations

import math

import torch

#: Levels of one 16-bit lane: the drop probability is rounded to a multiple of 1 / LEVELS.
LEVELS = 1 << 16


def keep_mask(shape: torch.Size, p: float, device=None) -> torch.Tensor:
    """A bool tensor of `shape`, True where an element is kept: each dropped independently, with
    probability p (rounded to a multiple of 1/65536)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    threshold = round(p * LEVELS)
    if threshold >= LEVELS:  # p rounds to 1: the threshold would not fit an int16 comparison
        return torch.zeros(shape, dtype=torch.bool, device=device)
    numel = math.prod(shape)
    # random_(-2**63, None) draws from the full int64 range, so all four 16-bit lanes of a word are uniform.
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    lanes = words.view(torch.int16)[:numel].view(shape)
    return lanes >= threshold - LEVELS // 2


def dropout_mask(shape: torch.Size, p: float, device=None) -> torch.Tensor:
    """A bool tensor of `shape`, True where an element is dropped: the complement of `keep_mask`."""
    return keep_mask(shape, p, device).logical_not_()


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout, as `F.dropout(x, p, training)`: zero each element with probability p, scale
    the rest by 1/(1-p); the identity when not training or p == 0. The mask multiplies as uint8 (a
    bool mask's masked fill is ~3x slower on a CPU)."""
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    return torch.mul(x, keep_mask(x.shape, p, x.device).view(torch.uint8)).mul_(1.0 / (1.0 - p))


__all__ = ["dropout", "dropout_mask", "keep_mask", "LEVELS"]
