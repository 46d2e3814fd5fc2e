"""The one place that touches PEFT's registries.

PEFT only registers methods whose name is a member of its closed `PeftType` enum, so "PALS" is added
to the enum first (an `enum.Enum` cannot be extended with normal attribute assignment), then registered
with `peft.utils.register_peft_method`. Both steps are idempotent: importing `hf_pals` twice, or in a
process where the enum already has the member, is harmless.
"""

from __future__ import annotations

from peft.utils.peft_types import PeftType

PALS_NAME = "pals"


def _extend_peft_type(name: str) -> PeftType:
    """Return `PeftType[name]`, adding the member to the enum if it is not there yet."""
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member.__init__(name)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    type.__setattr__(PeftType, name, member)
    return member


PALS_PEFT_TYPE = _extend_peft_type(PALS_NAME.upper())


def register_pals() -> None:
    """Register `PALConfig`/`PALModel` under the name "pals" with PEFT (no-op when already done)."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils import register_peft_method

    from .config import PALConfig
    from .model import PALModel

    if PEFT_TYPE_TO_TUNER_MAPPING.get(PALS_PEFT_TYPE) is PALModel:
        return
    register_peft_method(name=PALS_NAME, config_cls=PALConfig, model_cls=PALModel, prefix=PALModel.prefix)
