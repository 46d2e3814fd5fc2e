"""`PALConfig`: the configuration of Projected Attention Layers (and their variants) as a PEFT method.

Stickland & Murray, "BERT and PALs: Projected Attention Layers for Efficient Adaptation in Multi-Task
Learning", ICML 2019 (https://arxiv.org/abs/1902.02671). The variants `PALConfig.pal_type` selects, and
what each computes, are described in `layer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional, Union

from peft import PeftConfig

from .layer import (
    PAL_TYPES,
    houlsby_parameter_count,
    low_rank_parameter_count,
    pal_lora_parameter_count,
    pal_parameter_count,
)
from .peft_type import PALS_PEFT_TYPE

#: d_s / d in the paper: 204 projected dimensions for BERT-base's 768.
PAL_HIDDEN_RATIO = 204 / 768

#: Regex for the layers of a BERT-family encoder (`BertModel.encoder.layer.N`).
BERT_LAYER_PATTERN = r"(.*\.)?encoder\.layer\.\d+"


@dataclass
class PALConfig(PeftConfig):
    """Configuration of a set of Projected Attention Layers (or one of their variants) for one task.

    A PAL runs in parallel with every targeted BERT layer (the paper's code, equation in `layer.py`):

        h_{l+1} = LN(FFN(a) + a + TS(h_l)),   a = LN(h_l + SA(h_l))
        TS(h)   = GELU(V_D · MH(V_E · h))

    V_E (d -> d_s) and V_D (d_s -> d) are shared by all layers of one task when `share_projections` is
    True; MH is a multi-head self-attention in the d_s-dimensional space, one per layer.

    `pal_type` picks what the task-specific part is (details and citations in `layer.py`):

        "pal"       TS(h) = GELU(V_D · MH(V_E · h))        Stickland & Murray (2019), the default
        "low_rank"  TS(h) = V_D · GELU(V_E · h)            the paper's low-rank baseline (its code's GELU)
        "pal_lora"  TS(h) = (h·W1 + b1)·W2 + b2, rank r    PAL-LoRA (CS224N report), one per layer
        "houlsby"   x + W_up · GELU(W_down · x) on both sub-layer outputs, before their LayerNorms
                                                           Houlsby et al. (2019), serial, one per layer

    Args:
        pal_type: the variant, one of `PAL_TYPES`.
        pal_hidden_size: d_s, the projected size of "pal" and "low_rank". `None` resolves to 204/768 of the
            encoder's hidden size, rounded to a multiple of `pal_num_heads` (204 for BERT-base, 102 for a
            384-wide MiniLM).
        pal_num_heads: heads of the projected attention (6 in the paper); "pal" only.
        share_projections: share V_E and V_D across layers (the paper's setting for PALs), or one pair per
            layer. Applies to "pal" and "low_rank" (the paper's code gives its low-rank baseline one pair
            per layer: `share_projections=False`); "pal_lora" and "houlsby" are always per layer.
        pal_lora_rank: r, the rank of "pal_lora" (2 worked best in the PAL-LoRA report).
        houlsby_size: m, the bottleneck width of each "houlsby" adapter.
        pal_dropout: "pal": dropout on the projected attention probabilities; "pal_lora": dropout on TS(h)
            (the report's Dropout(TS(.))); unused by "low_rank" and "houlsby", which have none in their
            papers' code.
        init_pal_weights: "zeros" sets the output projection (V_D, W2 or W_up) to zero so an untrained
            adapter leaves the base model's output unchanged (as LoRA does with B, and Houlsby et al.'s
            near-identity init); "bert" draws every weight from N(0, 0.02) like the paper's code.
        layers_to_transform: indices of the encoder layers that get an adapter; `None` means all of them.
        target_modules: regex (full match) of the module names of the layers to wrap; derived from
            `layers_to_transform` when left as `None`.

    Unknown fields are an error, also when loading an `adapter_config.json`: PEFT's loaders would drop them
    with a warning, and an ignored field (`pal_type` read by an older version) silently builds another model.
    """

    pal_type: str = field(default="pal", metadata={"help": f"Adapter variant: one of {', '.join(PAL_TYPES)}."})
    pal_hidden_size: Optional[int] = field(default=None, metadata={"help": "d_s; None = 204/768 of hidden size"})
    pal_num_heads: int = field(default=6, metadata={"help": "Heads of the projected multi-head attention."})
    share_projections: bool = field(default=True, metadata={"help": "Share V_E/V_D across all layers of a task."})
    pal_lora_rank: int = field(default=2, metadata={"help": "r of pal_type='pal_lora'."})
    houlsby_size: int = field(default=64, metadata={"help": "Bottleneck width of pal_type='houlsby'."})
    pal_dropout: float = field(default=0.1, metadata={"help": "Dropout of 'pal' attention / 'pal_lora' output."})
    init_pal_weights: str = field(default="zeros", metadata={"help": "'zeros' (output projection = 0) or 'bert'."})
    layers_to_transform: Optional[Union[list[int], int]] = field(
        default=None, metadata={"help": "Encoder layer indices to adapt; None = all."}
    )
    target_modules: Optional[str] = field(
        default=None, metadata={"help": "Regex of the BERT layer modules to wrap; None = derived from layers."}
    )

    def __new__(cls, *args, **kwargs):
        # PEFT's `from_peft_type` catches the dataclass's "got an unexpected keyword argument" TypeError and
        # retries without those keys; this error is worded differently, so it reaches the caller.
        unknown = sorted(set(kwargs) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(
                f"PALConfig: unknown field(s) {unknown} (an adapter_config.json written by a newer hf_pals or "
                f"peft, or a misspelling); known fields: {sorted(f.name for f in fields(cls))}"
            )
        return super().__new__(cls)

    def __post_init__(self):
        # PEFT >= 0.22 refuses a str `target_modules` beside `layers_to_transform`, because its own tuners
        # would ignore the layers. Here the regex is derived from those layers (below), so a saved config
        # holds both; PEFT's checks run with the regex set aside.
        target_modules, self.target_modules = self.target_modules, None
        super().__post_init__()
        self.target_modules = target_modules
        self.peft_type = PALS_PEFT_TYPE
        if isinstance(self.layers_to_transform, int):
            self.layers_to_transform = [self.layers_to_transform]
        if self.target_modules is None:
            if self.layers_to_transform is None:
                self.target_modules = BERT_LAYER_PATTERN
            else:
                indices = "|".join(str(int(i)) for i in sorted(set(self.layers_to_transform)))
                self.target_modules = rf"(.*\.)?encoder\.layer\.({indices})"
        if self.pal_type not in PAL_TYPES:
            raise ValueError(f"PALConfig.pal_type must be one of {', '.join(PAL_TYPES)}; got {self.pal_type!r}")
        if self.pal_num_heads < 1:
            raise ValueError(f"PALConfig.pal_num_heads must be >= 1, got {self.pal_num_heads}")
        if self.pal_type == "pal" and self.pal_hidden_size is not None and self.pal_hidden_size % self.pal_num_heads:
            raise ValueError(
                f"PALConfig.pal_hidden_size ({self.pal_hidden_size}) must be divisible by "
                f"pal_num_heads ({self.pal_num_heads})"
            )
        for name in ("pal_lora_rank", "houlsby_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"PALConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.pal_dropout < 1.0:
            raise ValueError(f"PALConfig.pal_dropout must be in [0, 1), got {self.pal_dropout}")
        if self.init_pal_weights not in ("zeros", "bert"):
            raise ValueError(f"PALConfig.init_pal_weights must be 'zeros' or 'bert', got {self.init_pal_weights!r}")

    @property
    def shares_projections(self) -> bool:
        """Whether all layers of the task use one V_E/V_D pair ("pal"/"low_rank" with `share_projections`)."""
        return self.share_projections and self.pal_type in ("pal", "low_rank")

    def resolve_pal_hidden_size(self, hidden_size: int) -> int:
        """d_s for an encoder of width `hidden_size`: the configured value or 204/768 of it."""
        if self.pal_hidden_size is not None:
            return self.pal_hidden_size
        heads = self.pal_num_heads
        return heads * max(1, round(PAL_HIDDEN_RATIO * hidden_size / heads))

    def resolve_adapter_size(self, hidden_size: int) -> int:
        """The bottleneck width of the variant: d_s ("pal", "low_rank"), r ("pal_lora") or m ("houlsby")."""
        if self.pal_type == "pal_lora":
            return self.pal_lora_rank
        if self.pal_type == "houlsby":
            return self.houlsby_size
        return self.resolve_pal_hidden_size(hidden_size)

    def parameter_count(self, hidden_size: int, num_layers: int) -> int:
        """Trainable parameters of one task's adapter on `num_layers` adapted layers of width `hidden_size`."""
        size = self.resolve_adapter_size(hidden_size)
        if self.pal_type == "pal":
            return pal_parameter_count(hidden_size, size, num_layers, self.share_projections)
        if self.pal_type == "low_rank":
            return low_rank_parameter_count(hidden_size, size, num_layers, self.share_projections)
        if self.pal_type == "pal_lora":
            return pal_lora_parameter_count(hidden_size, size, num_layers)
        return houlsby_parameter_count(hidden_size, size, num_layers)
