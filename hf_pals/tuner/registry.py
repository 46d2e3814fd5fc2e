"""The one place that registers the "pals" method with PEFT.

`register_pals` hands `PALConfig`/`PALModel` to `peft.utils.register_peft_method` under the name
"pals" (the `PeftType` member it needs is made in `peft_type.py`). It is idempotent: importing
`hf_pals` twice, or registering again in a process where it is already done, is harmless. This module
sits above `config.py` and `model.py`, which never import it.
"""

from __future__ import annotations

from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import register_peft_method

from .config import PALConfig
from .model import PALModel

# Re-exported: `hf_pals.tuner.registry` was their home before `peft_type.py`.
from .peft_type import PALS_NAME, PALS_PEFT_TYPE, _extend_peft_type

__all__ = ["PALS_NAME", "PALS_PEFT_TYPE", "_extend_peft_type", "register_pals"]


def register_pals() -> None:
    """Register `PALConfig`/`PALModel` under the name "pals" with PEFT (no-op when already done)."""
    if PEFT_TYPE_TO_TUNER_MAPPING.get(PALS_PEFT_TYPE) is PALModel:
        return
    register_peft_method(name=PALS_NAME, config_cls=PALConfig, model_cls=PALModel, prefix=PALModel.prefix)
