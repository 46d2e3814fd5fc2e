"""bf16 mixed precision for a recipe's `training:` section: `bf16: auto`, and bf16 on a CPU-only machine.

transformers' `TrainingArguments(bf16=True)` refuses a machine without a bf16 GPU unless `use_cpu=True`
is also set, and `use_cpu=True` in a shared recipe would keep a GPU user's run on the CPU. So a recipe
says what it wants and this module fills in the rest for the machine it runs on:

- `bf16: auto`: bf16 where the hardware computes in bfloat16 natively (a CUDA GPU that supports it, or a
  CPU with AVX512-BF16 or AMX tiles, where CPU autocast runs its matrix products in bfloat16), float32
  elsewhere (on an older CPU, autocast to bfloat16 converts in software and is slower than float32).
- `bf16: true` and no CUDA device: `use_cpu` defaults to true (CPU autocast, as `--set training.use_cpu=true`
  did by hand); an explicit `use_cpu` is kept.
"""

from __future__ import annotations

from typing import Any

import torch

AUTO = "auto"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic units (AVX512-BF16 or AMX tiles); False if torch cannot tell."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def bf16_available() -> bool:
    """Whether bf16 mixed precision runs natively here: the CUDA device if there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def resolve_bf16(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the `training:` values with `bf16: auto` decided and `use_cpu` set for bf16 without CUDA."""
    values = dict(values)
    if isinstance(values.get("bf16"), str) and values["bf16"].strip().lower() == AUTO:
        values["bf16"] = bf16_available()
    if values.get("bf16") is True and not torch.cuda.is_available():
        values.setdefault("use_cpu", True)
    return values
