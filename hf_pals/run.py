"""The two jobs behind the CLI: train a recipe, and evaluate (or predict with) a saved model."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Optional, Union

from transformers import AutoTokenizer, set_seed

from .base_models import resolve_base_model
from .data import cs224n_path, load_cs224n, load_cs224n_file, write_cs224n_predictions
from .data.multitask import MultiTaskCollator
from .evaluation import evaluate_tasks, predict
from .encoder_dropout import use_fast_dropout
from .modeling import MultiTaskModel
from .recipe import Recipe
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
    unknown = sorted(set(limits) - set(datasets))
    if unknown:
        raise ValueError(f"{where}: task(s) {unknown} are not in the recipe's tasks {sorted(datasets)}")
    out = {}
    for task, dataset in datasets.items():
        limit = limits.get(task)
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
    names = list(tasks)
    train_sets = load_cs224n(data_dir, "train", tasks=names, on_bad_rows=recipe.data.on_bad_rows)
    dev_sets = load_cs224n(data_dir, "dev", tasks=names, on_bad_rows=recipe.data.on_bad_rows)
    train_sets = _cap(train_sets, recipe.data.max_train_examples, args.seed, f"{recipe.source}: data.max_train_examples")
    dev_sets = _cap(dev_sets, recipe.data.max_eval_examples, args.seed, f"{recipe.source}: data.max_eval_examples")

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(recipe.base_model))
    set_seed(args.seed)  # the adapters' and heads' initial weights: the same seed gives the same run
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
    if recipe.augment is not None and recipe.augment.tasks:
        from .data.augment import EDAAugmenter

        augmenter = EDAAugmenter(recipe.augment, seed=args.seed)
        augmenting_collator = MultiTaskCollator(tokenizer, tasks, max_length=recipe.max_length, augment=augmenter)
    trainer_class = MultiTaskTrainer
    if recipe.sampling.name == "hybrid":  # sequential and joint epochs alternate (hf_pals.training.curriculum)
        from .training.curriculum import HybridTrainer as trainer_class
    trainer = trainer_class(
        model,
        args,
        train_datasets=train_sets,
        eval_datasets=dev_sets,
        tokenizer=tokenizer,
        data_collator=augmenting_collator,
        sampling=dataclasses.asdict(recipe.sampling),
        group_by_length=recipe.data.group_by_length,
        learning_rates=recipe.learning_rates,
        max_length=recipe.max_length,
        eval_batch_size=recipe.eval_batch_size,
        callbacks=callbacks,
        multitask=recipe.multitask,
    )
    trainer.smart = recipe.smart  # SMART (hf_pals.training.smart) for the tasks it weighs, or None
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume or None)
    train_seconds = time.perf_counter() - started
    trainer.save_model(recipe.output_dir)

    started = time.perf_counter()
    report = evaluate_tasks(model, trainer.data_collator, dev_sets, batch_size=recipe.eval_batch_size)
    report["split"] = "dev"
    report["timing"] = {"train_seconds": round(train_seconds, 1), "eval_seconds": round(time.perf_counter() - started, 1)}
    report["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report["task_steps"] = trainer.task_steps()
    if trainer.is_world_process_zero():
        with open(os.path.join(recipe.output_dir, REPORT_NAME), "w") as f:
            json.dump(report, f, indent=2)
    return report


def load_for_inference(model_dir: str, allow_pickle: bool = False):
    """A saved bundle, its tokenizer and a collator, ready to predict (`allow_pickle`: see
    `MultiTaskModel.from_pretrained`)."""
    model = MultiTaskModel.from_pretrained(model_dir, allow_pickle=allow_pickle)
    has_tokenizer = os.path.exists(os.path.join(model_dir, "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir if has_tokenizer else resolve_base_model(model.base_model_name_or_path))
    return model, MultiTaskCollator(tokenizer, model.tasks, max_length=model.max_length)


def evaluate(
    model_dir: str,
    data_dir: str,
    split: str = "dev",
    output: Optional[str] = None,
    on_bad_rows: str = "raise",
    batch_size: int = 128,
    max_examples: Optional[int] = None,
) -> dict[str, Any]:
    """Score a bundle on a labelled CS224N split, or with `split="test"` write CS224N prediction files.

    For "test", `output` is a directory (default MODEL_DIR/predictions) and the result lists the files
    written; tasks without a test file (Quora here) are reported as skipped. `max_examples` keeps the
    first rows of each file only, for quick checks.
    """

    def head(dataset):
        return dataset if max_examples is None else dataset.select(range(min(max_examples, len(dataset))))

    model, collator = load_for_inference(model_dir)
    tasks = list(model.tasks)
    if split != "test":
        datasets = {t: head(d) for t, d in load_cs224n(data_dir, split, tasks=tasks, on_bad_rows=on_bad_rows).items()}
        report = evaluate_tasks(model, collator, datasets, batch_size=batch_size)
        report["split"] = split
        if output:
            os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
            with open(output, "w") as f:
                json.dump(report, f, indent=2)
        return report
    output = output or os.path.join(model_dir, "predictions")
    written, skipped = {}, {}
    for task in tasks:
        path = cs224n_path(data_dir, task, "test")
        if not path.exists():
            skipped[task] = f"no test file {path}"
            continue
        dataset = head(load_cs224n_file(path, task, labeled=False, on_bad_rows=on_bad_rows))
        preds = predict(model, collator, dataset, task, batch_size=batch_size)
        target = os.path.join(output, PREDICTION_FILES[task])
        write_cs224n_predictions(target, task, dataset["id"], preds.tolist())
        written[task] = target
    return {"split": "test", "predictions": written, "skipped": skipped}
