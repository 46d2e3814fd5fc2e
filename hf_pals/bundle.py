"""The bundle's file layout and the checks a load or a push runs on its files, without building a model.

A bundle (see `hf_pals.modeling`) is a directory of:

    hf_pals_config.json                      BUNDLE_CONFIG_NAME, with the fields BUNDLE_CONFIG_FIELDS
    adapters/<task>/adapter_model.safetensors + adapter_config.json   ADAPTERS_DIR, ADAPTER_WEIGHTS_NAME
    heads.safetensors                        HEADS_NAME
    encoder/model.safetensors + config.json  ENCODER_DIR, ENCODER_WEIGHTS_NAME
    eval_results.json                        EVAL_RESULTS_NAME, the eval report `run.train` writes

`modeling.py` (which writes and loads bundles) and `hub.py` (which uploads them) both read these names
and helpers from here, so neither imports the other for them.
"""

from __future__ import annotations

import json
import os
import re

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

BUNDLE_CONFIG_NAME = "hf_pals_config.json"
HEADS_NAME = "heads.safetensors"
ADAPTERS_DIR = "adapters"
ENCODER_DIR = "encoder"
ENCODER_WEIGHTS_NAME = "model.safetensors"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
#: The pickle file each safetensors file could be replaced by (refused unless `allow_pickle=True`).
PICKLE_NAMES = {
    HEADS_NAME: "heads.bin",
    ENCODER_WEIGHTS_NAME: "pytorch_model.bin",
    ADAPTER_WEIGHTS_NAME: "adapter_model.bin",
}
#: The fields of hf_pals_config.json (keep in step with `MultiTaskModel.bundle_config`).
BUNDLE_CONFIG_FIELDS = (
    "hf_pals_version",
    "base_model_name_or_path",
    "freeze_encoder",
    "adapters",
    "max_length",
    "tasks",
)

#: The eval report `run.train` writes next to the bundle (`run.REPORT_NAME`); a push uploads it.
EVAL_RESULTS_NAME = "eval_results.json"


def adapter_dir(model_dir: str, task: str) -> str:
    """Where PEFT's `save_pretrained` puts adapter `task` inside a bundle."""
    root = os.path.join(model_dir, ADAPTERS_DIR)
    return root if task == "default" else os.path.join(root, task)


def bundle_has_adapters(config: dict) -> bool:
    """Whether a bundle config (`read_bundle_config`) has one adapter per task; bundles written before
    the "adapters" field existed always have them."""
    return config.get("adapters", True)


def read_bundle_config(model_dir: str) -> dict:
    path = os.path.join(model_dir, BUNDLE_CONFIG_NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a hf_pals model directory")
    with open(path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
    for key in ("base_model_name_or_path", "tasks"):
        if key not in config:
            raise ValueError(f"{path}: missing field {key!r}")
    unknown = sorted(set(config) - set(BUNDLE_CONFIG_FIELDS))
    if unknown:
        raise ValueError(
            f"{path}: unknown field(s) {unknown}; known fields are {list(BUNDLE_CONFIG_FIELDS)} "
            "(a typo, or a bundle written by a newer hf_pals)"
        )
    if not isinstance(config["tasks"], dict) or not config["tasks"]:
        raise ValueError(f"{path}: field 'tasks' must map task names to their settings")
    if not isinstance(bundle_has_adapters(config), bool):
        raise ValueError(f"{path}: field 'adapters' must be true or false, got {config['adapters']!r}")
    return config


# ------------------------------------------------------------------------------ load-time safety checks
def weights_file(directory: str, name: str, allow_pickle: bool = False) -> str:
    """The weights file `name` (a safetensors name) in `directory`, or with `allow_pickle` its pickle twin.

    A pickle can run arbitrary code when loaded, so a directory holding only the pickle is refused by
    default, with an error that says how to go on.
    """
    path = os.path.join(directory, name)
    if os.path.isfile(path):
        return path
    pickle_path = os.path.join(directory, PICKLE_NAMES[name])
    if os.path.isfile(pickle_path):
        if allow_pickle:
            return pickle_path
        raise ValueError(
            f"{pickle_path} is a pickle file and {name} is missing: hf_pals loads safetensors only, because "
            f"unpickling can run arbitrary code. Convert it to {name}, or pass allow_pickle=True if you trust "
            "its source."
        )
    raise FileNotFoundError(f"{path} not found")


def weight_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a weights file; a safetensors file is checked whole without reading its data."""
    if not path.endswith(".safetensors"):
        return {k: tuple(v.shape) for k, v in load_weights_file(path).items()}
    try:
        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path}: not a valid safetensors file, it may be truncated or corrupted ({err})") from err


def load_weights_file(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (errors name the file), or of a pickle that `weights_file` allowed."""
    if not path.endswith(".safetensors"):
        return torch.load(path, map_location="cpu", weights_only=True)
    weight_shapes(path)
    return load_file(path)


def check_bundle_files(model_dir: str, task_names, allow_pickle: bool = False) -> None:
    """Refuse a bundle with a missing, pickle-only or damaged weights file, naming the file.
    `task_names` are the tasks whose adapters the bundle must hold (none for a bundle without adapters)."""
    paths = [weights_file(adapter_dir(model_dir, t), ADAPTER_WEIGHTS_NAME, allow_pickle) for t in task_names]
    paths.append(weights_file(model_dir, HEADS_NAME, allow_pickle))
    encoder_dir = os.path.join(model_dir, ENCODER_DIR)
    if os.path.isdir(encoder_dir):
        paths.append(weights_file(encoder_dir, ENCODER_WEIGHTS_NAME, allow_pickle))
    for path in paths:
        weight_shapes(path)


_LAYER_INDEX = re.compile(r"\.layer\.(\d+)\.")
#: Adapter weights that read the hidden state ([out, d]: V_E, Houlsby's down) or write it ([d, in]).
_READS_HIDDEN = (".pals_encoder.", "_adapter_down.")
_WRITES_HIDDEN = (".pals_decoder.", "_adapter_up.")


def check_adapter_fits(task: str, path: str, shapes: dict, base_config) -> None:
    """Say plainly when adapter `task` was saved for a base of another width or depth than `base_config`.

    V_E (`pals_encoder.weight`) is [d_s, d] and V_D is [d, d_s] (likewise Houlsby's down/up), which gives
    the hidden size the adapter was made for; layer indices in the tensor names give the depth it needs.
    """
    base = getattr(base_config, "_name_or_path", "") or "this base"
    hidden_size, layers = base_config.hidden_size, base_config.num_hidden_layers
    for key, shape in shapes.items():
        if not key.endswith(".weight") or len(shape) != 2:
            continue
        if any(p in key for p in _READS_HIDDEN):
            saved = shape[-1]
        elif any(p in key for p in _WRITES_HIDDEN):
            saved = shape[0]
        else:
            continue
        if saved != hidden_size:
            raise ValueError(
                f"adapter {task!r} ({path}) was saved for hidden size {saved}, this base ({base}) has {hidden_size}"
            )
    indices = [int(m.group(1)) for m in map(_LAYER_INDEX.search, shapes) if m]
    if indices and max(indices) >= layers:
        raise ValueError(
            f"adapter {task!r} ({path}) was saved for a base with at least {max(indices) + 1} layers "
            f"(it has weights for layer {max(indices)}), this base ({base}) has {layers}"
        )


#: transformers' config file at a bundle's top: only `{"model_type": "hf-pals"}`, so that transformers'
#: `pipeline("hf-pals", model=BUNDLE_DIR)`, which reads `AutoConfig` before anything else, reaches the
#: registered pipeline (`hf_pals.pipeline`). Everything the model needs stays in hf_pals_config.json.
PIPELINE_MARKER_NAME = "config.json"
PIPELINE_MODEL_TYPE = "hf-pals"


def write_pipeline_marker(model_dir: str) -> str:
    """Write the bundle's `config.json` marker (see `PIPELINE_MARKER_NAME`); returns its path."""
    path = os.path.join(model_dir, PIPELINE_MARKER_NAME)
    with open(path, "w") as f:
        json.dump({"model_type": PIPELINE_MODEL_TYPE}, f, indent=2)
    return path
