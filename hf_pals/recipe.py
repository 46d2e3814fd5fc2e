"""Training recipes: a YAML file with the model, tasks, adapter, sampling and `TrainingArguments`.

Every field is checked when the recipe is read, and an error names the file and the field, so a typo
fails at once rather than an hour into a run. `--set section.key=value` overrides any field.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field, fields
from typing import Any, Optional

import yaml
from transformers import TrainingArguments

from .tasks import CS224N_TASKS, TaskSpec, cs224n_task
from .tuner import PALConfig

DEFAULT_DATA_DIR_ENV = "HF_PALS_DATA_DIR"


class RecipeError(ValueError):
    """A recipe field is missing, unknown or has a bad value."""


@dataclass
class DataSection:
    format: str = "cs224n"
    dir: Optional[str] = None
    on_bad_rows: str = "raise"
    max_train_examples: dict[str, int] = field(default_factory=dict)
    max_eval_examples: dict[str, int] = field(default_factory=dict)


@dataclass
class SamplingSection:
    name: str = "annealed"
    steps_per_epoch: Optional[int] = None


@dataclass
class Recipe:
    """A parsed recipe. `tasks` maps a CS224N task name to overrides of its `TaskSpec` fields."""

    base_model: str
    tasks: dict[str, dict[str, Any]]
    output_dir: str = "runs/hf_pals"
    data: DataSection = field(default_factory=DataSection)
    adapter: dict[str, Any] = field(default_factory=dict)
    freeze_encoder: bool = False
    max_length: int = 128
    sampling: SamplingSection = field(default_factory=SamplingSection)
    learning_rates: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    eval_batch_size: int = 128
    source: str = "<recipe>"

    def task_specs(self) -> dict[str, TaskSpec]:
        try:
            return {name: cs224n_task(name, **(overrides or {})) for name, overrides in self.tasks.items()}
        except ValueError as err:
            raise RecipeError(f"{self.source}: tasks: {err}") from err

    def pal_config(self) -> PALConfig:
        try:
            return PALConfig(**self.adapter)
        except (TypeError, ValueError) as err:
            raise RecipeError(f"{self.source}: adapter: {err}") from err

    def training_arguments(self) -> TrainingArguments:
        values = {"output_dir": self.output_dir, "report_to": "none", **self.training}
        try:
            return TrainingArguments(**values)
        except (TypeError, ValueError) as err:
            raise RecipeError(f"{self.source}: training: {err}") from err

    def data_dir(self) -> str:
        data_dir = self.data.dir or os.environ.get(DEFAULT_DATA_DIR_ENV)
        if not data_dir:
            raise RecipeError(f"{self.source}: data.dir is not set (pass --data-dir or set {DEFAULT_DATA_DIR_ENV})")
        return data_dir


def _build(cls, values: Any, where: str):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {unknown}; known fields are {sorted(known)}")
    return cls(**values)


def parse_recipe(values: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Check and build a `Recipe` from a mapping (a loaded YAML document)."""
    if not isinstance(values, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of sections")
    values = copy.deepcopy(values)
    for required in ("base_model", "tasks"):
        if required not in values:
            raise RecipeError(f"{source}: missing required field {required!r}")
    values["data"] = _build(DataSection, values.get("data"), f"{source}: data")
    values["sampling"] = _build(SamplingSection, values.get("sampling"), f"{source}: sampling")
    recipe = _build(Recipe, {**values, "source": source}, source)
    if not isinstance(recipe.tasks, dict) or not recipe.tasks:
        raise RecipeError(f"{source}: tasks must be a non-empty mapping of task name -> overrides")
    unknown = sorted(set(recipe.tasks) - set(CS224N_TASKS))
    if unknown:
        raise RecipeError(f"{source}: tasks: unknown task(s) {unknown}; known tasks are {sorted(CS224N_TASKS)}")
    if recipe.data.format != "cs224n":
        raise RecipeError(f"{source}: data.format must be 'cs224n', got {recipe.data.format!r}")
    if recipe.data.on_bad_rows not in ("raise", "skip"):
        raise RecipeError(f"{source}: data.on_bad_rows must be 'raise' or 'skip', got {recipe.data.on_bad_rows!r}")
    if recipe.sampling.name != "annealed":
        raise RecipeError(f"{source}: sampling.name must be 'annealed', got {recipe.sampling.name!r}")
    bad_groups = sorted(set(recipe.learning_rates) - {"encoder", "adapters", "heads"})
    if bad_groups:
        raise RecipeError(f"{source}: learning_rates: unknown group(s) {bad_groups}; use encoder, adapters, heads")
    training_fields = {f.name for f in fields(TrainingArguments)}
    unknown = sorted(set(recipe.training) - training_fields)
    if unknown:
        raise RecipeError(f"{source}: training: unknown TrainingArguments field(s) {unknown}")
    if not recipe.training.get("max_steps"):
        raise RecipeError(f"{source}: training.max_steps must be set (epochs are counted in steps)")
    recipe.task_specs()
    recipe.pal_config()
    return recipe


def apply_override(values: dict[str, Any], assignment: str, source: str = "--set") -> None:
    """Apply `section.key=value` (the value parsed as YAML) to a recipe mapping in place."""
    if "=" not in assignment:
        raise RecipeError(f"{source}: expected KEY=VALUE, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise RecipeError(f"{source}: empty key in {assignment!r}")
    target = values
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise RecipeError(f"{source}: {key!r} goes through a non-mapping field")
    target[parts[-1]] = yaml.safe_load(raw)


def load_recipe(path: str, overrides: Optional[list[str]] = None) -> Recipe:
    """Read a recipe file, apply `overrides` ("a.b=value"), and check it."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"recipe {path} not found")
    with open(path) as f:
        try:
            values = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise RecipeError(f"{path}: not valid YAML ({err})") from err
    values = values or {}
    for assignment in overrides or []:
        apply_override(values, assignment)
    return parse_recipe(values, source=path)
