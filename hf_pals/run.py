"""The two jobs behind the CLI: train a recipe, and evaluate (or predict with) a saved model."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Optional, Sequence, Union

import torch
from transformers import AutoTokenizer, set_seed

from .base_models import resolve_base_model
from .data import cs224n_path, load_cs224n_file, write_cs224n_predictions
from .data.multitask import MultiTaskCollator
from .data.sources import TaskData, load_task_sets, load_task_split, task_splits
from .data.submission import submission_file_name, write_submission
from .data.validation import carve_validation
from .ensemble import Ensemble
from .evaluation import evaluate_predictions, evaluate_tasks
from .encoder_dropout import use_fast_dropout
from .growing import grow_model
from .model_selection import early_stopping_callbacks, evaluation_split, selection_report
from .modeling import MultiTaskModel
from .recipe import Recipe
from .tasks import CS224N_TASKS
from .training import MultiTaskTrainer

logger = logging.getLogger("hf_pals")

REPORT_NAME = "eval_results.json"
#: Free space an output directory must have before a run starts (bundles and checkpoints).
MIN_FREE_BYTES = 512 * 1024 * 1024
#: File names of the CS224N handout's test predictions.
PREDICTION_FILES = {"sst": "sst-test-output.csv", "quora": "para-test-output.csv", "sts": "sts-test-output.csv"}


def check_output_dir(path: str, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Fail at start, not after an hour, when `path` cannot be written or its disk is nearly full."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OSError(f"output directory {path} is not writable: {err}") from err
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise OSError(
            f"output directory {path} has {free / 2**20:.0f} MiB free; at least {min_free_bytes / 2**20:.0f} MiB "
            "are needed for checkpoints"
        )


def _cap(datasets: dict, limits: dict[str, int], seed: int, where: str) -> dict:
    tasks = {key.split("/")[0] for key in datasets}
    unknown = sorted(set(limits) - tasks)
    if unknown:
        raise ValueError(f"{where}: task(s) {unknown} are not in the recipe's tasks {sorted(tasks)}")
    out = {}
    for task, dataset in datasets.items():
        limit = limits.get(task.split("/")[0])  # a task's limit holds for each of its splits ("mnli/...")
        if limit is not None and limit < len(dataset):
            dataset = dataset.shuffle(seed=seed).select(range(limit))
        out[task] = dataset
    return out


def train(recipe: Recipe, resume: Union[bool, str, None] = None, callbacks: Optional[list] = None) -> dict[str, Any]:
    """Train `recipe`, save the final bundle in its output_dir, score the dev files, write the report.
    `callbacks` are extra `TrainerCallback`s (the benchmarks time steps with one)."""
    check_output_dir(recipe.output_dir)
    tasks = recipe.task_specs()
    data_dir = recipe.data_dir()
    args = recipe.training_arguments()
    task_data = recipe.task_data()
    train_sets = load_task_sets(tasks, task_data, "train", data_dir, on_bad_rows=recipe.data.on_bad_rows)
    train_sets = {t: d for t, d in train_sets.items() if t.split("/")[0] not in recipe.freeze}  # frozen: eval only
    missing = [t for t in tasks if t not in train_sets and t not in recipe.freeze]
    if missing:
        raise ValueError(f"{recipe.source}: task(s) {missing} have no train_split to train on")
    train_sets = _cap(train_sets, recipe.data.max_train_examples, args.seed, f"{recipe.source}: data.max_train_examples")

    def load_dev_sets() -> dict:
        dev = load_task_sets(tasks, task_data, "eval", data_dir, on_bad_rows=recipe.data.on_bad_rows)
        return _cap(dev, recipe.data.max_eval_examples, args.seed, f"{recipe.source}: data.max_eval_examples")

    # Periodic evaluation and model selection (hf_pals.model_selection) score a validation split carved from
    # the train sets when the recipe asks for one; the dev files are then read once, after training.
    selection_split = evaluation_split(recipe.data)
    if selection_split == "validation":
        unknown = sorted(set(recipe.data.max_eval_examples) - set(tasks))  # checked now, not after training
        if unknown:
            raise ValueError(
                f"{recipe.source}: data.max_eval_examples: task(s) {unknown} are not in the recipe's tasks {sorted(tasks)}"
            )
        train_sets, eval_sets = carve_validation(
            train_sets, recipe.data.validation_fraction, recipe.data.validation_examples, seed=args.seed
        )
        dev_sets = None
    else:
        dev_sets = eval_sets = load_dev_sets()

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(recipe.base_model))
    set_seed(args.seed)  # the adapters' and heads' initial weights: the same seed gives the same run
    if recipe.init_from:  # grow a trained bundle: its tasks keep their weights, new tasks get fresh ones
        model = grow_model(
            recipe.init_from,
            tasks,
            recipe.pal_config(),
            freeze=recipe.freeze,
            base_model=recipe.base_model,
            max_length=recipe.max_length,
        )
    else:
        model = MultiTaskModel.from_base(
            recipe.base_model,
            tasks,
            recipe.pal_config(),
            freeze_encoder=recipe.freeze_encoder,
            max_length=recipe.max_length,
            adapters=recipe.uses_adapters,
        )
    if recipe.fast_dropout:
        use_fast_dropout(model)
    augmenting_collator = None
    augmenters = _training_augmenters(recipe, args.seed)
    if augmenters:
        from .data.augment import AugmenterChain

        augmenter = augmenters[0] if len(augmenters) == 1 else AugmenterChain(augmenters)
        augmenting_collator = MultiTaskCollator(tokenizer, tasks, max_length=recipe.max_length, augment=augmenter)
    averaging = None
    if recipe.weight_averaging is not None:  # EMA / SWA: the average becomes the final weights at train end
        from .training.weight_averaging import WeightAveragingCallback

        averaging = WeightAveragingCallback(recipe.weight_averaging)
    trainer_class = MultiTaskTrainer
    if recipe.sampling.name == "hybrid":  # sequential and joint epochs alternate (hf_pals.training.curriculum)
        from .training.curriculum import HybridTrainer as trainer_class
    trainer = trainer_class(
        model,
        args,
        train_datasets=train_sets,
        eval_datasets=eval_sets,
        tokenizer=tokenizer,
        data_collator=augmenting_collator,
        sampling=dataclasses.asdict(recipe.sampling),
        group_by_length=recipe.data.group_by_length,
        learning_rates=recipe.learning_rates,
        max_length=recipe.max_length,
        eval_batch_size=recipe.eval_batch_size,
        callbacks=[*(callbacks or []), *early_stopping_callbacks(recipe), *([averaging] if averaging else [])],
        multitask=recipe.multitask,
    )
    trainer.smart = recipe.smart  # SMART (hf_pals.training.smart) for the tasks it weighs, or None
    trainer.r_drop = recipe.r_drop  # R-Drop (hf_pals.training.r_drop) for the tasks it weighs, or None
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume or None)  # with weight_averaging, ends with the averaged weights
    train_seconds = time.perf_counter() - started
    trainer.save_model(recipe.output_dir)
    if dev_sets is None:
        dev_sets = load_dev_sets()  # the first read of the dev files: the final report's, once

    started = time.perf_counter()
    report = evaluate_tasks(model, trainer.data_collator, dev_sets, batch_size=recipe.eval_batch_size)
    report["split"] = "dev"
    report["timing"] = {"train_seconds": round(train_seconds, 1), "eval_seconds": round(time.perf_counter() - started, 1)}
    report["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report["task_steps"] = trainer.task_steps()
    if averaging is not None:  # the method, its settings and how many steps the final weights average
        report["weight_averaging"] = averaging.summary()
    selection = selection_report(trainer, selection_split, eval_sets)
    if selection is not None:  # the metric, best step and value that chose (or stopped) the run
        report["model_selection"] = selection
    if trainer.is_world_process_zero():
        with open(os.path.join(recipe.output_dir, REPORT_NAME), "w") as f:
            json.dump(report, f, indent=2)
    return report


def _training_augmenters(recipe: Recipe, seed: int) -> list:
    """The recipe's training-batch augmenters, in the order they apply: EDA (`augment`), then pair
    swapping (`pair_swap`), so a swapped pair carries its EDA sentences along."""
    augmenters = []
    if recipe.augment is not None and recipe.augment.tasks:
        from .data.augment import EDAAugmenter

        augmenters.append(EDAAugmenter(recipe.augment, seed=seed))
    if recipe.pair_swap is not None and recipe.pair_swap.tasks:
        from .data.pair_swap import PairSwapAugmenter

        augmenters.append(PairSwapAugmenter(recipe.pair_swap, seed=seed))
    return augmenters


def load_for_inference(model_dir: str, allow_pickle: bool = False):
    """A saved bundle, its tokenizer and a collator, ready to predict (`allow_pickle`: see
    `MultiTaskModel.from_pretrained`)."""
    model = MultiTaskModel.from_pretrained(model_dir, allow_pickle=allow_pickle)
    has_tokenizer = os.path.exists(os.path.join(model_dir, "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir if has_tokenizer else resolve_base_model(model.base_model_name_or_path))
    return model, MultiTaskCollator(tokenizer, model.tasks, max_length=model.max_length)


def evaluate(
    model_dir: Union[str, Sequence[str]],
    data_dir: Optional[str] = None,
    split: str = "dev",
    output: Optional[str] = None,
    on_bad_rows: str = "raise",
    batch_size: int = 128,
    max_examples: Optional[int] = None,
    recipe: Optional[Recipe] = None,
    predict_both_orders: Sequence[str] = (),
    bf16: bool = False,
) -> dict[str, Any]:
    """Score a bundle on a labelled split, or with `split="test"` write prediction files.

    Without `recipe` the bundle's tasks are CS224N tasks read from `data_dir` ("train", "dev", "test").
    With a recipe each task's data comes from its `data` entry: "dev" (or "eval", "validation") is its
    eval_split(s), "train" its train_split, "test" its test_split(s); `data_dir` overrides `data.dir`.

    For "test", `output` is a directory (default MODEL_DIR/predictions) and the result lists the files
    written: the handout's files for CS224N tasks, `index<TAB>prediction` TSVs (GLUE's submission
    layout, `hf_pals.data.submission`) for the others; a task without a test split is reported as
    skipped. `max_examples` keeps the first rows of each split only, for quick checks.
    `predict_both_orders` names pair tasks to predict in both sentence orders (`TaskSpec.predict_both_orders`)
    for this call, whatever the bundle says. `bf16` runs the forward passes under autocast to bfloat16, as
    the final dev scoring of `train` runs with `training.bf16` (Accelerate wraps the model's forward so);
    without it they run in float32, whose scores can differ from that report's in the last examples.

    Several `model_dir`s are scored as one prediction ensemble (`hf_pals.ensemble`: the members' probabilities
    or scores averaged); the report then lists them under "ensemble", and test predictions need `output`.
    """

    def head(dataset):
        return dataset if max_examples is None else dataset.select(range(min(max_examples, len(dataset))))

    model_dirs = [model_dir] if isinstance(model_dir, str) else list(model_dir)
    model = Ensemble([_load_for_evaluation(d, predict_both_orders, bf16) for d in model_dirs], names=model_dirs)
    tasks = list(model.tasks)
    task_data = _bundle_task_data(model, recipe)
    if recipe is not None:
        data_dir = data_dir or recipe.data_dir()
    if split != "test":
        role = "train" if split == "train" else "eval"
        if any(task_data[t].source == "cs224n" for t in tasks):
            _required(data_dir)
        loaded = load_task_sets(model.tasks, task_data, role, data_dir, on_bad_rows=on_bad_rows)
        datasets = {t: head(d) for t, d in loaded.items()}
        report = evaluate_predictions(
            model.tasks, datasets, lambda dataset, task: model.predict(dataset, task, batch_size=batch_size)
        )
        report["split"] = split
        if len(model_dirs) > 1:
            report["ensemble"] = model_dirs
        if output:
            os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
            with open(output, "w") as f:
                json.dump(report, f, indent=2)
        return report
    if output is None and len(model_dirs) > 1:
        raise ValueError("an ensemble's test predictions need --output (a directory of its own)")
    output = output or os.path.join(model_dirs[0], "predictions")
    written, skipped = {}, {}
    for task in tasks:
        data = task_data[task]
        if data.source == "cs224n":
            handout_task = data.task or task
            path = cs224n_path(_required(data_dir), handout_task, "test")
            if not path.exists():
                skipped[task] = f"no test file {path}"
                continue
            dataset = head(load_cs224n_file(path, handout_task, labeled=False, on_bad_rows=on_bad_rows))
            preds = model.predict(dataset, task, batch_size=batch_size)
            target = os.path.join(output, PREDICTION_FILES[handout_task])
            write_cs224n_predictions(target, handout_task, dataset["id"], preds.tolist())
            written[task] = target
            continue
        splits = task_splits(data, "test")
        if not splits:
            skipped[task] = "no test_split"
        for split_name in splits:
            dataset = head(load_task_split(model.tasks[task], data, split_name, role="test", data_dir=data_dir))
            preds = model.predict(dataset, task, batch_size=batch_size)
            name = submission_file_name(task, data, split_name, several=len(splits) > 1)
            target = os.path.join(output, name)
            write_submission(target, model.tasks[task], data, dataset["id"], preds.tolist())
            written[task if len(splits) == 1 else f"{task}/{split_name}"] = target
    return {"split": "test", "predictions": written, "skipped": skipped}


def _load_for_evaluation(model_dir: str, predict_both_orders: Sequence[str], bf16: bool):
    """`load_for_inference`, then the call's test-time choices: pair tasks predicted in both orders and
    bf16 autocast on the forward passes."""
    model, collator = load_for_inference(model_dir)
    for task in predict_both_orders:  # test-time pair symmetry for a bundle trained without it set
        if task not in model.tasks:
            raise ValueError(
                f"--predict-both-orders: {model_dir} has no task {task!r}; its tasks are {sorted(model.tasks)}"
            )
        model.tasks[task] = dataclasses.replace(model.tasks[task], predict_both_orders=True)
    if bf16:
        device_type = next(model.parameters()).device.type
        model.forward = torch.autocast(device_type, dtype=torch.bfloat16)(model.forward)
    return model, collator


def _bundle_task_data(model, recipe: Optional[Recipe]) -> dict:
    """Each of the bundle's tasks' data: from the recipe, or the CS224N files without one."""
    if recipe is None:
        others = sorted(t for t in model.tasks if t not in CS224N_TASKS)
        if others:
            raise ValueError(
                f"task(s) {others} are not CS224N tasks: pass the recipe that says where their data is (--recipe)"
            )
        return {t: TaskData(source="cs224n", eval_split="dev") for t in model.tasks}
    task_data = recipe.task_data()
    missing = sorted(set(model.tasks) - set(task_data))
    if missing:
        raise ValueError(f"{recipe.source}: the bundle's task(s) {missing} are not in the recipe's tasks {sorted(task_data)}")
    return {t: task_data[t] for t in model.tasks}


def _required(data_dir: Optional[str]) -> str:
    if not data_dir:
        raise ValueError("the CS224N tasks are read from a data directory: pass --data-dir (or set data.dir)")
    return data_dir
