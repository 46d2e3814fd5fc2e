"""`PALS_PEFT_TYPE`: the member "PALS" of PEFT's `PeftType` enum, which `PALConfig.peft_type` holds.

PEFT only knows methods whose name is a member of its closed `PeftType` enum, and an `enum.Enum` cannot
be extended with normal attribute assignment, so the member is added here, once, when this module is
first imported. It is idempotent: in a process where the enum already has the member, that member is
used. This module sits below `config.py` (which needs the member) and `registry.py` (which registers the
method under it), so neither has to import the other's module to get it.
"""

from __future__ import annotations

from peft.utils.peft_types import PeftType

#: The method's name with PEFT (`register_peft_method(name=...)`); the enum member is its upper case.
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
