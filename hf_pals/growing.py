"""Grow a trained model: new tasks on a saved bundle, each costing one PAL adapter and a head.

The PALs paper's argument for adapters (Stickland & Murray, 2019, section 1): the shared encoder and the
old tasks' adapters stay as they are, so a new task adds only its own small set of parameters. With
`freeze: [encoder, <old tasks>]` the old tasks' outputs stay bit-identical and the grown bundle differs
from the old one by the new tasks' files alone (`adapters/<new>/` and their tensors in heads.safetensors).

`grow_model` only reads the bundle it starts from; every check runs before anything is built, and nothing
is ever written to `init_from`, so a bad recipe leaves the trained bundle as it was.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from .bundle import BUNDLE_CONFIG_NAME, bundle_has_adapters, read_bundle_config
from .modeling import MultiTaskModel
from .tasks import TaskSpec
from .tuner import PALConfig

#: The TaskSpec fields a task already in the bundle must keep: they fix its head's shape and what its
#: trained weights mean (the others, such as loss, metric or dropout, may change between runs).
ESSENTIAL_FIELDS = ("kind", "num_labels", "text_columns", "pair_encoding", "head", "pooling", "top_layer", "label_max")


def grow_model(
    init_from: str,
    tasks: dict[str, TaskSpec],
    pal_config: Optional[PALConfig],
    freeze: Sequence[str] = (),
    base_model: Optional[str] = None,
    max_length: Optional[int] = None,
) -> MultiTaskModel:
    """The bundle at `init_from`, loaded trainable, with the tasks of `tasks` it lacks added
    (`MultiTaskModel.add_task`, each a fresh adapter from `pal_config` and a fresh head) and `freeze`
    applied (`MultiTaskModel.freeze`: "encoder" and/or task names of the result).

    `tasks` are the recipe's tasks; one the bundle already has must agree with it on `ESSENTIAL_FIELDS`,
    and keeps its trained adapter and head (trained further unless frozen). `base_model`, the recipe's
    base, must be the bundle's `base_model_name_or_path`. `pal_config` must be None for a bundle without
    adapters. `max_length`, if given, replaces the bundle's. Whether the bundle saved its encoder
    (`freeze_encoder`) is kept: an encoder trained before stays in encoder/ of the grown bundle, a base
    encoder stays the base (and does not train).
    """
    config = read_bundle_config(init_from)
    config_path = os.path.join(init_from, BUNDLE_CONFIG_NAME)
    bundle_base = config["base_model_name_or_path"]
    if base_model is not None and base_model != bundle_base:
        raise ValueError(
            f"the recipe's base model {base_model!r} is not the base of the bundle at {init_from}: {config_path} "
            f"has base_model_name_or_path {bundle_base!r}. Its adapters and encoder only fit that base; "
            "use it as the recipe's base model"
        )
    for name, spec in tasks.items():
        if name in config["tasks"]:
            check_same_task(name, spec, TaskSpec.from_dict(name, config["tasks"][name]), config_path)
    if pal_config is not None and not bundle_has_adapters(config):
        raise ValueError(
            f"{config_path}: the bundle has no adapters (\"adapters\": false), so new tasks get a head only; "
            "pass no pal_config (recipe adapter: none)"
        )
    valid = ["encoder", *config["tasks"], *(t for t in tasks if t not in config["tasks"])]
    unknown = [part for part in freeze if part not in valid]
    if unknown:
        raise ValueError(f"freeze: unknown part(s) {unknown}; valid parts are {valid}")

    model = MultiTaskModel.from_pretrained(init_from, is_trainable=True)
    for name, spec in tasks.items():
        if name in model.tasks:
            model.tasks[name] = spec  # same essentials; the recipe's loss, metric, label names apply
            model.heads[name].task = spec
            if hasattr(model.heads[name], "dropout"):
                model.heads[name].dropout.p = spec.dropout
        else:
            model.add_task(spec, pal_config)
    if max_length is not None:
        model.max_length = max_length
    model.freeze(list(freeze))
    return model


def check_same_task(name: str, spec: TaskSpec, saved: TaskSpec, config_path: str) -> None:
    """Refuse a recipe task that differs from the bundle's task of the same name in an essential field."""
    for field in ESSENTIAL_FIELDS:
        ours, theirs = getattr(spec, field), getattr(saved, field)
        if ours != theirs:
            raise ValueError(
                f"task {name!r}: the recipe has {field} {ours!r}, the bundle ({config_path}) has {theirs!r}; "
                f"a task the bundle already has must keep its {field} (or give the new task another name)"
            )


__all__ = ["grow_model", "check_same_task", "ESSENTIAL_FIELDS"]
