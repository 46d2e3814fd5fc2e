"""The task-specific modules of each adapter variant and the `BertLayer` wrapper that adds them.

PALs (`pal_type="pal"`, the default), Stickland & Murray, ICML 2019 (https://arxiv.org/abs/1902.02671), as
in the paper's code (`BERTPals` / `BERTOutput`):

    a       = LN(h_l + SA(h_l))                      BertAttention, unchanged
    h_{l+1} = LN(FFN(a) + a + TS(h_l))               TS added before the output LayerNorm
    TS(h)   = GELU(V_D · MH(V_E · h))                MH: self-attention in the projected space

The other parallel variants only change TS:

    low_rank  TS(h) = V_D · GELU(V_E · h)            the paper's "low-rank layer" baseline. Its equation
              (and the CS224N report "Multi-BERT", which puts the identity in place of MH) has no
              non-linearity; the paper's code (`BERTLowRank`: aug_dense2(gelu(aug_dense(h)))), which
              produced its numbers, has this GELU, and this module follows the code as it does for PALs.
    pal_lora  TS(h) = Dropout((h·W1 + b1)·W2 + b2)   PAL-LoRA (Wu, "minBERT-based Multitask Model using
              PAL-LoRA", Stanford CS224N report, after LoRA, Hu et al. 2021): rank r, one per layer, with
              the report's dropout on TS. W1/W2 are kept as V_E/V_D (`pals_encoder`/`pals_decoder`).

The serial variant changes the base layer's two output sub-layers instead (Houlsby et al., "Parameter-
Efficient Transfer Learning for NLP", ICML 2019, https://arxiv.org/abs/1902.00751, Figure 2):

    houlsby   S(x) = LN(A(dropout(dense(x))) + input)    for BertSelfOutput and BertOutput
              A(y) = y + W_up · GELU(W_down · y)         bottleneck m, W_up = 0 at "zeros" init (identity)

(Houlsby et al. also train the LayerNorms per task; here they stay the shared encoder's.)

With several adapters applying to one example (no `adapter_names`, several active), their changes add up:
TS outputs, and the Houlsby terms W_up · GELU(W_down · y), as PEFT does for LoRA.
"""

from __future__ import annotations

from functools import partial
from itertools import chain
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from . import dropout as fast_dropout
from .attention import projected_self_attention

#: Name used in a per-example `adapter_names` list for examples that should see the base model only.
BASE_ADAPTER_NAME = "__base__"

AdapterNames = Union[None, str, Sequence[str]]

#: The per-adapter module dicts (flat dicts of `nn.Linear`: the key layout transformers' `load_adapter`
#: renames correctly) each variant fills. Houlsby's sit on `attention.output` and `output` of the BertLayer.
VARIANT_MODULES = {
    "pal": ("pals_encoder", "pals_decoder", "pals_query", "pals_key", "pals_value"),
    "low_rank": ("pals_encoder", "pals_decoder"),
    "pal_lora": ("pals_encoder", "pals_decoder"),
    "houlsby": tuple(f"pals_{site}_adapter_{end}" for site in ("attention", "output") for end in ("down", "up")),
}
PAL_TYPES = tuple(VARIANT_MODULES)
#: Variants that add TS(h_l) before the output LayerNorm; the others act inside the output sub-layers.
PARALLEL_TYPES = ("pal", "low_rank", "pal_lora")
HOULSBY_TYPES = ("houlsby",)


class PALLayer(nn.Module, BaseTunerLayer):
    """Wraps one `BertLayer` and adds, per adapter (task), the modules of its variant (`pals_type`).

    A PAL holds V_E (`pals_encoder`), V_D (`pals_decoder`) and MH's projections (`pals_query`,
    `pals_key`, `pals_value`); "low_rank" and "pal_lora" hold V_E/V_D only, "houlsby" a down/up pair per
    output sub-layer (`VARIANT_MODULES`). With `share_projections`, V_E/V_D are the same module objects in
    every wrapped layer of that adapter, so they are one set of parameters; PEFT's state dict then lists
    them once per layer, and loading writes the same values into the same tensors.

    `adapter_layer_names` starts as the PAL dicts; a layer that gets an adapter of a variant with other
    dicts adds them to its own tuple (as PEFT's LoRA does for DoRA's magnitude vectors), so PEFT's
    `set_adapter`/`delete_adapter` see them.

    The task is chosen per call by the `adapter_names` forward argument (injected by
    `PALModel`'s forward hooks): a name for the whole batch, or one name per example for mixed-task
    batches. Without it the active adapters apply (their changes add up, as PEFT does for LoRA).
    """

    adapter_layer_names = VARIANT_MODULES["pal"]
    other_param_names = ("pals_type", "pals_num_heads", "pals_dropout")

    def __init__(self, base_layer: nn.Module, **kwargs) -> None:
        super().__init__()
        for part in ("attention", "intermediate", "output"):
            if not hasattr(base_layer, part):
                raise TypeError(
                    f"PALs wrap BERT-style encoder layers with .attention/.intermediate/.output; "
                    f"{type(base_layer).__name__} has no .{part}"
                )
        if getattr(base_layer, "is_decoder", False) or getattr(base_layer, "add_cross_attention", False):
            raise TypeError("PALs support encoder layers only (is_decoder/add_cross_attention must be False)")
        self.base_layer = base_layer
        for name in dict.fromkeys(chain(*VARIANT_MODULES.values())):
            setattr(self, name, nn.ModuleDict())
        self.pals_type: dict[str, str] = {}
        self.pals_num_heads: dict[str, int] = {}
        self.pals_dropout: dict[str, float] = {}
        self._disable_adapters = False
        self.merged_adapters = []
        self.kwargs = kwargs

    @property
    def hidden_size(self) -> int:
        return self.base_layer.output.dense.out_features

    def update_layer(
        self,
        adapter_name: str,
        adapter_size: int,
        pal_num_heads: int,
        pal_dropout: float,
        init_pal_weights: str,
        pal_type: str = "pal",
        shared: Optional[tuple[nn.Module, nn.Module]] = None,
        inference_mode: bool = False,
    ) -> None:
        """Add the modules of `adapter_name`. `adapter_size` is the bottleneck (d_s, r or m, see
        `PALConfig.resolve_adapter_size`); `shared` is the (V_E, V_D) pair already made for it."""
        if pal_type not in VARIANT_MODULES:
            raise ValueError(f"pal_type must be one of {', '.join(PAL_TYPES)}; got {pal_type!r}")
        for name, module in self._new_modules(pal_type, adapter_size, init_pal_weights, shared).items():
            getattr(self, name)[adapter_name] = module
        missing = tuple(name for name in VARIANT_MODULES[pal_type] if name not in self.adapter_layer_names)
        self.adapter_layer_names = self.adapter_layer_names + missing
        self.pals_type[adapter_name] = pal_type
        self.pals_num_heads[adapter_name] = pal_num_heads
        self.pals_dropout[adapter_name] = pal_dropout
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def _new_modules(self, pal_type: str, size: int, init: str, shared) -> dict[str, nn.Linear]:
        """The modules of one adapter of `pal_type`, keyed by the dict they go in."""
        if pal_type == "houlsby":  # (down, up) on attention.output, then (down, up) on output
            pairs = (_bottleneck(self.hidden_size, size, init) for _ in ("attention", "output"))
            return dict(zip(VARIANT_MODULES["houlsby"], chain(*pairs)))
        if shared is None:
            shared = _bottleneck(self.hidden_size, size, init)
        encoder, decoder = shared
        if encoder.in_features != self.hidden_size or encoder.out_features != size:
            raise ValueError("shared PAL projections do not fit this layer's sizes")
        modules = {"pals_encoder": encoder, "pals_decoder": decoder}
        if pal_type == "pal":
            for name in ("pals_query", "pals_key", "pals_value"):
                modules[name] = _linear(size, size, "bert")
        return modules

    def _move_adapter_to_device_of_base_layer(self, adapter_name: str, device=None) -> None:
        weight = self.base_layer.output.dense.weight
        if weight.device.type == "meta":
            return
        for name in self.adapter_layer_names:
            modules = getattr(self, name)
            if adapter_name not in modules:
                continue  # a dict of another variant
            if any(p.device.type == "meta" for p in modules[adapter_name].parameters()):
                continue  # still to be filled by a low_cpu_mem_usage load
            modules[adapter_name].to(device=device or weight.device, dtype=weight.dtype)

    def unload_and_optionally_merge_module(self, merge: bool, safe_merge: bool, adapter_names) -> nn.Module:
        """Used by `unload()`: give back the wrapped `BertLayer` (PALs cannot be merged)."""
        if merge:
            self.merge(safe_merge=safe_merge, adapter_names=adapter_names)
        return self.get_base_layer()

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        raise NotImplementedError("PALs and their variants are non-linear and cannot be merged into the BERT weights")

    def unmerge(self) -> None:
        raise NotImplementedError("PALs cannot be merged, so there is nothing to unmerge")

    def task_specific(self, adapter_name: str, hidden_states: torch.Tensor, attention_mask) -> torch.Tensor:
        """TS(h) of one parallel adapter ("pal", "low_rank" or "pal_lora"; equations in the module docstring)."""
        pal_type = self.pals_type[adapter_name]
        encoder, decoder = self.pals_encoder[adapter_name], self.pals_decoder[adapter_name]
        if pal_type == "low_rank":
            return decoder(F.gelu(encoder(hidden_states)))
        if pal_type == "pal_lora":
            return fast_dropout.dropout(decoder(encoder(hidden_states)), self.pals_dropout[adapter_name], self.training)
        projected = projected_self_attention(
            self.pals_query[adapter_name],
            self.pals_key[adapter_name],
            self.pals_value[adapter_name],
            encoder(hidden_states),
            attention_mask,
            num_heads=self.pals_num_heads[adapter_name],
            dropout=self.pals_dropout[adapter_name] if self.training else 0.0,
        )
        return F.gelu(decoder(projected))

    def houlsby_adapter(self, site: str, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        """W_up · GELU(W_down · x): what the Houlsby adapter on sub-layer `site` ("attention" for
        `attention.output`, "output" for `output`) adds to that sub-layer's output x (its skip connection)."""
        down = getattr(self, f"pals_{site}_adapter_down")[adapter_name]
        up = getattr(self, f"pals_{site}_adapter_up")[adapter_name]
        return up(F.gelu(down(x)))

    def _routed(self, change: Callable, pal_types, x, adapter_names: AdapterNames, attention_mask=None):
        """Sum of `change(name, x, attention_mask)` over the adapters of `pal_types` that apply, example by
        example; `None` if none applies.

        `adapter_names` is `None` (the active adapters), one name for the batch, or one name per example.
        In a mixed batch each name's rows run through its modules alone and are written back in place (zero
        for rows of other adapters), so the result equals running each task's rows alone."""
        if adapter_names is None or isinstance(adapter_names, str):
            names = self.active_adapters if adapter_names is None else [adapter_names]
            return self._summed(change, pal_types, x, attention_mask, names)
        if len(adapter_names) != x.shape[0]:
            raise ValueError(f"adapter_names has {len(adapter_names)} entries for a batch of {x.shape[0]} examples")
        unique = list(dict.fromkeys(adapter_names))
        if len(unique) == 1:
            return self._summed(change, pal_types, x, attention_mask, unique)
        per_row_mask = attention_mask is not None and attention_mask.shape[0] == x.shape[0]
        changes = []  # (rows, change of those rows): rows a slice for a contiguous block, else an index tensor
        for name in unique:
            if self.pals_type.get(name) not in pal_types:
                continue
            rows = _rows_of(adapter_names, name, x.device)
            take = (lambda t: t[rows]) if isinstance(rows, slice) else (lambda t: t.index_select(0, rows))
            changes.append((rows, change(name, take(x), take(attention_mask) if per_row_mask else attention_mask)))
        if not changes:
            return None
        blocks = [rows for rows, _ in changes]
        if all(isinstance(r, slice) for r in blocks) and _tile(blocks, x.shape[0]):
            return torch.cat([delta for _, delta in changes])  # tasks in contiguous blocks: no scatter
        # Rows of adapters without this kind of module stay zero. The changes' dtype, not x's: under CPU
        # autocast to bfloat16 the changes are bfloat16 while x (a LayerNorm's output) is float32.
        output = x.new_zeros(x.shape, dtype=changes[0][1].dtype)
        for rows, delta in changes:
            index = torch.arange(rows.start, rows.stop, device=x.device) if isinstance(rows, slice) else rows
            output.index_copy_(0, index, delta.to(output.dtype))
        return output

    def _summed(self, change: Callable, pal_types, x, attention_mask, names) -> Optional[torch.Tensor]:
        """Sum of `change` over `names` for the whole batch (the adapters of `pal_types` on this layer)."""
        total = None
        for name in names:
            if self.pals_type.get(name) in pal_types:  # not BASE_ADAPTER_NAME, nor an adapter of other layers
                delta = change(name, x, attention_mask)
                total = delta if total is None else total + delta
        return total

    def _output_sublayer(self, site: str, sublayer: nn.Module, x, input_tensor, adapter_names: AdapterNames):
        """`BertSelfOutput`/`BertOutput`, LN(dropout(dense(x)) + input_tensor), with the Houlsby adapters of
        `site` applied to dropout(dense(x)) before the residual LayerNorm (Houlsby et al., Figure 2)."""
        y = sublayer.dropout(sublayer.dense(x))
        change = self._routed(
            lambda name, rows, _mask: self.houlsby_adapter(site, name, rows), HOULSBY_TYPES, y, adapter_names
        )
        if change is not None:
            y = y + change
        return sublayer.LayerNorm(y + input_tensor)

    def _adapted_forward(self, hidden_states, attention_mask=None, *args, adapter_names: AdapterNames, **kwargs):
        """The BertLayer's computation written out from its pieces, so adapters can sit between them:
        a = attention.output(SA(h)), h_{l+1} = output(intermediate(a), a + TS(h)). With no adapter applying
        it does exactly what the BertLayer does."""
        base = self.base_layer
        context, _ = base.attention.self(hidden_states, attention_mask, **kwargs)
        attention_output = self._output_sublayer(
            "attention", base.attention.output, context, hidden_states, adapter_names
        )
        ts = self._routed(self.task_specific, PARALLEL_TYPES, hidden_states, adapter_names, attention_mask)
        residual = attention_output if ts is None else attention_output + ts
        intermediate = base.intermediate(attention_output)
        return self._output_sublayer("output", base.output, intermediate, residual, adapter_names)

    def forward(self, hidden_states: torch.Tensor, *args, adapter_names: AdapterNames = None, **kwargs):
        if self.disable_adapters or not self.pals_type:
            return self.base_layer(hidden_states, *args, **kwargs)
        kwargs.pop("encoder_attention_mask", None)
        if len(args) > 1:
            if args[1] is not None:  # encoder_hidden_states: cross-attention is not supported
                raise ValueError("PALs support encoder layers only; got encoder_hidden_states")
            args = args[:1]
        kwargs.pop("past_key_values", None)
        forward = partial(self._adapted_forward, adapter_names=adapter_names, **kwargs)
        base = self.base_layer
        if getattr(base, "gradient_checkpointing", False) and self.training:
            # The base layer checkpoints its own `forward`, which this path does not call, so the wrapper
            # checkpoints itself with the function the model installed (reentrant or not). The routing is
            # bound into `forward` so the recomputation in backward sees the same tasks.
            return base._gradient_checkpointing_func(forward, hidden_states, *args)
        return forward(hidden_states, *args)

    def __repr__(self) -> str:
        return "pals." + super().__repr__()


def _rows_of(adapter_names: Sequence[str], name: str, device):
    """The rows of `name` in a per-example `adapter_names`: a slice when they form one contiguous block
    (a batch grouped by task, as `MultiTaskPredictor.predict_mixed` orders each batch before
    `MultiTaskCollator.encode_mixed`, or a single-task batch: slicing takes a view instead of copying the
    rows out), else a tensor of row indices."""
    rows = [i for i, n in enumerate(adapter_names) if n == name]
    if rows[-1] - rows[0] + 1 == len(rows):
        return slice(rows[0], rows[-1] + 1)
    return torch.tensor(rows, device=device)


def _tile(blocks: Sequence[slice], length: int) -> bool:
    """Whether the slices, in order, cover rows 0..length-1 exactly once (so their changes concatenate)."""
    position = 0
    for block in blocks:
        if block.start != position:
            return False
        position = block.stop
    return position == length


def _linear(in_features: int, out_features: int, scheme: str) -> nn.Linear:
    """A `Linear` with BERT's initialisation N(0, 0.02) and zero bias, or all zeros (scheme "zeros")."""
    linear = nn.Linear(in_features, out_features)
    if scheme == "zeros":
        nn.init.zeros_(linear.weight)
    else:
        nn.init.normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)
    return linear


def _bottleneck(hidden_size: int, size: int, init: str) -> tuple[nn.Linear, nn.Linear]:
    """(down d -> size, BERT init; up size -> d, initialised by `init`): V_E/V_D, W1/W2 or W_down/W_up."""
    return _linear(hidden_size, size, "bert"), _linear(size, hidden_size, init)


def _bottleneck_parameter_count(hidden_size: int, size: int) -> int:
    """Weights and biases of one down/up pair: d·s + s + s·d + d."""
    return 2 * hidden_size * size + size + hidden_size


def pal_parameter_count(hidden_size: int, pal_hidden_size: int, num_layers: int, share_projections: bool) -> int:
    """Trainable parameters of one task's PALs: V_E, V_D (once, or per layer) and one MH per layer.

    V_E: d·d_s + d_s, V_D: d_s·d + d, MH: 3 (d_s² + d_s). With BERT-base (d=768, d_s=204, 12 layers,
    shared projections) this is 1,819,836, the paper's "about 1.8M per task".
    """
    projections = low_rank_parameter_count(hidden_size, pal_hidden_size, num_layers, share_projections)
    attention = 3 * (pal_hidden_size * pal_hidden_size + pal_hidden_size)
    return projections + attention * num_layers


def low_rank_parameter_count(hidden_size: int, pal_hidden_size: int, num_layers: int, share_projections: bool) -> int:
    """Trainable parameters of one task's low-rank layers: V_E and V_D, 2·d·d_s + d_s + d, once or per layer."""
    return _bottleneck_parameter_count(hidden_size, pal_hidden_size) * (1 if share_projections else num_layers)


def pal_lora_parameter_count(hidden_size: int, rank: int, num_layers: int) -> int:
    """Trainable parameters of one task's PAL-LoRA: W1, b1, W2, b2 per layer, L·(2·d·r + r + d)."""
    return _bottleneck_parameter_count(hidden_size, rank) * num_layers


def houlsby_parameter_count(hidden_size: int, houlsby_size: int, num_layers: int) -> int:
    """Trainable parameters of one task's Houlsby adapters: two per layer, L·2·(2·d·m + m + d)."""
    return 2 * _bottleneck_parameter_count(hidden_size, houlsby_size) * num_layers


__all__ = [
    "PALLayer",
    "PAL_TYPES",
    "projected_self_attention",
    "BASE_ADAPTER_NAME",
    "pal_parameter_count",
    "low_rank_parameter_count",
    "pal_lora_parameter_count",
    "houlsby_parameter_count",
]
