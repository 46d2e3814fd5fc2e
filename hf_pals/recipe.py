"""Training recipes: a YAML file with the model, tasks, adapter, sampling and `TrainingArguments`.

Every field is checked when the recipe is read, and an error names the file and the field, so a typo
fails at once rather than an hour into a run. `--set section.key=value` overrides any field.
`extends: other.yaml` writes a recipe against another one: only the fields it changes (`read_recipe_values`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional, Sequence

import torch
import yaml
from transformers import TrainingArguments

from .data.sampling import build_task_schedule
from .data.sources import TaskData, TaskDataError
from .mixed_precision import resolve_bf16
from .tasks import CS224N_TASKS, TaskSpec
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
    group_by_length: bool = False
    #: A seeded validation split carved out of each task's train set (`hf_pals.data.validation`), which the
    #: periodic evaluations and model selection score so the dev files are read once, for the final report:
    #: the same share of every task, or `{task: rows}`.
    validation_fraction: Optional[float] = None
    validation_examples: dict[str, int] = field(default_factory=dict)
    #: The split that selects with load_best_model_at_end / early_stopping: validation (the default with a
    #: validation split) or dev, which must be said (`hf_pals.model_selection`).
    selection_split: Optional[str] = None


@dataclass
class SamplingSection:
    """Task sampling (see `hf_pals.data.sampling`): `name` is annealed, proportional, sqrt, temperature,
    uniform, round_robin, the curricula sequential and hybrid (hybrid needs multitask.step_mode: joint),
    or "module:function"; `temperature` is T of name temperature (p_i ∝ N_i^(1/T))."""

    name: str = "annealed"
    steps_per_epoch: Optional[int] = None
    temperature: Optional[float] = None


@dataclass
class Recipe:
    """A parsed recipe. `tasks` maps a task name to its `TaskSpec` fields and, under `data`, where its
    examples come from (`hf_pals.data.sources.TaskData`). A task without `data` is a CS224N task read
    from the handout's files (`data.format: cs224n`): sst, quora or sts, whose fields then default to the
    handout's (`tasks.CS224N_TASKS`), so `sst: {}` is a whole task.

    `adapter` holds the `PALConfig` fields of every task's adapter (`{}`: the defaults), or is None for a
    model without adapters (`adapter: none` in the file): a plain shared encoder whose
    tasks differ only in their heads and top layers (`top_layer: true`)."""

    base_model: str
    tasks: dict[str, dict[str, Any]]
    output_dir: str = "runs/hf_pals"
    data: DataSection = field(default_factory=DataSection)
    adapter: Optional[dict[str, Any]] = field(default_factory=dict)
    freeze_encoder: bool = False
    max_length: int = 128
    sampling: SamplingSection = field(default_factory=SamplingSection)
    learning_rates: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    eval_batch_size: int = 128
    #: SMART (`hf_pals.training.smart.SMARTConfig`): `smart: {weights: {sst: 0.5}, epsilon: ..., steps: 1}`.
    smart: Optional[Any] = None
    #: R-Drop (`hf_pals.training.r_drop.RDropConfig`): `r_drop: {weights: {sst: 1.0}}`.
    r_drop: Optional[Any] = None
    #: EDA augmentation (`hf_pals.data.augment.AugmentConfig`): `augment: {tasks: [sst], alpha: 0.1, ...}`.
    augment: Optional[Any] = None
    #: Pair swapping for symmetric pair tasks (`hf_pals.data.pair_swap.PairSwapConfig`):
    #: `pair_swap: {tasks: [quora], prob: 0.5}`.
    pair_swap: Optional[Any] = None
    #: EMA / SWA of the trainable weights, which become the final model
    #: (`hf_pals.training.weight_averaging.WeightAveragingConfig`): `weight_averaging: {method: ema, decay: 0.999}`.
    weight_averaging: Optional[Any] = None
    #: How tasks share a step (`hf_pals.training.joint.MultitaskConfig`, always built): `multitask: {step_mode:
    #: joint, loss_balancing: dwa, gradient_surgery: pcgrad, ...}`; absent = one task per step.
    multitask: Optional[Any] = None
    #: The encoder's dropout drawn by hf_pals' cheaper CPU mask (`hf_pals.encoder_dropout.use_fast_dropout`):
    #: the same dropout, ~15% shorter CPU training steps; `fast_dropout: false` keeps torch's own.
    fast_dropout: bool = True
    #: A trained bundle to grow (`hf_pals.growing.grow_model`): its tasks keep their adapters and heads,
    #: the recipe's tasks it lacks get fresh ones; `hf-pals train --init-from MODEL_DIR`.
    init_from: Optional[str] = None
    #: With `init_from`: parts that do not train, "encoder" and/or task names (`MultiTaskModel.freeze`);
    #: a frozen task is evaluated but not trained.
    freeze: list[str] = field(default_factory=list)
    #: Stop when the selection metric stops improving (`hf_pals.model_selection.EarlyStoppingConfig`):
    #: `early_stopping: {patience: 3, threshold: 0.0}`; needs a selection split like load_best_model_at_end.
    early_stopping: Optional[Any] = None
    source: str = "<recipe>"

    def task_data(self) -> dict[str, TaskData]:
        """Where each task's examples come from: its `data` entry, or the CS224N files."""
        out = {}
        for name, values in self.tasks.items():
            entry = (values or {}).get("data")
            where = f"{self.source}: tasks.{name}.data"
            try:
                if entry is None:
                    entry = {"source": "cs224n"}
                if isinstance(entry, dict) and entry.get("source") == "cs224n":
                    entry = {"train_split": "train", "eval_split": "dev", "test_split": "test", **entry}
                out[name] = TaskData.from_value(entry, where)
            except (TaskDataError, TypeError) as err:
                raise RecipeError(str(err) if isinstance(err, TaskDataError) else f"{where}: {err}") from err
        return out

    def task_specs(self) -> dict[str, TaskSpec]:
        """Each task's `TaskSpec`: its recipe fields over the CS224N defaults for a CS224N-files task;
        for a `datasets` task, `text_columns` defaults to what its `data.columns` map."""
        specs = {}
        task_data = self.task_data()
        unknown = [n for n, d in task_data.items() if d.source == "cs224n" and (d.task or n) not in CS224N_TASKS]
        if unknown:
            raise RecipeError(
                f"{self.source}: tasks: unknown task(s) {unknown}; known tasks are {sorted(CS224N_TASKS)} (the CS224N "
                "files); a task of another dataset needs a data entry (data: {path: ..., ...})"
            )
        for name, data in task_data.items():
            values = {k: v for k, v in (self.tasks[name] or {}).items() if k != "data"}
            where = f"{self.source}: tasks.{name}"
            if data.source == "cs224n":
                values = {**CS224N_TASKS[data.task or name], **values}
            else:
                if "kind" not in values:
                    raise RecipeError(f"{where}: kind is not set (classification, binary or regression)")
                if "text_columns" not in values and data.text_columns:
                    values["text_columns"] = list(data.text_columns)
            try:
                specs[name] = TaskSpec.from_dict(name, values)
            except (TypeError, ValueError) as err:
                raise RecipeError(f"{where}: {err}") from err
        return specs

    @property
    def uses_adapters(self) -> bool:
        """False for `adapter: none`: the model gets no adapters (`MultiTaskModel.from_base(adapters=False)`)."""
        return self.adapter is not None

    def pal_config(self) -> Optional[PALConfig]:
        """The adapters' `PALConfig`, or None for a recipe without adapters."""
        if self.adapter is None:
            return None
        try:
            return PALConfig(**self.adapter)
        except (TypeError, ValueError) as err:
            raise RecipeError(f"{self.source}: adapter: {err}") from err

    def training_arguments(self) -> TrainingArguments:
        return training_arguments_from({"output_dir": self.output_dir, **self.training}, self.source)

    def data_dir(self) -> Optional[str]:
        """The data folder (`data.dir`, else $HF_PALS_DATA_DIR): required when a task reads the CS224N
        files, optional otherwise (then the folder relative `data_files` are resolved against)."""
        if any(d.source == "cs224n" for d in self.task_data().values()):
            return resolve_data_dir(self.data.dir, self.source)
        return self.data.dir or os.environ.get(DEFAULT_DATA_DIR_ENV)


def training_arguments_from(values: dict[str, Any], source: str) -> TrainingArguments:
    """`TrainingArguments` from a recipe's `training` section (plus output_dir); errors name the recipe."""
    values = resolve_bf16({"report_to": "none", **values})
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        # Several processes (`accelerate launch`, torchrun) and no GPU: without use_cpu transformers
        # would not join them into one DDP run (gloo) but train a separate copy in each.
        values.setdefault("use_cpu", True)
    try:
        return TrainingArguments(**values)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{source}: training: {err}") from err


def resolve_data_dir(data_dir: Optional[str], source: str) -> str:
    """The recipe's data.dir, else $HF_PALS_DATA_DIR; an error naming the recipe if neither is set."""
    data_dir = data_dir or os.environ.get(DEFAULT_DATA_DIR_ENV)
    if not data_dir:
        raise RecipeError(f"{source}: data.dir is not set (pass --data-dir or set {DEFAULT_DATA_DIR_ENV})")
    return data_dir


def build_section(cls, values: Any, where: str):
    """Dataclass `cls` from a recipe mapping; unknown fields are an error naming `where`."""
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {unknown}; known fields are {sorted(known - {'source'})}")
    return cls(**values)


def parse_recipe(values: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Check and build a `Recipe` from a mapping (a loaded YAML document)."""
    if not isinstance(values, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of sections")
    values = copy.deepcopy(values)
    for required in ("base_model", "tasks"):
        if required not in values:
            raise RecipeError(f"{source}: missing required field {required!r}")
    values["data"] = build_section(DataSection, values.get("data"), f"{source}: data")
    values["sampling"] = build_section(SamplingSection, values.get("sampling"), f"{source}: sampling")
    _build_training_methods(values, source)
    values["multitask"] = _build_multitask(values.get("multitask"), values.get("freeze_encoder", False), source)
    recipe = build_section(Recipe, {**values, "source": source}, source)
    recipe.adapter = _adapter_section(recipe.adapter, source)
    if not isinstance(recipe.tasks, dict) or not recipe.tasks:
        raise RecipeError(f"{source}: tasks must be a non-empty mapping of task name -> overrides")
    for name, values in recipe.tasks.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise RecipeError(f"{source}: tasks: a task name must be a non-empty string without '/', got {name!r}")
        if values is not None and not isinstance(values, dict):
            raise RecipeError(f"{source}: tasks.{name}: expected a mapping of task fields, got {values!r}")
    _check_growing(recipe, source)
    _check_model_selection(recipe, source)
    if not isinstance(recipe.fast_dropout, bool):
        raise RecipeError(f"{source}: fast_dropout must be true or false, got {recipe.fast_dropout!r}")
    if recipe.data.format != "cs224n":
        raise RecipeError(f"{source}: data.format must be 'cs224n', got {recipe.data.format!r}")
    if recipe.data.on_bad_rows not in ("raise", "skip"):
        raise RecipeError(f"{source}: data.on_bad_rows must be 'raise' or 'skip', got {recipe.data.on_bad_rows!r}")
    _check_learning_rates(recipe, source)
    training_fields = {f.name for f in fields(TrainingArguments)}
    unknown = sorted(set(recipe.training) - training_fields)
    if unknown:
        raise RecipeError(f"{source}: training: unknown TrainingArguments field(s) {unknown}")
    if not recipe.training.get("max_steps"):
        raise RecipeError(f"{source}: training.max_steps must be set (epochs are counted in steps)")
    try:  # checks the sampling section (and imports a "module:function") on placeholder sizes
        build_task_schedule(asdict(recipe.sampling), dict.fromkeys(recipe.tasks, 1), num_steps=1)
    except ValueError as err:
        raise RecipeError(f"{source}: {err}") from err
    recipe.task_specs()
    recipe.pal_config()
    for section, names in (
        ("smart.weights", set(recipe.smart.weights) if recipe.smart else set()),
        ("r_drop.weights", set(recipe.r_drop.weights) if recipe.r_drop else set()),
        ("augment.tasks", set(recipe.augment.tasks) if recipe.augment else set()),
        ("pair_swap.tasks", set(recipe.pair_swap.tasks) if recipe.pair_swap else set()),
    ):
        if names - set(recipe.tasks):
            raise RecipeError(f"{source}: {section}: task(s) {sorted(names - set(recipe.tasks))} are not in tasks")
    _check_pair_swap(recipe, source)
    _check_weight_averaging(recipe, source)
    if recipe.sampling.name == "hybrid" and getattr(recipe.multitask, "step_mode", "single") != "joint":
        raise RecipeError(
            f"{source}: sampling.name hybrid alternates sequential and joint epochs: set multitask.step_mode: joint "
            "(its loss_balancing and gradient_surgery apply to the joint epochs)"
        )
    return recipe


#: The `adapter:` value that means "no adapters". An empty `adapter:` (YAML null) is an error rather than
#: a silent "no adapters", since it is more often a section left unfinished.
NO_ADAPTERS = ("none",)


def _adapter_section(value: Any, source: str) -> Optional[dict[str, Any]]:
    """The `adapter` section: a mapping of `PALConfig` fields, or None for no adapters (see `NO_ADAPTERS`)."""
    if value in NO_ADAPTERS:
        return None
    if not isinstance(value, dict):
        raise RecipeError(
            f"{source}: adapter: expected a mapping of PALConfig fields, or none for a model without adapters, "
            f"got {value!r}"
        )
    return value


def _build_training_methods(values: dict[str, Any], source: str) -> None:
    """Build the optional `smart`, `r_drop`, `augment`, `pair_swap` and `weight_averaging` sections in place
    (imported here: only recipes that use them pay for the imports)."""
    import importlib

    for section, module, name in (
        ("smart", ".training.smart", "SMARTConfig"),
        ("r_drop", ".training.r_drop", "RDropConfig"),
        ("augment", ".data.augment", "AugmentConfig"),
        ("pair_swap", ".data.pair_swap", "PairSwapConfig"),
        ("weight_averaging", ".training.weight_averaging", "WeightAveragingConfig"),
    ):
        if values.get(section) is None:
            continue
        cls = getattr(importlib.import_module(module, __package__), name)
        try:
            values[section] = build_section(cls, values[section], f"{source}: {section}")
        except (TypeError, ValueError) as err:
            if isinstance(err, RecipeError):
                raise
            raise RecipeError(f"{source}: {section}: {err}") from err


def _check_learning_rates(recipe: Recipe, source: str) -> None:
    """`learning_rates`: a rate per group (encoder, adapters, heads, loss_balancing) and the optional
    `layer_decay` of the encoder's rate (`hf_pals.training.layer_decay`, 0 < layer_decay <= 1)."""
    from .training.layer_decay import LAYER_DECAY_KEY, check_layer_decay

    if not isinstance(recipe.learning_rates, dict):
        raise RecipeError(f"{source}: learning_rates must be a mapping of group -> rate, got {recipe.learning_rates!r}")
    groups = ("encoder", "adapters", "heads", "loss_balancing")
    bad_groups = sorted(set(recipe.learning_rates) - {*groups, LAYER_DECAY_KEY})
    if bad_groups:
        raise RecipeError(
            f"{source}: learning_rates: unknown group(s) {bad_groups}; use {', '.join(groups)} (and {LAYER_DECAY_KEY})"
        )
    try:
        check_layer_decay(recipe.learning_rates.get(LAYER_DECAY_KEY), f"{source}: learning_rates")
    except ValueError as err:
        raise RecipeError(str(err)) from err


def _check_pair_swap(recipe: Recipe, source: str) -> None:
    """`pair_swap.tasks` must be sentence-pair tasks (two text columns)."""
    if not recipe.pair_swap:
        return
    specs = recipe.task_specs()
    for task in recipe.pair_swap.tasks:
        columns = specs[task].text_columns
        if len(columns) != 2:
            raise RecipeError(
                f"{source}: pair_swap.tasks: task {task!r} has {len(columns)} text column(s) {list(columns)}; "
                "swapping needs a sentence pair"
            )


def _check_weight_averaging(recipe: Recipe, source: str) -> None:
    """`weight_averaging` must start within the run, and makes the final weights the average, which
    `load_best_model_at_end` (the best checkpoint's raw weights) would contradict."""
    config = recipe.weight_averaging
    if config is None:
        return
    if recipe.training.get("load_best_model_at_end"):
        raise RecipeError(
            f"{source}: weight_averaging makes the final weights the average; training.load_best_model_at_end would "
            "make them the best checkpoint's raw weights: use one of them"
        )
    max_steps = recipe.training.get("max_steps")
    if isinstance(max_steps, int) and config.updates_until(max_steps) == 0:
        raise RecipeError(
            f"{source}: weight_averaging.start_step {config.start_step} (every {config.every}) averages no step of "
            f"the run's {max_steps} steps"
        )


def _check_model_selection(recipe: Recipe, source: str) -> None:
    """The validation split, `data.selection_split` and `early_stopping` (`hf_pals.model_selection`)."""
    from .model_selection import check_recipe_selection

    try:
        check_recipe_selection(recipe, source)
    except ValueError as err:
        raise RecipeError(str(err)) from err


def _check_growing(recipe: Recipe, source: str) -> None:
    """`init_from` and `freeze` (growing a trained bundle): the bundle's own checks (base, task fields,
    the task names `freeze` may use) run in `grow_model`, before the run starts."""
    if recipe.init_from is not None and (not isinstance(recipe.init_from, str) or not recipe.init_from):
        raise RecipeError(f"{source}: init_from must be a model directory, got {recipe.init_from!r}")
    if not isinstance(recipe.freeze, list) or not all(isinstance(p, str) and p for p in recipe.freeze):
        raise RecipeError(f"{source}: freeze must be a list of parts (encoder and/or task names), got {recipe.freeze!r}")
    if recipe.freeze and recipe.init_from is None:
        raise RecipeError(
            f"{source}: freeze {recipe.freeze} needs init_from (a trained bundle to grow); to keep the base "
            "encoder unchanged in a new model use freeze_encoder: true"
        )
    if recipe.init_from is None:
        return
    if set(recipe.tasks) <= set(recipe.freeze):
        raise RecipeError(f"{source}: freeze {recipe.freeze} freezes every task of the recipe: there is nothing to train")
    if recipe.freeze_encoder:
        raise RecipeError(
            f"{source}: with init_from the bundle says whether its encoder is the base (freeze_encoder); "
            "to keep the bundle's encoder as it is, use freeze: [encoder]"
        )
    if os.path.realpath(recipe.init_from) == os.path.realpath(recipe.output_dir):
        raise RecipeError(
            f"{source}: output_dir {recipe.output_dir!r} is init_from: the grown model would overwrite the bundle "
            "it starts from; give another output_dir"
        )


def _build_multitask(values: Any, freeze_encoder: Any, source: str):
    """The `multitask` section as a checked `MultitaskConfig` (defaults when absent: one task per step)."""
    from .training.joint import MultitaskConfig

    config = build_section(MultitaskConfig, values, f"{source}: multitask")
    try:
        config.validate("multitask")
    except ValueError as err:
        raise RecipeError(f"{source}: {err}") from err
    if config.joint and config.loss_balancing == "gradnorm" and freeze_encoder is True and not config.gradnorm_layer:
        raise RecipeError(
            f"{source}: multitask.loss_balancing: gradnorm measures gradients on a shared trained layer, and "
            "freeze_encoder is true: train the encoder or name a trainable layer in multitask.gradnorm_layer"
        )
    return config


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently:
    two tasks of the same name would become one)."""


def _mapping_without_repeats(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: construct_mapping merges (and may override) it
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"{key!r} is given twice (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)


def read_recipe_values(path: str, overrides: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """A recipe file's mapping, over the recipe it `extends` (if any), with `overrides` ("a.b=value",
    value parsed as YAML) applied, unchecked.

    `extends: PATH` (relative to the recipe's own folder) names a recipe this one is written against:
    its values are the base, and this file's fields go over them (`merge_recipe_values`: mappings merge
    key by key, anything else replaces), so a lever's recipe holds only what it changes. A base may
    extend another; a circle is an error naming the files."""
    return _read_values(path, overrides, chain=())


def _read_values(path: str, overrides: Optional[Sequence[str]], chain: tuple[str, ...]) -> dict[str, Any]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"recipe {path} not found")
    with open(path) as f:
        try:
            values = yaml.load(f, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as err:
            raise RecipeError(f"{path}: not valid YAML ({err})") from err
    values = values or {}
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(values).__name__}")
    if "extends" in values:
        values = _over_base(path, values, chain)
    for assignment in overrides or []:
        apply_override(values, assignment)
    return values


def _over_base(path: str, values: dict[str, Any], chain: tuple[str, ...]) -> dict[str, Any]:
    """`values` (read from `path`) over the recipe its `extends` field names."""
    base = values.pop("extends")
    if not isinstance(base, str) or not base.strip():
        raise RecipeError(f"{path}: extends: expected the path of a recipe file, got {base!r}")
    base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
    here = chain + (os.path.realpath(path),)
    if os.path.realpath(base_path) in here:
        raise RecipeError(f"{path}: extends {base!r} goes round in a circle: {' -> '.join(here + (os.path.realpath(base_path),))}")
    if not os.path.exists(base_path):
        raise RecipeError(f"{path}: extends {base!r}, but {base_path} does not exist")
    return merge_recipe_values(_read_values(base_path, None, here), values)


def merge_recipe_values(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A new mapping: `over`'s fields over `base`'s. Where both hold a mapping (a section, a task) the two
    merge key by key; any other value of `over` (a scalar, a list, null) replaces `base`'s."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_recipe_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_recipe(path: str, overrides: Optional[list[str]] = None) -> Recipe:
    """Read a recipe file, apply `overrides` ("a.b=value"), and check it."""
    return parse_recipe(read_recipe_values(path, overrides), source=path)
