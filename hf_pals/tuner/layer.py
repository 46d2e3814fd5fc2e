"""The task-specific function TS of a Projected Attention Layer and the `BertLayer` wrapper that adds it.

Paper: Stickland & Murray, ICML 2019. With the paper's code (`BERTPals` / `BERTOutput`):

    a       = LN(h_l + SA(h_l))                      BertAttention, unchanged
    h_{l+1} = LN(FFN(a) + a + TS(h_l))               TS added before the output LayerNorm
    TS(h)   = GELU(V_D · MH(V_E · h))                MH: self-attention in the projected space

`BertOutput(x, input_tensor)` computes LN(dropout(dense(x)) + input_tensor), so passing
`input_tensor = a + TS(h_l)` gives the equation above without touching the base layer's code.
"""

from __future__ import annotations

from functools import partial
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

#: Name used in a per-example `adapter_names` list for examples that should see the base model only.
BASE_ADAPTER_NAME = "__base__"

AdapterNames = Union[None, str, Sequence[str]]


def projected_self_attention(query, key, value, x, attention_mask, num_heads: int, dropout: float):
    """MH of the paper: multi-head self-attention in the d_s space, without an output projection
    (V_D plays that role). Attention goes through `scaled_dot_product_attention`, which takes the
    bool, additive-float or `None` masks that transformers 5.x hands to a layer."""
    batch, length, width = x.shape
    head_dim = width // num_heads

    def split(t):
        return t.view(batch, length, num_heads, head_dim).transpose(1, 2)

    context = F.scaled_dot_product_attention(
        split(query(x)), split(key(x)), split(value(x)), attn_mask=attention_mask, dropout_p=dropout
    )
    return context.transpose(1, 2).reshape(batch, length, width)


class PALLayer(nn.Module, BaseTunerLayer):
    """Wraps one `BertLayer` and adds, per adapter (task), TS(h_l) before its output LayerNorm.

    Per adapter it holds V_E (`pals_encoder`), V_D (`pals_decoder`) and MH's projections (`pals_query`,
    `pals_key`, `pals_value`; flat `ModuleDict`s of `Linear`, the key layout transformers' adapter loader
    renames correctly). With
    `share_projections`, V_E/V_D are the same module objects in every wrapped layer of that adapter, so
    they are one set of parameters; PEFT's state dict then lists them once per layer, and loading writes
    the same values into the same tensors.

    The task is chosen per call by the `adapter_names` forward argument (injected by
    `PALModel`'s forward hooks): a name for the whole batch, or one name per example for mixed-task
    batches. Without it the active adapters apply (their TS outputs add up, as PEFT does for LoRA).
    """

    adapter_layer_names = ("pals_encoder", "pals_decoder", "pals_query", "pals_key", "pals_value")
    other_param_names = ("pals_num_heads", "pals_dropout")

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
        self.pals_encoder = nn.ModuleDict()
        self.pals_decoder = nn.ModuleDict()
        self.pals_query = nn.ModuleDict()
        self.pals_key = nn.ModuleDict()
        self.pals_value = nn.ModuleDict()
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
        pal_hidden_size: int,
        pal_num_heads: int,
        pal_dropout: float,
        init_pal_weights: str,
        shared: Optional[tuple[nn.Module, nn.Module]] = None,
        inference_mode: bool = False,
    ) -> None:
        """Add the modules of `adapter_name`; `shared` is the (V_E, V_D) pair already made for it."""
        if shared is None:
            encoder = nn.Linear(self.hidden_size, pal_hidden_size)
            decoder = nn.Linear(pal_hidden_size, self.hidden_size)
            _init_linear(encoder, "bert")
            _init_linear(decoder, init_pal_weights)
        else:
            encoder, decoder = shared
            if encoder.in_features != self.hidden_size or encoder.out_features != pal_hidden_size:
                raise ValueError(f"shared PAL projections of {adapter_name!r} do not fit this layer's sizes")
        self.pals_encoder[adapter_name] = encoder
        self.pals_decoder[adapter_name] = decoder
        for module_dict in (self.pals_query, self.pals_key, self.pals_value):
            module_dict[adapter_name] = nn.Linear(pal_hidden_size, pal_hidden_size)
            _init_linear(module_dict[adapter_name], "bert")
        self.pals_num_heads[adapter_name] = pal_num_heads
        self.pals_dropout[adapter_name] = pal_dropout
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def _move_adapter_to_device_of_base_layer(self, adapter_name: str, device=None) -> None:
        weight = self.base_layer.output.dense.weight
        if weight.device.type == "meta":
            return
        for name in self.adapter_layer_names:
            module = getattr(self, name)[adapter_name]
            if any(p.device.type == "meta" for p in module.parameters()):
                continue  # still to be filled by a low_cpu_mem_usage load
            module.to(device=device or weight.device, dtype=weight.dtype)

    def unload_and_optionally_merge_module(self, merge: bool, safe_merge: bool, adapter_names) -> nn.Module:
        """Used by `unload()`: give back the wrapped `BertLayer` (PALs cannot be merged)."""
        if merge:
            self.merge(safe_merge=safe_merge, adapter_names=adapter_names)
        return self.get_base_layer()

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        raise NotImplementedError("PALs are a non-linear branch and cannot be merged into the BERT weights")

    def unmerge(self) -> None:
        raise NotImplementedError("PALs cannot be merged, so there is nothing to unmerge")

    def task_specific(self, adapter_name: str, hidden_states: torch.Tensor, attention_mask) -> torch.Tensor:
        """TS(h) = GELU(V_D · MH(V_E · h)) for one adapter."""
        projected = self.pals_encoder[adapter_name](hidden_states)
        projected = projected_self_attention(
            self.pals_query[adapter_name],
            self.pals_key[adapter_name],
            self.pals_value[adapter_name],
            projected,
            attention_mask,
            num_heads=self.pals_num_heads[adapter_name],
            dropout=self.pals_dropout[adapter_name] if self.training else 0.0,
        )
        return F.gelu(self.pals_decoder[adapter_name](projected))

    def _routed_task_specific(self, hidden_states, attention_mask, adapter_names) -> Optional[torch.Tensor]:
        """Sum of TS over the adapters that apply, example by example; `None` if none applies."""
        if isinstance(adapter_names, str):
            names = [adapter_names]
        elif adapter_names is None:
            names = list(self.active_adapters)
        else:
            return self._mixed_batch_task_specific(hidden_states, attention_mask, adapter_names)
        total = None
        for name in names:
            if name == BASE_ADAPTER_NAME or name not in self.pals_encoder:
                continue
            ts = self.task_specific(name, hidden_states, attention_mask)
            total = ts if total is None else total + ts
        return total

    def _mixed_batch_task_specific(self, hidden_states, attention_mask, adapter_names) -> Optional[torch.Tensor]:
        """One TS per example, chosen by `adapter_names[i]`: each task's rows run through its own
        modules and are written back in place, so the result equals running each task's rows alone."""
        if len(adapter_names) != hidden_states.shape[0]:
            raise ValueError(
                f"adapter_names has {len(adapter_names)} entries for a batch of {hidden_states.shape[0]} examples"
            )
        unique = list(dict.fromkeys(adapter_names))
        if len(unique) == 1:
            return self._routed_task_specific(hidden_states, attention_mask, unique[0])
        output = None
        for name in unique:
            if name == BASE_ADAPTER_NAME or name not in self.pals_encoder:
                continue
            rows = torch.tensor([i for i, n in enumerate(adapter_names) if n == name], device=hidden_states.device)
            mask = attention_mask
            if mask is not None and mask.shape[0] == hidden_states.shape[0]:
                mask = mask.index_select(0, rows)
            ts = self.task_specific(name, hidden_states.index_select(0, rows), mask)
            if output is None:
                output = hidden_states.new_zeros(hidden_states.shape)
            output = output.index_copy(0, rows, ts)
        return output

    def _adapted_forward(self, hidden_states, attention_mask=None, *args, adapter_names: AdapterNames, **kwargs):
        base = self.base_layer
        attention_output, _ = base.attention(hidden_states, attention_mask, **kwargs)
        ts = self._routed_task_specific(hidden_states, attention_mask, adapter_names)
        residual = attention_output if ts is None else attention_output + ts
        return base.output(base.intermediate(attention_output), residual)

    def forward(self, hidden_states: torch.Tensor, *args, adapter_names: AdapterNames = None, **kwargs):
        if self.disable_adapters or not self.pals_encoder:
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


def _init_linear(linear: nn.Linear, scheme: str) -> None:
    """BERT's initialisation N(0, 0.02) with zero bias, or all zeros (scheme "zeros")."""
    if scheme == "zeros":
        nn.init.zeros_(linear.weight)
    else:
        nn.init.normal_(linear.weight, std=0.02)
    nn.init.zeros_(linear.bias)


def pal_parameter_count(hidden_size: int, pal_hidden_size: int, num_layers: int, share_projections: bool) -> int:
    """Trainable parameters of one task's PALs: V_E, V_D (once, or per layer) and one MH per layer.

    V_E: d·d_s + d_s, V_D: d_s·d + d, MH: 3 (d_s² + d_s). With BERT-base (d=768, d_s=204, 12 layers,
    shared projections) this is 1,819,836, the paper's "about 1.8M per task".
    """
    projections = hidden_size * pal_hidden_size + pal_hidden_size + pal_hidden_size * hidden_size + hidden_size
    attention = 3 * (pal_hidden_size * pal_hidden_size + pal_hidden_size)
    return projections * (1 if share_projections else num_layers) + attention * num_layers


__all__ = ["PALLayer", "projected_self_attention", "BASE_ADAPTER_NAME", "pal_parameter_count"]
