"""Publishing a model bundle on the Hugging Face Hub: the upload folder, its model card, the push.

    hf-pals push runs/cs224n_pals user/minilm-pals-cs224n [--private] [--revision BRANCH]

`prepare_upload_folder` copies exactly what a downstream user needs out of a bundle (an allowlist:
config, safetensors adapters (when the bundle has them) and heads, the encoder when the bundle has one,
tokenizer files and the eval report) and renders README.md from `model_cards/hf_pals_model_card.md`
with `ModelCard`, so checkpoints, optimizer states and pickles never leave the machine. `push_to_hub`
uploads that folder with `HfApi.create_repo` + `HfApi.upload_folder` in one commit.

The card's metadata says `library_name: peft` (each task is a PEFT adapter the Hub can show as one; a
bundle without adapters names no library, as no single library's loader reads it whole), `base_model`,
tags, datasets and the eval report as a `model-index` of `EvalResult`s.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .bundle import (
    ADAPTER_WEIGHTS_NAME,
    BUNDLE_CONFIG_NAME,
    ENCODER_DIR,
    ENCODER_WEIGHTS_NAME,
    EVAL_RESULTS_NAME,
    HEADS_NAME,
    adapter_dir,
    bundle_has_adapters,
    read_bundle_config,
    weight_shapes,
    weights_file,
)
from .tasks import CS224N_TASKS, TaskSpec

logger = logging.getLogger("hf_pals")

#: The model card template, shipped in the package (`model_cards/` at the repository root links to it).
MODEL_CARD_TEMPLATE = Path(__file__).parent / "model_cards" / "hf_pals_model_card.md"
#: Tokenizer files at the top of a bundle (never pickles: no `*.bin`, `*.pkl`).
TOKENIZER_PATTERNS = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "*.model",
    "chat_template.jinja",
)
TAGS = ["pals", "peft", "multi-task", "bert"]
#: The tags of a bundle without adapters (a shared encoder, per-task heads and top layers).
TAGS_WITHOUT_ADAPTERS = ["multi-task", "bert"]
#: Remote paths an upload replaces as a whole, so a stale task or encoder of an earlier push cannot stay.
DELETE_PATTERNS = ["adapters/*", f"{ENCODER_DIR}/*"]


#: Hub datasets the CS224N files come from (task -> EvalResult fields). Their splits are the handout's,
#: which the dataset name says; pass `datasets=` to name others.
CS224N_DATASETS = {
    "sst": {
        "dataset_type": "stanfordnlp/sst",
        "dataset_name": "SST-5 (CS224N split)",
        "task_type": "text-classification",
    },
    "quora": {
        "dataset_type": "nyu-mll/glue",
        "dataset_config": "qqp",
        "dataset_name": "Quora Question Pairs (CS224N split)",
        "task_type": "text-classification",
    },
    "sts": {
        "dataset_type": "nyu-mll/glue",
        "dataset_config": "stsb",
        "dataset_name": "STS Benchmark (CS224N split)",
        "task_type": "sentence-similarity",
    },
}
#: Report name -> Hub metric id (https://hf.co/metrics).
METRIC_TYPES = {
    "accuracy": "accuracy",
    "f1": "f1",
    "matthews_correlation": "matthews_correlation",
    "pearson": "pearsonr",
    "spearman": "spearmanr",
}


def bundle_files(model_dir: str) -> list[str]:
    """Paths (relative to `model_dir`, "/"-separated) of the files a push uploads, README.md aside.

    Raises when a weights file is missing, pickle-only, or not a valid safetensors file.
    """
    config = read_bundle_config(model_dir)
    files = [BUNDLE_CONFIG_NAME, HEADS_NAME]
    weights_file(model_dir, HEADS_NAME)
    for task in config["tasks"] if bundle_has_adapters(config) else ():
        rel = os.path.relpath(adapter_dir(model_dir, task), model_dir)
        weights_file(os.path.join(model_dir, rel), ADAPTER_WEIGHTS_NAME)
        files += [f"{rel}/adapter_config.json", f"{rel}/{ADAPTER_WEIGHTS_NAME}"]
    if os.path.isdir(os.path.join(model_dir, ENCODER_DIR)):
        weights_file(os.path.join(model_dir, ENCODER_DIR), ENCODER_WEIGHTS_NAME)
        files += [f"{ENCODER_DIR}/config.json", f"{ENCODER_DIR}/{ENCODER_WEIGHTS_NAME}"]
    top = sorted(os.listdir(model_dir))
    files += [name for name in top if any(fnmatch.fnmatch(name, p) for p in TOKENIZER_PATTERNS)]
    if EVAL_RESULTS_NAME in top:
        files.append(EVAL_RESULTS_NAME)
    for rel in files:
        path = os.path.join(model_dir, rel)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: {model_dir} is not a complete hf_pals bundle")
        if rel.endswith(".safetensors"):
            weight_shapes(path)  # a truncated file fails here, naming it, not on the user's machine
    return [f.replace(os.sep, "/") for f in files]


def prepare_upload_folder(
    model_dir: str, out_dir: str, repo_id: Optional[str] = None, datasets: Optional[dict[str, str]] = None
) -> str:
    """Copy the files a push uploads from bundle `model_dir` into `out_dir` (new or empty) and write its
    README.md model card. Returns `out_dir`, which then holds exactly what `push_to_hub` uploads."""
    files = bundle_files(model_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ValueError(f"{out_dir} is not empty; the upload folder must hold only the bundle's files")
    for rel in files:
        target = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(model_dir, rel), target)
    skipped = sorted(set(os.listdir(model_dir)) - {f.split("/")[0] for f in files})
    if skipped:
        logger.info("not uploaded from %s: %s", model_dir, ", ".join(skipped))
    model_card(model_dir, repo_id=repo_id, datasets=datasets).save(os.path.join(out_dir, "README.md"))
    return out_dir


def push_to_hub(
    model_dir: str,
    repo_id: str,
    private: Optional[bool] = None,
    token: Optional[str] = None,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    datasets: Optional[dict[str, str]] = None,
):
    """Upload bundle `model_dir` to the Hub model repo `repo_id` (created if needed) in one commit.

    `revision` names a branch (created from main if missing); `token` defaults to the saved login or
    `HF_TOKEN`; `datasets` maps task -> Hub dataset id for the card. Files under `adapters/` and
    `encoder/` that this bundle does not have are deleted from the repo. Returns the `CommitInfo`.
    """
    api = HfApi(token=token)
    tasks = ", ".join(read_bundle_config(model_dir)["tasks"])
    with tempfile.TemporaryDirectory(prefix="hf_pals_push_") as tmp:
        folder = prepare_upload_folder(model_dir, tmp, repo_id=repo_id, datasets=datasets)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload hf_pals model ({tasks})",
            delete_patterns=DELETE_PATTERNS,
        )


# ------------------------------------------------------------------------------------------ model card
def model_card(model_dir: str, repo_id: Optional[str] = None, datasets: Optional[dict[str, str]] = None) -> ModelCard:
    """The bundle's model card: metadata from its config and eval report, text from the template.

    `datasets` maps task -> Hub dataset id; CS224N task names default to `CS224N_DATASETS`.
    """
    config = read_bundle_config(model_dir)
    tasks = {name: TaskSpec.from_dict(name, values) for name, values in config["tasks"].items()}
    report = _read_report(model_dir)
    split = report.get("split", "eval")
    model_name = (repo_id or os.path.basename(os.path.abspath(model_dir))).split("/")[-1]
    base = config["base_model_name_or_path"]
    has_adapters = bundle_has_adapters(config)
    sources = {t: dict(CS224N_DATASETS[t]) for t in tasks if t in CS224N_TASKS}
    for task, dataset_id in (datasets or {}).items():
        if task not in tasks:
            raise ValueError(f"datasets names task {task!r}; the bundle's tasks are {sorted(tasks)}")
        sources[task] = {"dataset_type": dataset_id, "dataset_name": dataset_id, "task_type": _task_type(tasks[task])}

    eval_results = []
    for task, source in sources.items():
        for metric, value in (report.get(task) or {}).items():
            if metric in METRIC_TYPES:
                eval_results.append(
                    EvalResult(
                        metric_type=METRIC_TYPES[metric],
                        metric_value=float(value),
                        metric_name=f"{task} {metric}",
                        task_name=task,
                        dataset_split=split,
                        **source,
                    )
                )
    card_data = ModelCardData(
        base_model=base if _is_hub_id(base) else None,
        library_name="peft" if has_adapters else None,
        tags=TAGS if has_adapters else TAGS_WITHOUT_ADAPTERS,
        datasets=sorted({s["dataset_type"] for s in sources.values()}) or None,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
        model_name=model_name,
        eval_results=eval_results or None,
    )
    rows = []
    for name, spec in tasks.items():
        results = report.get(name) or {}
        rows.append(
            {
                **spec.to_dict(),
                "inputs": " + ".join(f"`{c}`" for c in spec.text_columns),
                "pair_encoding": spec.pair_encoding if spec.is_pair else "-",
                "results": ", ".join(f"{k} {v:.4f}" for k, v in results.items() if isinstance(v, (int, float))) or "-",
            }
        )
    example = next(iter(tasks.values()))
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        model_name=model_name,
        repo_id=repo_id or model_name,
        base_model=base,
        has_encoder=os.path.isdir(os.path.join(model_dir, ENCODER_DIR)),
        has_adapters=has_adapters,
        top_layer_tasks=[name for name, spec in tasks.items() if spec.top_layer],
        tasks=rows,
        split=split,
        overall=report.get("overall"),
        overall_formula=report.get("overall_formula", "cs224n"),
        hf_pals_version=config.get("hf_pals_version", ""),
        max_length=config.get("max_length", 128),
        example_task=example.name,
        example_input='("first sentence", "second sentence")' if example.is_pair else '"a sentence"',
    )


def _read_report(model_dir: str) -> dict:
    path = os.path.join(model_dir, EVAL_RESULTS_NAME)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err


def _task_type(spec: TaskSpec) -> str:
    return "sentence-similarity" if spec.kind == "regression" and spec.is_pair else "text-classification"


def _is_hub_id(name: str) -> bool:
    """True for a Hub repo id ("org/name" or "name"), false for a local path."""
    return not os.path.isdir(name) and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None
