"""`PALModel`: the PEFT tuner that puts a `PALLayer` around each targeted BERT layer.

Like PEFT's own tuners it only decides where layers go (`_create_and_replace`) and how a forward
argument reaches them (`_enable_peft_forward_hooks`, as LoRA does for `adapter_names`). It keeps no
state of its own: V_E/V_D of a task are shared by pointing every layer at the same modules, so the
adapters also load through transformers' `load_adapter` (which refuses `uses_shared_state` tuners).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from .config import PALConfig
from .layer import BASE_ADAPTER_NAME, PALLayer


class PALModel(BaseTuner):
    """Creates Projected Attention Layers (Stickland & Murray, 2019), or the variant `PALConfig.pal_type`
    names, on a BERT-family encoder. Adapters of different variants can live side by side in one model.

    Example:
        >>> import hf_pals
        >>> from peft import get_peft_model
        >>> from transformers import AutoModel
        >>> bert = AutoModel.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
        >>> model = get_peft_model(bert, hf_pals.PALConfig(), adapter_name="sst")
        >>> model.add_adapter("quora", hf_pals.PALConfig())
        >>> out = model(**batch, adapter_names=["sst", "quora", ...])  # one task per example
    """

    prefix: str = "pals_"
    tuner_layer_cls = PALLayer
    target_module_mapping: dict = {}

    def _prepare_adapter_config(self, peft_config: PALConfig, model_config: dict) -> PALConfig:
        return peft_config  # target_modules is always set by PALConfig.__post_init__

    def _shared_projections(self, adapter_name: str) -> Optional[tuple[nn.Module, nn.Module]]:
        """The V_E/V_D modules an earlier layer of this adapter already made, if any."""
        for module in self.model.modules():
            if isinstance(module, PALLayer) and adapter_name in module.pals_encoder:
                return module.pals_encoder[adapter_name], module.pals_decoder[adapter_name]
        return None

    def _create_and_replace(self, peft_config: PALConfig, adapter_name, target, target_name, parent, current_key, **kwargs):
        base = target.get_base_layer() if isinstance(target, PALLayer) else target
        if not hasattr(base, "output") or not hasattr(base.output, "dense"):
            raise TypeError(
                f"PALConfig.target_modules matched {current_key!r} ({type(base).__name__}), which is not a "
                "BERT-style encoder layer"
            )
        hidden_size = base.output.dense.out_features
        shared = self._shared_projections(adapter_name) if peft_config.shares_projections else None
        layer_kwargs = dict(
            pal_type=peft_config.pal_type,
            adapter_size=peft_config.resolve_adapter_size(hidden_size),
            pal_num_heads=peft_config.pal_num_heads,
            pal_dropout=peft_config.pal_dropout,
            init_pal_weights=peft_config.init_pal_weights,
            shared=shared,
            inference_mode=peft_config.inference_mode,
        )
        if isinstance(target, PALLayer):
            target.update_layer(adapter_name, **layer_kwargs)
            target.train(target.base_layer.training)
            return
        new_module = PALLayer(target)
        new_module.update_layer(adapter_name, **layer_kwargs)
        new_module.train(target.training)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _replace_module(self, parent, child_name, new_module, child) -> None:
        """Swap a layer in or out. PEFT's default copies `.weight`/`.bias` for single-weight layers such
        as `Linear`; a `BertLayer` has neither, and `PALLayer.update_layer` already placed the adapter
        on the base layer's device."""
        setattr(parent, child_name, new_module)

    @contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        """Route `adapter_names` (a task for the batch, or one per example) to every PAL layer."""
        adapter_names = kwargs.pop("adapter_names", None)
        if adapter_names is None:
            yield
            return
        known = set(self.peft_config) | {BASE_ADAPTER_NAME}
        requested = {adapter_names} if isinstance(adapter_names, str) else set(adapter_names)
        unknown = sorted(requested - known)
        if unknown:
            raise ValueError(f"unknown adapter(s) {unknown}; this model has {sorted(self.peft_config)}")

        def pre_hook(_module, args, hook_kwargs):
            hook_kwargs["adapter_names"] = adapter_names
            return args, hook_kwargs

        handles = [
            module.register_forward_pre_hook(pre_hook, with_kwargs=True)
            for module in self.model.modules()
            if isinstance(module, PALLayer)
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
