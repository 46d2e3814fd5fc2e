"""`PALConfig`: the configuration of Projected Attention Layers as a PEFT method.

Stickland & Murray, "BERT and PALs: Projected Attention Layers for Efficient Adaptation in Multi-Task
Learning", ICML 2019 (https://arxiv.org/abs/1902.02671).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft import PeftConfig

from .registry import PALS_PEFT_TYPE

#: d_s / d in the paper: 204 projected dimensions for BERT-base's 768.
PAL_HIDDEN_RATIO = 204 / 768

#: Regex for the layers of a BERT-family encoder (`BertModel.encoder.layer.N`).
BERT_LAYER_PATTERN = r"(.*\.)?encoder\.layer\.\d+"


@dataclass
class PALConfig(PeftConfig):
    """Configuration of a set of Projected Attention Layers for one task.

    A PAL runs in parallel with every targeted BERT layer (the paper's code, equation in `layer.py`):

        h_{l+1} = LN(FFN(a) + a + TS(h_l)),   a = LN(h_l + SA(h_l))
        TS(h)   = GELU(V_D · MH(V_E · h))

    V_E (d -> d_s) and V_D (d_s -> d) are shared by all layers of one task when `share_projections` is
    True; MH is a multi-head self-attention in the d_s-dimensional space, one per layer.

    Args:
        pal_hidden_size: d_s, the projected size. `None` resolves to 204/768 of the encoder's hidden size,
            rounded to a multiple of `pal_num_heads` (204 for BERT-base, 102 for a 384-wide MiniLM).
        pal_num_heads: heads of the projected attention (6 in the paper).
        share_projections: share V_E and V_D across layers (the paper's setting), or one pair per layer.
        pal_dropout: dropout on the projected attention probabilities.
        init_pal_weights: "zeros" sets V_D to zero so an untrained adapter leaves the base model's output
            unchanged (as LoRA does with B); "bert" draws every weight from N(0, 0.02) like the paper's code.
        layers_to_transform: indices of the encoder layers that get a PAL; `None` means all of them.
        target_modules: regex (full match) of the module names of the layers to wrap; derived from
            `layers_to_transform` when left as `None`.
    """

    pal_hidden_size: Optional[int] = field(default=None, metadata={"help": "d_s; None = 204/768 of hidden size"})
    pal_num_heads: int = field(default=6, metadata={"help": "Heads of the projected multi-head attention."})
    share_projections: bool = field(default=True, metadata={"help": "Share V_E/V_D across all layers of a task."})
    pal_dropout: float = field(default=0.1, metadata={"help": "Dropout on the projected attention probabilities."})
    init_pal_weights: str = field(default="zeros", metadata={"help": "'zeros' (V_D = 0) or 'bert' (N(0, 0.02))."})
    layers_to_transform: Optional[Union[list[int], int]] = field(
        default=None, metadata={"help": "Encoder layer indices to adapt; None = all."}
    )
    target_modules: Optional[str] = field(
        default=None, metadata={"help": "Regex of the BERT layer modules to wrap; None = derived from layers."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PALS_PEFT_TYPE
        if isinstance(self.layers_to_transform, int):
            self.layers_to_transform = [self.layers_to_transform]
        if self.target_modules is None:
            if self.layers_to_transform is None:
                self.target_modules = BERT_LAYER_PATTERN
            else:
                indices = "|".join(str(int(i)) for i in sorted(set(self.layers_to_transform)))
                self.target_modules = rf"(.*\.)?encoder\.layer\.({indices})"
        if self.pal_num_heads < 1:
            raise ValueError(f"PALConfig.pal_num_heads must be >= 1, got {self.pal_num_heads}")
        if self.pal_hidden_size is not None and self.pal_hidden_size % self.pal_num_heads:
            raise ValueError(
                f"PALConfig.pal_hidden_size ({self.pal_hidden_size}) must be divisible by "
                f"pal_num_heads ({self.pal_num_heads})"
            )
        if not 0.0 <= self.pal_dropout < 1.0:
            raise ValueError(f"PALConfig.pal_dropout must be in [0, 1), got {self.pal_dropout}")
        if self.init_pal_weights not in ("zeros", "bert"):
            raise ValueError(f"PALConfig.init_pal_weights must be 'zeros' or 'bert', got {self.init_pal_weights!r}")

    def resolve_pal_hidden_size(self, hidden_size: int) -> int:
        """d_s for an encoder of width `hidden_size`: the configured value or 204/768 of it."""
        if self.pal_hidden_size is not None:
            return self.pal_hidden_size
        heads = self.pal_num_heads
        return heads * max(1, round(PAL_HIDDEN_RATIO * hidden_size / heads))
