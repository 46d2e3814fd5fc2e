"""recipes/glue_pals.yaml end to end on a local dataset repository shaped like the Hub's nyu-mll/glue.

The fixture writes, for each of the paper's 8 GLUE configs, parquet files `<config>/<split>-00000-of-00001.parquet`
with GLUE's column names, `idx`, its `ClassLabel` names (float32 scores for STS-B) and test splits whose
labels are all -1, plus a README.md whose YAML header declares the configs the way the Hub's GLUE repo
does. `datasets.load_dataset(<root>, "mrpc", split="train")` then reads it offline, the call the recipe
makes with path nyu-mll/glue, so the real recipe runs with only `data.path` (and a tiny base) overridden.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from hf_pals.cli import main

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "recipes" / "glue_pals.yaml")

#: config -> (text columns, ClassLabel names or None for STS-B's float32 score, splits), as nyu-mll/glue has them.
GLUE = {
    "cola": (["sentence"], ["unacceptable", "acceptable"], ["train", "validation", "test"]),
    "sst2": (["sentence"], ["negative", "positive"], ["train", "validation", "test"]),
    "mrpc": (["sentence1", "sentence2"], ["not_equivalent", "equivalent"], ["train", "validation", "test"]),
    "qqp": (["question1", "question2"], ["not_duplicate", "duplicate"], ["train", "validation", "test"]),
    "stsb": (["sentence1", "sentence2"], None, ["train", "validation", "test"]),
    "mnli": (
        ["premise", "hypothesis"],
        ["entailment", "neutral", "contradiction"],
        ["train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"],
    ),
    "qnli": (["question", "sentence"], ["entailment", "not_entailment"], ["train", "validation", "test"]),
    "rte": (["sentence1", "sentence2"], ["entailment", "not_entailment"], ["train", "validation", "test"]),
}
#: Rows per split kind; test splits get a different count per config so row counts are checked per file.
ROWS = {"train": 32, "validation": 24}
#: The GLUE submission file of each (config, test split), and what its predictions look like.
SUBMISSIONS = {
    ("cola", "test"): "CoLA.tsv",
    ("sst2", "test"): "SST-2.tsv",
    ("mrpc", "test"): "MRPC.tsv",
    ("qqp", "test"): "QQP.tsv",
    ("stsb", "test"): "STS-B.tsv",
    ("mnli", "test_matched"): "MNLI-m.tsv",
    ("mnli", "test_mismatched"): "MNLI-mm.tsv",
    ("qnli", "test"): "QNLI.tsv",
    ("rte", "test"): "RTE.tsv",
}
WORDS = "the a cat dog sat ran on under mat table quickly slowly big small red blue house tree".split()


def _sentence(seed: int) -> str:
    n = 3 + seed % 5
    return " ".join(WORDS[(seed * 7 + 3 * i) % len(WORDS)] for i in range(n))


def _split_rows(config: str, split: str, index: int) -> int:
    if split.startswith("test"):
        return 10 + index + (3 if split == "test_mismatched" else 0)
    return ROWS["train" if split == "train" else "validation"] - (4 if split == "validation_mismatched" else 0)


def write_glue_like(root: Path) -> dict[tuple[str, str], list[int]]:
    """Write the GLUE-shaped repository under `root`; return each (config, test split)'s `idx` values."""
    import datasets

    test_ids = {}
    header = ["---", "configs:"]
    for index, (config, (columns, names, splits)) in enumerate(GLUE.items()):
        header += [f"- config_name: {config}", "  data_files:"]
        label = datasets.ClassLabel(names=names) if names else datasets.Value("float32")
        features = datasets.Features(
            {**{c: datasets.Value("string") for c in columns}, "label": label, "idx": datasets.Value("int32")}
        )
        for split in splits:
            n = _split_rows(config, split, index)
            offset = 1000 * (index + 1) + (500 if split.startswith("test") else 0)
            idx = list(range(offset, offset + n))  # GLUE's idx: not the row number
            rows = {c: [_sentence(i * (k + 2) + index) for i in range(n)] for k, c in enumerate(columns)}
            if split.startswith("test"):
                labels = [-1.0 if names is None else -1] * n
                test_ids[(config, split)] = idx
            elif names is None:
                labels = [round((i * 0.37) % 5.0, 2) for i in range(n)]
            else:
                labels = [i % len(names) for i in range(n)]
            dataset = datasets.Dataset.from_dict({**rows, "label": labels, "idx": idx}, features=features)
            (root / config).mkdir(parents=True, exist_ok=True)
            dataset.to_parquet(str(root / config / f"{split}-00000-of-00001.parquet"))
            header += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    header.append("---")
    (root / "README.md").write_text("\n".join(header) + "\n\n# GLUE-shaped fixture\n")
    return test_ids


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    return root, write_glue_like(root)


def _overrides(root: Path, cache: Path) -> list[str]:
    out = []
    for task in GLUE:
        out += ["--set", f"tasks.{task}.data.path={json.dumps(str(root))}"]
        out += ["--set", f"tasks.{task}.data.load_kwargs.cache_dir={json.dumps(str(cache))}"]
    return out


@pytest.fixture(scope="module")
def trained(glue_root, tiny_base, tmp_path_factory):
    root, _ = glue_root
    out = tmp_path_factory.mktemp("glue_run")
    cache = tmp_path_factory.mktemp("glue_cache")
    caps = "{" + ", ".join(f"{t}: 16" for t in GLUE) + "}"
    argv = ["train", RECIPE, "--output-dir", str(out), "--max-steps", "12", *_overrides(root, cache)]
    for assignment in (
        f"base_model={json.dumps(tiny_base)}",
        "max_length=32",
        "eval_batch_size=16",
        "sampling.steps_per_epoch=4",
        "training.per_device_train_batch_size=4",
        "training.logging_steps=6",
        "training.save_steps=12",
        f"data.max_eval_examples={caps}",
    ):
        argv += ["--set", assignment]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and sums stay in one order
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return out, root, cache


def test_glue_recipe_holds_the_papers_settings():
    from hf_pals.base_models import resolve_base_model
    from hf_pals.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    assert resolve_base_model(recipe.base_model) == "google-bert/bert-base-uncased"  # no download at parse time
    data = recipe.task_data()
    assert sorted(data) == sorted(GLUE)
    assert {(d.path, d.name) for d in data.values()} == {("nyu-mll/glue", t) for t in GLUE}
    specs = recipe.task_specs()
    assert specs["mnli"].num_labels == 3 and specs["stsb"].kind == "regression" and specs["stsb"].label_max == 5.0
    assert specs["cola"].metrics == ("matthews_correlation",) and specs["mrpc"].metrics == ("f1", "accuracy")
    assert data["mnli"].eval_split == ["validation_matched", "validation_mismatched"]
    pal = recipe.pal_config()
    assert (pal.pal_type, pal.pal_hidden_size, pal.pal_num_heads, pal.share_projections) == ("pal", 204, 6, True)
    args = recipe.training_arguments()
    assert (args.learning_rate, args.per_device_train_batch_size, args.max_steps) == (2e-5, 32, 60000)
    assert recipe.max_length == 128 and recipe.sampling.name == "annealed" and recipe.sampling.steps_per_epoch == 2400


def test_glue_fixture_reads_like_the_hub_glue(glue_root, tmp_path):
    import datasets

    root, _ = glue_root
    mrpc = datasets.load_dataset(str(root), "mrpc", split="train", cache_dir=str(tmp_path))
    assert mrpc.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert mrpc.features["label"].names == ["not_equivalent", "equivalent"]
    mnli = datasets.load_dataset(str(root), "mnli", cache_dir=str(tmp_path))
    assert sorted(mnli) == sorted(GLUE["mnli"][2])
    assert set(mnli["test_matched"]["label"]) == {-1}
    assert datasets.load_dataset(str(root), "stsb", split="test", cache_dir=str(tmp_path)).features["label"].dtype == "float32"


def test_glue_recipe_trains_and_reports_every_task(trained):
    out, _, _ = trained
    report = json.loads((out / "eval_results.json").read_text())
    expected = {
        "cola": {"matthews_correlation"},
        "sst2": {"accuracy"},
        "mrpc": {"f1", "accuracy"},
        "qqp": {"f1", "accuracy"},
        "stsb": {"pearson", "spearman"},
        "mnli": {"accuracy"},
        "mnli/validation_mismatched": {"accuracy"},
        "qnli": {"accuracy"},
        "rte": {"accuracy"},
    }
    for name, metrics in expected.items():
        assert metrics <= set(report[name]), (name, report[name])
        for metric in metrics:
            assert -1.0 <= report[name][metric] <= 1.0, (name, metric, report[name][metric])
    main_metrics = {"cola": "matthews_correlation", "mrpc": "f1", "qqp": "f1", "stsb": "pearson"}
    mains = [report[t][main_metrics.get(t, "accuracy")] for t in GLUE]
    assert report["overall_formula"] == "mean_of_main_metrics"
    assert report["overall"] == pytest.approx(sum(mains) / len(mains))
    assert report["main_metrics"]["mrpc"] == "f1" and report["main_metrics"]["stsb"] == "pearson"
    config = json.loads((out / "hf_pals_config.json").read_text())
    assert sorted(config["tasks"]) == sorted(GLUE)


@pytest.mark.one_thread
def test_glue_recipe_writes_the_glue_submission_files(trained, glue_root, tmp_path):
    out, root, cache = trained
    _, test_ids = glue_root
    predictions = tmp_path / "submission"
    argv = ["evaluate", str(out), "--recipe", RECIPE, "--split", "test", "--output", str(predictions)]
    assert main(argv + _overrides(root, cache)) == 0
    assert sorted(p.name for p in predictions.iterdir()) == sorted(SUBMISSIONS.values())
    allowed = {
        "MNLI-m.tsv": {"entailment", "neutral", "contradiction"},
        "MNLI-mm.tsv": {"entailment", "neutral", "contradiction"},
        "QNLI.tsv": {"entailment", "not_entailment"},
        "RTE.tsv": {"entailment", "not_entailment"},
    }
    for (config, split), name in SUBMISSIONS.items():
        with open(predictions / name, newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
        assert rows[0] == ["index", "prediction"], name
        assert [int(r[0]) for r in rows[1:]] == test_ids[(config, split)], name
        values = [r[1] for r in rows[1:]]
        if name == "STS-B.tsv":
            assert all(math.isfinite(float(v)) for v in values), values
            assert any(not v.isdigit() for v in values)  # scores, not class numbers
        else:
            assert set(values) <= allowed.get(name, {"0", "1"}), (name, set(values))
