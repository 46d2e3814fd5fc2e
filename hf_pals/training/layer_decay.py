"""Layer-wise learning-rate decay (LLRD) for the shared encoder.

`learning_rates: {encoder: 5e-5, adapters: 1e-3, heads: 1e-3, layer_decay: 0.9}` scales the encoder's rate
by depth, as in ULMFiT's discriminative fine-tuning (Howard & Ruder, 2018) and the BERT/ELECTRA fine-tuning
recipes (Clark et al., 2020): the lower a layer, the more general its features and the less it should move.
With L transformer layers and decay ξ,

    encoder.layer.<i>.*     lr_encoder * ξ ** (L - 1 - i)     (the top layer, i = L - 1, keeps lr_encoder)
    embeddings.*            lr_encoder * ξ ** L
    pooler and the rest     lr_encoder

Only the "encoder" group is scaled: a PAL module sitting in layer i (`...layer.<i>.pals_*`) is in the
"adapters" group and keeps the adapters' rate (the adapters are new, task-specific weights that start from
scratch, so they are not damped), and the heads (with their top layers) keep the heads' rate.
`MultiTaskTrainer.create_optimizer` puts each depth in its own optimizer group (still split by weight
decay); the LR scheduler (transformers' `LambdaLR`) multiplies each group's initial rate by the same factor,
so the ratios between depths hold for the whole run. ξ = 1 is no decay (the same groups as without it).
"""

from __future__ import annotations

import re
from typing import Any, Optional

#: The `learning_rates` key of the decay (the other keys are parameter groups).
LAYER_DECAY_KEY = "layer_decay"

_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings\.")


def check_layer_decay(value: Any, where: str = "learning_rates") -> Optional[float]:
    """The decay as a float (None when not given); 0 < decay <= 1, else a ValueError naming `where`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(
            f"{where}.{LAYER_DECAY_KEY} must be a number with 0 < layer_decay <= 1 (1: no decay), got {value!r}"
        )
    return float(value)


def decay_exponent(name: str, num_layers: int) -> int:
    """How many times the decay multiplies the encoder rate of parameter `name`: L - 1 - i for a parameter
    of `encoder.layer.<i>.`, L for the embeddings, 0 for anything else (pooler, ...)."""
    match = _LAYER.search(name)
    if match:
        index = int(match.group(1))
        if index >= num_layers:
            raise ValueError(f"parameter {name} is in layer {index}, but the encoder has {num_layers} layers")
        return num_layers - 1 - index
    if _EMBEDDINGS.search(name):
        return num_layers
    return 0


def num_encoder_layers(model) -> int:
    """L: `num_hidden_layers` of the model's encoder config (`MultiTaskModel.bert.config`, else `model.config`)."""
    config = getattr(getattr(model, "bert", None), "config", None) or getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(layers, int) or layers < 1:
        raise ValueError(f"learning_rates.{LAYER_DECAY_KEY}: the model's config has no num_hidden_layers")
    return layers
