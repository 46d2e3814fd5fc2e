"""A uniform model soup (Wortsman et al., 2022): the tensor-wise mean of several fine-tuned bundles.

    hf-pals soup runs/seed-1 runs/seed-2 runs/seed-3 --output-dir runs/soup
    hf_pals.soup.uniform_soup(["runs/seed-1", "runs/seed-2"], "runs/soup")

Models fine-tuned from the same pretrained weights tend to lie in one basin of the loss, so the mean of
their weights is usually a model at least as good as the average ingredient, at the cost of one model
at inference (unlike an ensemble). Here the ingredients are bundles of the same recipe trained with
different seeds (`hf-pals train --seeds`) or settings.

Every ingredient must have the same base model, tasks (every field), adapter configs, `freeze_encoder`,
`max_length` and weights files with the same tensor names and shapes: these are checked from the files
before any model is built, and an error names the bundle and the first field or tensor that differs.
Nothing is written on an error: the soup is built in a temporary folder next to OUTPUT_DIR and moved
there at the end; OUTPUT_DIR must not exist yet (or be empty).

The soup is a normal bundle (`MultiTaskModel.save_pretrained`: encoder, adapters, heads,
hf_pals_config.json, the pipeline marker config.json, the first ingredient's tokenizer) whose every
floating-point tensor is the mean of the ingredients' (summed in float64, so a soup of one bundle, or of
identical tensors such as a frozen encoder, is bit-identical). Other tensors (integer buffers) must be
equal. `soup.json` in OUTPUT_DIR lists the ingredients (and their dev "overall" when they have an
eval_results.json); evaluate the soup with `hf-pals evaluate OUTPUT_DIR`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Optional, Sequence

import torch

from .bundle import (
    ADAPTER_WEIGHTS_NAME,
    ENCODER_DIR,
    ENCODER_WEIGHTS_NAME,
    EVAL_RESULTS_NAME,
    HEADS_NAME,
    adapter_dir,
    bundle_has_adapters,
    check_bundle_files,
    read_bundle_config,
    weight_shapes,
    weights_file,
)

SOUP_RECORD_NAME = "soup.json"
#: hf_pals_config.json fields every ingredient must share (hf_pals_version may differ).
SHARED_FIELDS = ("base_model_name_or_path", "freeze_encoder", "adapters", "max_length", "tasks")
#: adapter_config.json fields that do not change what the weights mean (the base is hf_pals_config.json's, and
#: a bundle saved from a loaded bundle can carry the path of that bundle's encoder/ folder here instead).
_ADAPTER_FIELDS_IGNORED = ("inference_mode", "peft_version", "base_model_name_or_path")


class SoupError(ValueError):
    """The bundles cannot be souped (they differ), or the output folder is taken."""


def _first_difference(a: Any, b: Any, where: str) -> Optional[str]:
    """The dotted path of the first field where `a` and `b` differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{where}.{key}"
            found = _first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    return None if a == b else where


def _adapter_config(model_dir: str, task: str) -> dict:
    with open(os.path.join(adapter_dir(model_dir, task), "adapter_config.json")) as f:
        values = json.load(f)
    return {k: v for k, v in values.items() if k not in _ADAPTER_FIELDS_IGNORED}


def _weight_files(model_dir: str, config: dict, allow_pickle: bool) -> dict[str, dict[str, tuple]]:
    """Bundle-relative weights file -> {tensor name: shape}."""
    files = {HEADS_NAME: weights_file(model_dir, HEADS_NAME, allow_pickle)}
    for task in config["tasks"] if bundle_has_adapters(config) else ():
        relative = os.path.relpath(os.path.join(adapter_dir(model_dir, task), ADAPTER_WEIGHTS_NAME), model_dir)
        files[relative] = weights_file(adapter_dir(model_dir, task), ADAPTER_WEIGHTS_NAME, allow_pickle)
    if os.path.isdir(os.path.join(model_dir, ENCODER_DIR)):
        files[f"{ENCODER_DIR}/{ENCODER_WEIGHTS_NAME}"] = weights_file(
            os.path.join(model_dir, ENCODER_DIR), ENCODER_WEIGHTS_NAME, allow_pickle
        )
    return {relative: weight_shapes(path) for relative, path in files.items()}


def check_soup_ingredients(model_dirs: Sequence[str], allow_pickle: bool = False) -> dict:
    """Check that the bundles can be averaged (see the module docstring); returns the first's config."""
    if not model_dirs:
        raise SoupError("a soup needs at least one model directory")
    real = [os.path.realpath(d) for d in model_dirs]
    repeated = sorted({d for d, r in zip(model_dirs, real) if real.count(r) > 1})
    if repeated:
        raise SoupError(f"model directory {repeated[0]} is given twice")
    first = model_dirs[0]
    reference = read_bundle_config(first)
    check_bundle_files(first, list(reference["tasks"]) if bundle_has_adapters(reference) else [], allow_pickle)
    reference_files = _weight_files(first, reference, allow_pickle)
    adapter_tasks = list(reference["tasks"]) if bundle_has_adapters(reference) else []
    reference_adapters = {t: _adapter_config(first, t) for t in adapter_tasks}
    for model_dir in model_dirs[1:]:
        config = read_bundle_config(model_dir)
        for name in SHARED_FIELDS:
            field = _first_difference(reference.get(name), config.get(name), name)
            if field:
                raise SoupError(
                    f"{model_dir}: hf_pals_config.json field {field} differs from {first}'s "
                    f"({_lookup(config, field)!r} vs {_lookup(reference, field)!r}); a soup needs the same base, tasks "
                    "and settings"
                )
        check_bundle_files(model_dir, adapter_tasks, allow_pickle)
        for task in adapter_tasks:
            field = _first_difference(reference_adapters[task], _adapter_config(model_dir, task), "adapter_config")
            if field:
                raise SoupError(f"{model_dir}: the adapter config of task {task!r} differs from {first}'s at {field}")
        files = _weight_files(model_dir, config, allow_pickle)
        for relative in sorted(set(files) | set(reference_files)):
            if relative not in files or relative not in reference_files:
                which = model_dir if relative not in files else first
                raise SoupError(f"{model_dir}: weights file {relative} is missing in {which}")
            ours, theirs = files[relative], reference_files[relative]
            for tensor in sorted(set(ours) | set(theirs)):
                if ours.get(tensor) != theirs.get(tensor):
                    raise SoupError(
                        f"{model_dir}: tensor {relative}:{tensor} has shape {ours.get(tensor, 'missing')}, "
                        f"{first}'s has {theirs.get(tensor, 'missing')}"
                    )
    return reference


def _lookup(values: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(values, dict) or part not in values:
            return "<missing>"
        values = values[part]
    return values


def _check_output_dir(output_dir: str) -> None:
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise SoupError(f"output directory {output_dir} already exists and is not empty; give a new one")


def average_state_dicts(model_dirs: Sequence[str], allow_pickle: bool = False):
    """The first bundle's `MultiTaskModel` holding the tensor-wise mean of every bundle's weights."""
    from .modeling import MultiTaskModel

    model = MultiTaskModel.from_pretrained(model_dirs[0], allow_pickle=allow_pickle)
    reference = model.state_dict()
    sums = {k: v.detach().to(torch.float64, copy=True) if v.is_floating_point() else v for k, v in reference.items()}
    for model_dir in model_dirs[1:]:
        state = MultiTaskModel.from_pretrained(model_dir, allow_pickle=allow_pickle).state_dict()
        for key, value in state.items():
            if value.is_floating_point():
                sums[key] += value.double()
            elif not torch.equal(value, sums[key]):
                raise SoupError(f"{model_dir}: the non-float tensor {key} differs from {model_dirs[0]}'s")
        del state
    count = len(model_dirs)
    mean = {k: (v / count).to(reference[k].dtype) if reference[k].is_floating_point() else v for k, v in sums.items()}
    model.load_state_dict(mean, strict=True)
    return model


def uniform_soup(model_dirs: Sequence[str], output_dir: str, allow_pickle: bool = False) -> dict[str, Any]:
    """Average the bundles `model_dirs` into a new bundle `output_dir` (see the module docstring).
    Returns what `soup.json` records plus the output directory."""
    model_dirs = [str(d) for d in model_dirs]
    output_dir = str(output_dir)
    _check_output_dir(output_dir)
    check_soup_ingredients(model_dirs, allow_pickle=allow_pickle)
    model = average_state_dicts(model_dirs, allow_pickle=allow_pickle)
    tokenizer = None
    if os.path.exists(os.path.join(model_dirs[0], "tokenizer_config.json")):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dirs[0])
    record = {
        "method": "uniform",
        "ingredients": [_ingredient(d) for d in model_dirs],
        "tokenizer_from": os.path.abspath(model_dirs[0]) if tokenizer is not None else None,
    }
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".soup-", dir=parent)
    try:
        model.save_pretrained(staging, tokenizer=tokenizer)
        with open(os.path.join(staging, SOUP_RECORD_NAME), "w") as f:
            json.dump(record, f, indent=2)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)  # empty (checked above)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"output_dir": output_dir, **record}


def _ingredient(model_dir: str) -> dict[str, Any]:
    """An ingredient's path and, when it has an eval report, the report's overall score."""
    entry: dict[str, Any] = {"path": os.path.abspath(model_dir)}
    report = os.path.join(model_dir, EVAL_RESULTS_NAME)
    if os.path.isfile(report):
        with open(report) as f:
            overall = json.load(f).get("overall")
        if overall is not None:
            entry["overall"] = overall
    return entry
