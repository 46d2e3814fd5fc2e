"""Further pretraining: more masked-language-model training of the base on the tasks' own text.

Sun et al. (2019), "How to Fine-Tune BERT for Text Classification?", continue BERT's MLM pretraining on
the target tasks' training text ("within-task" further pretraining) before fine-tuning. Here that is:

    sentences  every sentence of the tasks' train files (both sides of a pair), stripped, deduplicated
    model      `AutoModelForMaskedLM` on the base (a masked-LM head on top of the base encoder)
    batches    transformers' `DataCollatorForLanguageModeling`: 15% of the non-special tokens are
               chosen; of those 80% become [MASK], 10% a random token, 10% stay; loss on the chosen only
    loop       the plain `transformers.Trainer`
    result     OUTPUT_DIR holds the encoder alone, a plain `BertModel` (`AutoModel.from_pretrained(OUTPUT_DIR)`)
               with the tokenizer, so a multi-task recipe uses it as `base_model: OUTPUT_DIR`; plus
               `pretraining_info.json` (sentences, steps, held-out MLM loss before and after).

A sentence-embedding base such as all-MiniLM-L6-v2 ships no MLM head (its checkpoint is a bare
`BertModel`). The head's transform (dense + LayerNorm) and output bias are then newly initialised; the
output matrix is tied to the word embeddings, so it starts pretrained. The new tensors are logged,
listed in `pretraining_info.json` as `new_head_parameters`; `head_warmup_steps` can train the head alone
for the first steps, so gradients through a random head do not disturb the pretrained encoder, and
`head_learning_rate` gives the head its own (larger) learning rate so that warm-up gets somewhere.
The warm-up drops the encoder's gradients (sets them to None) just before each optimizer step rather
than flipping `requires_grad`, which keeps DDP's gradient buckets intact; AdamW skips a parameter
whose gradient is None (no update, no weight decay, no moment change).

Reports 003 and 004 of this project's reading list tried this on bert-base: faster convergence, no
better final score (003); worse SST (004). It is offered as an option to compare, not a default.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional, Sequence, Union

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from .base_models import resolve_base_model
from .data import load_cs224n
from .encoder_dropout import use_fast_dropout
from .recipe import RecipeError, build_section, read_recipe_values, resolve_data_dir, training_arguments_from
from .tasks import CS224N_TASKS

logger = logging.getLogger("hf_pals")

INFO_NAME = "pretraining_info.json"


# --------------------------------------------------------------------------------------------- recipe
@dataclass
class PretrainDataSection:
    """Which text to pretrain on.

    Args:
        dir: directory of the CS224N files (or `--data-dir`, or $HF_PALS_DATA_DIR).
        tasks: whose train files give the sentences (all sentences of each, both sides of a pair).
        on_bad_rows: "raise" or "skip" malformed rows, as in the multi-task recipe.
        max_sentences: keep a seeded random sample of this many training sentences (after dedup).
        eval_sentences: held-out sentences from the tasks' dev files (not in the training text) whose
            MLM loss is measured before and after; 0 skips the measurement.
    """

    format: str = "cs224n"
    dir: Optional[str] = None
    tasks: list[str] = field(default_factory=lambda: list(CS224N_TASKS))
    on_bad_rows: str = "raise"
    max_sentences: Optional[int] = None
    eval_sentences: int = 1000


@dataclass
class PretrainRecipe:
    """A parsed pretraining recipe (`hf-pals pretrain RECIPE.yaml`).

    Args:
        base_model: Hub id or directory of the encoder to continue pretraining.
        output_dir: where the pretrained encoder, its tokenizer, checkpoints and the info file go.
        mlm_probability: share of non-special tokens chosen for prediction (BERT: 0.15).
        max_length: sentences are truncated to this many tokens.
        head_warmup_steps: first optimizer steps that train only the MLM head (see the module doc).
        head_learning_rate: learning rate of the MLM head's own parameters (transform and output bias;
            the output matrix is the word embeddings' and goes with the encoder); default: the
            encoder's `training.learning_rate`.
        training: `TrainingArguments` fields (max_steps or num_train_epochs, batch size, lr, ...).
        fast_dropout: the encoder's dropout through hf_pals' cheaper CPU mask (`use_fast_dropout`), as
            in training recipes; false keeps torch's own.
    """

    base_model: str
    output_dir: str = "runs/mlm"
    data: PretrainDataSection = field(default_factory=PretrainDataSection)
    mlm_probability: float = 0.15
    max_length: int = 128
    head_warmup_steps: int = 0
    head_learning_rate: Optional[float] = None
    training: dict[str, Any] = field(default_factory=dict)
    fast_dropout: bool = True
    source: str = "<recipe>"

    def training_arguments(self) -> TrainingArguments:
        # The dataset's special_tokens_mask column is for the collator, not the model's forward.
        values = {"output_dir": self.output_dir, **self.training, "remove_unused_columns": False}
        return training_arguments_from(values, self.source)

    def data_dir(self) -> str:
        return resolve_data_dir(self.data.dir, self.source)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_pretrain_recipe(values: Any, source: str = "<recipe>") -> PretrainRecipe:
    """Check and build a `PretrainRecipe` from a mapping; errors name the source and the field."""
    if not isinstance(values, dict):
        raise RecipeError(f"{source}: a pretraining recipe must be a mapping of fields")
    values = copy.deepcopy(values)
    if "base_model" not in values:
        raise RecipeError(f"{source}: missing required field 'base_model'")
    if "source" in values:
        raise RecipeError(f"{source}: unknown field(s) ['source']")
    values["data"] = build_section(PretrainDataSection, values.get("data"), f"{source}: data")
    recipe = build_section(PretrainRecipe, {**values, "source": source}, source)

    def bad(name: str, expected: str, value: Any):
        return RecipeError(f"{source}: {name} must be {expected}, got {value!r}")

    if not isinstance(recipe.base_model, str) or not recipe.base_model:
        raise bad("base_model", "a model id or directory", recipe.base_model)
    if not isinstance(recipe.output_dir, str) or not recipe.output_dir:
        raise bad("output_dir", "a directory", recipe.output_dir)
    data = recipe.data
    if data.format != "cs224n":
        raise bad("data.format", "'cs224n'", data.format)
    if data.on_bad_rows not in ("raise", "skip"):
        raise bad("data.on_bad_rows", "'raise' or 'skip'", data.on_bad_rows)
    if isinstance(data.tasks, str):
        data.tasks = [data.tasks]
    if not isinstance(data.tasks, list) or not data.tasks:
        raise bad("data.tasks", "a non-empty list of task names", data.tasks)
    unknown = sorted(set(map(str, data.tasks)) - set(CS224N_TASKS))
    if unknown:
        raise RecipeError(f"{source}: data.tasks: unknown task(s) {unknown}; known tasks are {sorted(CS224N_TASKS)}")
    if data.max_sentences is not None and not (_is_int(data.max_sentences) and data.max_sentences > 0):
        raise bad("data.max_sentences", "a positive integer or null", data.max_sentences)
    if not (_is_int(data.eval_sentences) and data.eval_sentences >= 0):
        raise bad("data.eval_sentences", "a non-negative integer", data.eval_sentences)
    p = recipe.mlm_probability
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p < 1.0:
        raise bad("mlm_probability", "a number between 0 and 1 (exclusive)", p)
    if not (_is_int(recipe.max_length) and recipe.max_length >= 8):
        raise bad("max_length", "an integer >= 8", recipe.max_length)
    if not (_is_int(recipe.head_warmup_steps) and recipe.head_warmup_steps >= 0):
        raise bad("head_warmup_steps", "a non-negative integer", recipe.head_warmup_steps)
    lr = recipe.head_learning_rate
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
        raise bad("head_learning_rate", "a positive number or null", lr)
    if not isinstance(recipe.fast_dropout, bool):
        raise bad("fast_dropout", "true or false", recipe.fast_dropout)
    if not isinstance(recipe.training, dict):
        raise bad("training", "a mapping of TrainingArguments fields", recipe.training)
    known = {f.name for f in fields(TrainingArguments)}
    unknown = sorted(set(recipe.training) - known)
    if unknown:
        raise RecipeError(f"{source}: training: unknown TrainingArguments field(s) {unknown}")
    recipe.training_arguments()  # TrainingArguments' own checks, with the file named
    return recipe


def load_pretrain_recipe(path: str, overrides: Optional[Sequence[str]] = None) -> PretrainRecipe:
    """Read a pretraining recipe, apply `overrides` ("a.b=value", value parsed as YAML), and check it."""
    return parse_pretrain_recipe(read_recipe_values(path, overrides), source=path)


# ----------------------------------------------------------------------------------------------- text
def _clean(text: Optional[str]) -> str:
    return " ".join(text.split()) if text else ""


def task_sentences(
    data_dir: str, tasks: Sequence[str], split: str = "train", on_bad_rows: str = "raise"
) -> list[str]:
    """Every sentence of the tasks' `split` files, both sides of a pair, whitespace-normalised, empty
    ones dropped, each distinct sentence once (first occurrence wins: task order, then column, then row)."""
    loaded = load_cs224n(data_dir, split, tasks=list(tasks), on_bad_rows=on_bad_rows)
    seen: dict[str, None] = {}
    for dataset in loaded.values():
        for column in ("sentence1", "sentence2"):
            if column in dataset.column_names:
                for text in dataset[column]:
                    text = _clean(text)
                    if text:
                        seen.setdefault(text, None)
    return list(seen)


def _sample(sentences: list[str], limit: Optional[int], seed: int) -> list[str]:
    if limit is None or limit >= len(sentences):
        return sentences
    keep = np.sort(np.random.default_rng(seed).permutation(len(sentences))[:limit])
    return [sentences[i] for i in keep]


def tokenize_sentences(sentences: Sequence[str], tokenizer, max_length: int) -> datasets.Dataset:
    """A dataset of unpadded token ids (plus `special_tokens_mask`, which the MLM collator uses so that
    [CLS], [SEP] and padding are never masked)."""
    dataset = datasets.Dataset.from_dict({"text": list(sentences)})
    return dataset.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length, return_special_tokens_mask=True),
        batched=True,
        remove_columns=["text"],
        desc="tokenizing",
    )


def mlm_collator(tokenizer, mlm_probability: float = 0.15, seed: Optional[int] = None) -> DataCollatorForLanguageModeling:
    """transformers' masked-LM collator (80% [MASK], 10% random token, 10% unchanged)."""
    return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability, seed=seed)


@torch.no_grad()
def masked_lm_loss(model, dataset, tokenizer, mlm_probability: float = 0.15, batch_size: int = 64, seed: int = 0) -> float:
    """Mean cross-entropy per masked token over `dataset`, with a fixed (seeded) masking, so two calls
    on the same data see the same masks and their losses compare."""
    if len(dataset) == 0:
        return float("nan")
    collator = mlm_collator(tokenizer, mlm_probability, seed=seed)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for start in range(0, len(dataset), batch_size):
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = {k: v.to(device) for k, v in collator(rows).items()}
            labels = batch.pop("labels")
            logits = model(**batch).logits
            total += float(F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="sum"))
            count += int((labels != -100).sum())
    finally:
        model.train(was_training)
    return total / count if count else float("nan")


# ---------------------------------------------------------------------------------------------- model
def load_mlm_model(base_model: str):
    """`AutoModelForMaskedLM` on `base_model` (a packaged copy is used when installed) and the names of
    the head tensors the checkpoint lacks, which are therefore newly initialised."""
    model, info = AutoModelForMaskedLM.from_pretrained(resolve_base_model(base_model), output_loading_info=True)
    new = sorted(info.get("missing_keys") or [])
    if new:
        logger.warning(
            "%s has no masked-LM head weights for %s: they are newly initialised%s",
            base_model,
            new,
            "" if any("word_embeddings" in k for k in new) else " (the output matrix is tied to the word embeddings)",
        )
    return model, new


class HeadWarmupCallback(TrainerCallback):
    """For the first `steps` optimizer steps only the MLM head trains: the encoder's gradients are set
    to None just before the optimizer step (DDP has already reduced them, identically on every rank),
    so AdamW leaves those parameters exactly as they are. `requires_grad` is never flipped.

    The word embeddings belong to the encoder and stay frozen too (the output matrix, tied to them,
    therefore also waits). Gradient clipping runs before this hook, so during warm-up the head's
    gradients are clipped by the norm of all gradients: a smaller step, never a larger one.
    """

    def __init__(self, encoder_parameters, steps: int):
        self.frozen = list(encoder_parameters)
        self.steps = steps

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if state.global_step < self.steps:
            for param in self.frozen:
                param.grad = None


def mlm_optimizer(trainer: Trainer, head_learning_rate: float):
    """The Trainer's optimizer class (`training.optim`) with the MLM head's own parameters at
    `head_learning_rate` and the encoder's at `training.learning_rate`; no weight decay on biases and
    LayerNorm weights, as the Trainer does. The learning-rate schedule scales both alike."""
    model, args = trainer.model, trainer.args
    encoder_ids = {id(p) for p in model.base_model.parameters()}
    decay = set(trainer.get_decay_parameter_names(model))
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((id(param) not in encoder_ids, name in decay), []).append(param)
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    param_groups = [
        {
            "params": params,
            "weight_decay": args.weight_decay if with_decay else 0.0,
            "lr": head_learning_rate if is_head else args.learning_rate,
        }
        for (is_head, with_decay), params in sorted(groups.items())
    ]
    return optimizer_cls(param_groups, **optimizer_kwargs)


def save_encoder(mlm_model, base_model: str, output_dir: str, tokenizer=None) -> None:
    """Write the MLM model's encoder as a complete base model (`AutoModel.from_pretrained(output_dir)`).

    The encoder inside a masked-LM model has no pooler; the base's own pooler is kept, so the saved
    model loads with no missing weights and is a drop-in `base_model` for a multi-task recipe.
    """
    encoder = AutoModel.from_pretrained(resolve_base_model(base_model))
    missing, unexpected = encoder.load_state_dict(mlm_model.base_model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise ValueError(
            f"the masked-LM encoder does not match {base_model}: missing {sorted(missing)}, unexpected {sorted(unexpected)}"
        )
    encoder.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)


# ------------------------------------------------------------------------------------------------ job
def pretrain(recipe: PretrainRecipe, resume: Union[bool, str, None] = None) -> dict[str, Any]:
    """Run a pretraining recipe; returns (and writes to OUTPUT_DIR/pretraining_info.json) a summary."""
    from .run import check_output_dir

    check_output_dir(recipe.output_dir)
    args = recipe.training_arguments()
    data_dir = recipe.data_dir()
    tasks = list(recipe.data.tasks)
    train_text = _sample(task_sentences(data_dir, tasks, "train", recipe.data.on_bad_rows), recipe.data.max_sentences, args.seed)
    if not train_text:
        raise ValueError(f"{recipe.source}: the train files of {tasks} hold no sentences")
    eval_text: list[str] = []
    if recipe.data.eval_sentences:
        seen = set(train_text)
        held_out = [s for s in task_sentences(data_dir, tasks, "dev", recipe.data.on_bad_rows) if s not in seen]
        eval_text = _sample(held_out, recipe.data.eval_sentences, args.seed)

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(recipe.base_model))
    train_set = tokenize_sentences(train_text, tokenizer, recipe.max_length)
    eval_set = tokenize_sentences(eval_text, tokenizer, recipe.max_length) if eval_text else []
    set_seed(args.seed)  # the new head's initial weights
    model, new_head = load_mlm_model(recipe.base_model)
    if recipe.fast_dropout:
        use_fast_dropout(model)

    callbacks = []
    if recipe.head_warmup_steps:
        if not new_head:
            logger.info("head_warmup_steps=%d: the head is pretrained, warming it up anyway", recipe.head_warmup_steps)
        callbacks.append(HeadWarmupCallback(model.base_model.parameters(), recipe.head_warmup_steps))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=mlm_collator(tokenizer, recipe.mlm_probability),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    if recipe.head_learning_rate is not None:
        trainer.optimizer = mlm_optimizer(trainer, recipe.head_learning_rate)
    eval_args = dict(tokenizer=tokenizer, mlm_probability=recipe.mlm_probability, seed=args.seed)
    before = masked_lm_loss(model, eval_set, **eval_args) if len(eval_set) else None
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume or None)
    train_seconds = time.perf_counter() - started
    after = masked_lm_loss(model, eval_set, **eval_args) if len(eval_set) else None

    info = {
        "base_model": recipe.base_model,
        "output_dir": os.path.abspath(recipe.output_dir),
        "tasks": tasks,
        "train_sentences": len(train_set),
        "eval_sentences": len(eval_set),
        "mlm_probability": recipe.mlm_probability,
        "max_length": recipe.max_length,
        "new_head_parameters": new_head,
        "head_warmup_steps": recipe.head_warmup_steps,
        "head_learning_rate": recipe.head_learning_rate,
        "global_step": trainer.state.global_step,
        "train_loss": round(float(output.training_loss), 4),
        "train_seconds": round(train_seconds, 1),
    }
    if before is not None:
        info["eval_mlm_loss_before"] = round(before, 4)
        info["eval_mlm_loss_after"] = round(after, 4)
        info["eval_perplexity_before"] = round(math.exp(min(before, 50.0)), 2)
        info["eval_perplexity_after"] = round(math.exp(min(after, 50.0)), 2)
    if trainer.is_world_process_zero():
        save_encoder(model, recipe.base_model, recipe.output_dir, tokenizer)
        with open(os.path.join(recipe.output_dir, INFO_NAME), "w") as f:
            json.dump({**info, "recipe": {k: v for k, v in asdict(recipe).items() if k != "source"}}, f, indent=2)
    return info
