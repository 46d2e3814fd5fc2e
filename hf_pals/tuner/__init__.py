"""Projected Attention Layers as a PEFT method ("pals"): config, layer, tuner and their registration."""

from .config import PALConfig
from .layer import (
    BASE_ADAPTER_NAME,
    PAL_TYPES,
    PALLayer,
    houlsby_parameter_count,
    low_rank_parameter_count,
    pal_lora_parameter_count,
    pal_parameter_count,
)
from .model import PALModel
from .registry import PALS_PEFT_TYPE, register_pals

register_pals()

__all__ = [
    "PALConfig",
    "PALLayer",
    "PALModel",
    "PALS_PEFT_TYPE",
    "PAL_TYPES",
    "BASE_ADAPTER_NAME",
    "pal_parameter_count",
    "low_rank_parameter_count",
    "pal_lora_parameter_count",
    "houlsby_parameter_count",
]
