"""Tasks read through `datasets` (`hf_pals.data.sources`): every source leaves in the canonical columns
(id, sentence1, sentence2, label), every label type is read, and every bad input stops the load with one
`TaskDataError` that names the task, the dataset or file, and the field. Tiny files in tmp_path, no model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import pytest

from hf_pals.data.sources import TaskData, TaskDataError, load_task_sets, load_task_split
from hf_pals.recipe import RecipeError, load_recipe
from hf_pals.tasks import TaskSpec

REPO = Path(__file__).resolve().parents[1]
TASK = "reviews"


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """`load_dataset` builds into tmp_path: no test reuses another's cached build, none fills ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    yield
    if bars:
        datasets.enable_progress_bars()


def spec(kind: str = "classification", **values) -> TaskSpec:
    values.setdefault("text_columns", ["sentence1"])
    if kind == "classification":
        values.setdefault("num_labels", 3)
    return TaskSpec.from_dict(TASK, {"kind": kind, **values})


def write_csv(path: Path, header: list, rows: list, delimiter: str = ",") -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def reviews_csv(tmp_path: Path, name: str = "reviews.csv", labels=(0, 2, 1)) -> Path:
    rows = [[f" review {i}, with a comma ", label, f"r{i}"] for i, label in enumerate(labels)]
    return write_csv(tmp_path / name, ["text", "stars", "review_id"], rows)


def load_error(task_spec, data, split="train", role="train", data_dir=None) -> str:
    with pytest.raises(TaskDataError) as err:
        load_task_split(task_spec, data, split, role=role, data_dir=data_dir)
    return str(err.value)


def assert_names(message: str, *parts: str) -> None:
    """The message names the task and every one of `parts` (dataset or file, field, values)."""
    for part in [f"task {TASK!r}", *parts]:
        assert part in message, f"{part!r} not in: {message}"


# ------------------------------------------------------------------------------------------ sources
def test_csv_files_relative_to_data_dir_one_split_at_a_time(tmp_path):
    reviews_csv(tmp_path)
    reviews_csv(tmp_path, "reviews-dev.csv", labels=(1, 1))
    write_csv(tmp_path / "reviews-test.csv", ["text", "review_id"], [["unseen", "t0"]])  # no label column
    data = TaskData(
        path="csv",
        data_files={"train": "reviews.csv", "dev": "reviews-dev.csv", "test": "reviews-test.csv"},
        eval_split="dev",
        columns={"sentence1": "text", "label": "stars", "id": "review_id"},
    )
    train = load_task_split(spec(), data, "train", data_dir=str(tmp_path))
    assert sorted(train.column_names) == ["id", "label", "sentence1"]
    assert train["id"] == ["r0", "r1", "r2"]
    assert train["sentence1"][0] == "review 0, with a comma"  # stripped, comma kept
    assert train["label"] == [0, 2, 1]
    assert isinstance(train.features["label"], datasets.ClassLabel) and train.features["label"].num_classes == 3
    assert train.features["id"] == datasets.Value("string")
    assert len(load_task_split(spec(), data, "dev", role="eval", data_dir=str(tmp_path))) == 2
    test = load_task_split(spec(), data, "test", role="test", data_dir=str(tmp_path))
    assert sorted(test.column_names) == ["id", "sentence1"] and test["id"] == ["t0"]


def test_tsv_through_load_kwargs_delimiter_pair_task(tmp_path):
    write_csv(tmp_path / "pairs.tsv", ["q1", "q2", "dup"], [["a, b", "c", 1], ["d", "e, f", 0]], delimiter="\t")
    data = TaskData(
        path="csv",
        data_files={"train": str(tmp_path / "pairs.tsv")},  # absolute: data.dir is not needed
        columns={"sentence1": "q1", "sentence2": "q2", "label": "dup"},
        load_kwargs={"delimiter": "\t"},
    )
    pair = spec("binary", text_columns=["sentence1", "sentence2"])
    train = load_task_split(pair, data, "train")
    assert train["sentence1"] == ["a, b", "d"] and train["sentence2"] == ["c", "e, f"]
    assert train["label"] == [1, 0] and train["id"] == ["0", "1"]  # no id, no idx: row numbers


def test_jsonl_regression_floats(tmp_path):
    write_jsonl(tmp_path / "sts.jsonl", [{"a": "x", "b": "y", "score": 4.5}, {"a": "p", "b": "q", "score": 0}])
    data = TaskData(path="json", data_files={"train": "sts.jsonl"}, columns={"sentence1": "a", "sentence2": "b", "label": "score"})
    train = load_task_split(spec("regression", text_columns=["sentence1", "sentence2"], label_max=5.0), data, "train", data_dir=str(tmp_path))
    assert train.features["label"] == datasets.Value("float32")
    assert train["label"] == pytest.approx([4.5, 0.0])


def test_jsonl_binary_float_labels_are_classes(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", [{"sentence1": "x", "label": 0.0}, {"sentence1": "y", "label": 1.0}])
    train = load_task_split(spec("binary"), TaskData(path="json", data_files={"train": "b.jsonl"}), "train", data_dir=str(tmp_path))
    assert train["label"] == [0, 1] and isinstance(train.features["label"], datasets.ClassLabel)


def test_parquet_string_labels_through_label_names(tmp_path):
    datasets.Dataset.from_dict({"sentence1": ["good", "bad", "fine"], "label": ["pos", "neg", "pos"]}).to_parquet(
        str(tmp_path / "train.parquet")
    )
    task = spec("binary", label_names=["neg", "pos"])
    train = load_task_split(task, TaskData(path="parquet", data_files={"train": "train.parquet"}), "train", data_dir=str(tmp_path))
    assert train["label"] == [1, 0, 1]
    assert train.features["label"].names == ["neg", "pos"]
    # The bundle stores the task as JSON: the names come back.
    stored = json.loads(json.dumps(task.to_dict()))
    assert stored["label_names"] == ["neg", "pos"]
    assert TaskSpec.from_dict(TASK, stored) == task


def glue_like(tmp_path: Path) -> Path:
    """A save_to_disk DatasetDict as GLUE has it: ClassLabel names, `idx`, a test split labelled -1."""
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"]), "idx": datasets.Value("int32")}
    )
    split = lambda labels: datasets.Dataset.from_dict(  # noqa: E731
        {"sentence": [f"s{i}" for i in range(len(labels))], "label": labels, "idx": [10 + i for i in range(len(labels))]},
        features=features,
    )
    path = tmp_path / "glue_sst2"
    datasets.DatasetDict({"train": split([0, 1, 1]), "validation": split([1, 0]), "test": split([-1, -1])}).save_to_disk(str(path))
    return path


def test_save_to_disk_dict_classlabel_names_adopted_idx_ids_unlabelled_test(tmp_path):
    data = TaskData(path=str(glue_like(tmp_path)), columns={"sentence1": "sentence"})
    task = spec("binary")
    assert task.label_names is None
    train = load_task_sets({TASK: task}, {TASK: data}, "train")[TASK]
    assert task.label_names == ("neg", "pos")  # adopted: a bundle of this task stores and predicts the names
    assert train["id"] == ["10", "11", "12"]  # the `idx` fallback
    assert train["label"] == [0, 1, 1] and train.features["label"].names == ["neg", "pos"]
    assert list(load_task_sets({TASK: task}, {TASK: data}, "eval")) == [TASK]
    test = load_task_sets({TASK: task}, {TASK: data}, "test")[TASK]
    assert "label" not in test.column_names and test["id"] == ["10", "11"]


def test_single_saved_dataset_is_split_train(tmp_path):
    path = tmp_path / "one"
    datasets.Dataset.from_dict({"sentence1": ["a", "b"], "label": [0, 1]}).save_to_disk(str(path))
    data = TaskData(path=str(path))
    assert load_task_split(spec("binary"), data, "train")["label"] == [0, 1]
    message = load_error(spec("binary"), data, "validation", role="eval")
    assert_names(message, str(path), "eval_split 'validation'", "one Dataset without splits")


def test_relative_saved_folder_is_found_under_data_dir_whatever_the_working_directory(tmp_path, monkeypatch):
    """A relative `path` to a `save_to_disk` folder resolves like relative `data_files`: under data.dir."""
    glue_like(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data = TaskData(path="glue_sst2", columns={"sentence1": "sentence"})
    train = load_task_split(spec("binary"), data, "train", data_dir=str(tmp_path))
    assert train["label"] == [0, 1, 1]
    monkeypatch.chdir(tmp_path)  # no data.dir: the working directory, as before
    assert load_task_split(spec("binary"), data, "validation", role="eval")["label"] == [1, 0]


@pytest.mark.parametrize("role, split", [("eval", "validation"), ("test", "test")])
def test_duplicate_ids_in_evaluation_or_test_rows_are_an_error(tmp_path, role, split):
    path = tmp_path / "dups"
    rows = {"id": ["a", "b", "a"], "sentence1": ["x", "y", "z"], "label": [0, 1, 0]}
    datasets.DatasetDict({split: datasets.Dataset.from_dict(rows)}).save_to_disk(str(path))
    data = TaskData(path=str(path), eval_split="validation", test_split="test")
    message = load_error(spec("binary"), data, split, role=role)
    assert_names(message, str(path), "column 'id'", "rows 0 and 2", "'a'")


def test_duplicate_ids_in_training_rows_are_allowed(tmp_path):
    path = tmp_path / "dups"
    datasets.Dataset.from_dict({"id": ["a", "a"], "sentence1": ["x", "y"], "label": [0, 1]}).save_to_disk(str(path))
    assert load_task_split(spec("binary"), TaskData(path=str(path)), "train")["id"] == ["a", "a"]


def test_classlabel_names_must_match_label_names(tmp_path):
    data = TaskData(path=str(glue_like(tmp_path)), columns={"sentence1": "sentence"})
    message = load_error(spec("binary", label_names=["pos", "neg"]), data)
    assert_names(message, "glue_sst2", "split 'train'", "column 'label'", "['neg', 'pos']", "['pos', 'neg']", "label_names")


def test_bare_id_classlabel_takes_the_tasks_label_names(tmp_path):
    path = tmp_path / "bare"
    features = datasets.Features({"sentence1": datasets.Value("string"), "label": datasets.ClassLabel(num_classes=2)})
    datasets.Dataset.from_dict({"sentence1": ["a", "b"], "label": [1, 0]}, features=features).save_to_disk(str(path))
    train = load_task_split(spec("binary", label_names=["neg", "pos"]), TaskData(path=str(path)), "train")
    assert train.features["label"].names == ["neg", "pos"] and train["label"] == [1, 0]
    task = spec("binary")
    load_task_sets({TASK: task}, {TASK: TaskData(path=str(path))}, "train")
    assert task.label_names is None  # "0", "1" name no class


def test_glue_regression_test_split_of_minus_one_is_unlabelled(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", [{"sentence1": "a", "sentence2": "b", "label": -1.0}] * 2)
    data = TaskData(path="json", data_files={"test": "test.jsonl"})
    task = spec("regression", text_columns=["sentence1", "sentence2"], label_max=5.0)
    test = load_task_split(task, data, "test", role="test", data_dir=str(tmp_path))
    assert "label" not in test.column_names


def test_unlabelled_split_cannot_train(tmp_path):
    data = TaskData(path=str(glue_like(tmp_path)), columns={"sentence1": "sentence"})
    message = load_error(spec("binary"), data, "test", role="train")
    assert_names(message, "glue_sst2", "split 'test'", "every label is -1")


def test_minus_one_among_labelled_rows_is_an_error(tmp_path):
    reviews_csv(tmp_path, labels=(0, -1, 1))
    data = TaskData(path="csv", data_files={"train": "reviews.csv"}, columns={"sentence1": "text", "label": "stars"})
    for role in ("train", "test"):
        message = load_error(spec(), data, role=role, data_dir=str(tmp_path))
        assert_names(message, "reviews.csv", "column 'stars'", "row 1", "-1")


# ------------------------------------------------------------------------------------- bad inputs
def csv_task(tmp_path, labels=(0, 2, 1), **values) -> TaskData:
    reviews_csv(tmp_path, labels=labels)
    return TaskData(**{"path": "csv", "data_files": {"train": "reviews.csv"}, "columns": {"sentence1": "text", "label": "stars"}, **values})


def test_mapped_column_missing_lists_the_columns(tmp_path):
    data = csv_task(tmp_path, columns={"sentence1": "txt", "label": "stars"})
    message = load_error(spec(), data, data_dir=str(tmp_path))
    assert_names(message, "reviews.csv", "split 'train'", "columns.sentence1", "'txt'", "['text', 'stars', 'review_id']")
    data = csv_task(tmp_path, columns={"sentence1": "text", "label": "stars", "id": "uid"})
    assert_names(load_error(spec(), data, data_dir=str(tmp_path)), "columns.id", "'uid'", "'review_id'")


def test_unmapped_label_column_missing_for_training(tmp_path):
    message = load_error(spec(), csv_task(tmp_path, columns={"sentence1": "text"}), data_dir=str(tmp_path))
    assert_names(message, "reviews.csv", "label: no column 'label'", "'stars'")


def test_split_missing_from_data_files_mapping(tmp_path):
    message = load_error(spec(), csv_task(tmp_path), "validation", role="eval", data_dir=str(tmp_path))
    assert_names(message, "reviews.csv", "eval_split 'validation'", "data_files", "['train']")


def test_split_missing_from_load_dataset(tmp_path):
    data = csv_task(tmp_path, data_files="reviews.csv", eval_split="dev")  # one file: load_dataset calls it train
    message = load_error(spec(), data, "dev", role="eval", data_dir=str(tmp_path))
    assert_names(message, "csv (reviews.csv)", "eval_split 'dev'", "not a split", "['train']")


def test_split_missing_from_save_to_disk_dict(tmp_path):
    data = TaskData(path=str(glue_like(tmp_path)), columns={"sentence1": "sentence"}, test_split="test_matched")
    message = load_error(spec("binary"), data, "test_matched", role="test")
    assert_names(message, "glue_sst2", "test_split 'test_matched'", "['test', 'train', 'validation']")


def test_split_missing_from_hub_style_folder(tmp_path):
    repo = tmp_path / "my_reviews"
    repo.mkdir()
    for split in ("train", "test"):  # the Hub's layout: the file names are the splits
        reviews_csv(repo, f"{split}.csv")
    data = TaskData(path=str(repo), columns={"sentence1": "text", "label": "stars"})
    assert len(load_task_split(spec(), data, "train")) == 3
    message = load_error(spec(), data, "validation", role="eval")
    assert_names(message, str(repo), "eval_split 'validation'", "'train', 'test'")


def test_missing_file_and_unknown_dataset(tmp_path):
    data = TaskData(path="csv", data_files={"train": "nope.csv"}, columns={"sentence1": "text"})
    assert_names(load_error(spec(), data, data_dir=str(tmp_path)), "data_files", str(tmp_path / "nope.csv"))
    message = load_error(spec(), TaskData(path=str(tmp_path / "no_such_folder")))
    assert_names(message, "path", "no_such_folder")


@pytest.mark.skipif(not datasets.config.HF_HUB_OFFLINE, reason="needs HF_HUB_OFFLINE=1 (conftest sets it)")
def test_unreachable_hub_id_offline():
    assert_names(load_error(spec(), TaskData(path="nobody/no-such-dataset")), "path", "nobody/no-such-dataset")


@pytest.mark.parametrize(
    "labels, kind, values, parts",
    [
        ((0, 3, 1), "classification", {}, ["row 1", "label 3 is outside 0..2"]),
        ((0, 2, 1), "binary", {}, ["row 1", "label 2 is outside 0..1"]),
        (("neg", "meh"), "binary", {"label_names": ["neg", "pos"]}, ["row 1", "'meh' is not in label_names ['neg', 'pos']"]),
        (("neg", "pos"), "binary", {}, ["row 0", "'neg' is a string", "label_names"]),
        ((0.5, 1), "binary", {}, ["row 0", "0.5 is not a class number"]),
        ((1.5, "high"), "regression", {}, ["row 1", "regression label 'high' is not a number"]),
    ],
)
def test_bad_labels_name_the_row_and_the_column(tmp_path, labels, kind, values, parts):
    message = load_error(spec(kind, **values), csv_task(tmp_path, labels=labels), data_dir=str(tmp_path))
    assert_names(message, "reviews.csv", "split 'train'", "column 'stars'", *parts)


@pytest.mark.parametrize("contents", ["text,stars\n", ""], ids=["header-only", "zero-bytes"])
def test_empty_csv_split(tmp_path, contents):
    (tmp_path / "empty.csv").write_text(contents)
    data = TaskData(path="csv", data_files={"train": "empty.csv"}, columns={"sentence1": "text", "label": "stars"})
    assert_names(load_error(spec(), data, data_dir=str(tmp_path)), "empty.csv", "train_split 'train' is empty")


def test_empty_jsonl_split(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    data = TaskData(path="json", data_files={"train": "empty.jsonl"})
    assert_names(load_error(spec(), data, data_dir=str(tmp_path)), "empty.jsonl", "train_split 'train' is empty")


def test_empty_saved_split(tmp_path):
    path = tmp_path / "saved"
    empty = datasets.Dataset.from_dict({"sentence1": [], "label": []}, features=datasets.Features(
        {"sentence1": datasets.Value("string"), "label": datasets.Value("int64")}))
    full = datasets.Dataset.from_dict({"sentence1": ["a"], "label": [1]})
    datasets.DatasetDict({"train": full, "validation": empty}).save_to_disk(str(path))
    # datasets saves an empty split without shards and cannot read it back; the other splits still load.
    assert load_task_split(spec("binary"), TaskData(path=str(path)), "train")["label"] == [1]
    message = load_error(spec("binary"), TaskData(path=str(path)), "validation", role="eval")
    assert_names(message, str(path / "validation"), "eval_split 'validation' is empty")
    empty.save_to_disk(str(tmp_path / "one_empty"))
    assert_names(load_error(spec("binary"), TaskData(path=str(tmp_path / "one_empty"))), "one_empty", "is empty")


def test_regression_task_on_a_classlabel(tmp_path):
    data = TaskData(path=str(glue_like(tmp_path)), columns={"sentence1": "sentence"})
    message = load_error(spec("regression"), data)
    assert_names(message, "glue_sst2", "column 'label'", "ClassLabel", "regression task")


def test_classlabel_with_other_class_count(tmp_path):
    data = TaskData(path=str(glue_like(tmp_path)), columns={"sentence1": "sentence"})
    message = load_error(spec("classification", num_labels=5), data)
    assert_names(message, "glue_sst2", "column 'label'", "2 classes", "num_labels 5")


def test_pair_task_with_sentence1_mapped_only(tmp_path):
    write_csv(tmp_path / "pairs.csv", ["q1", "q2", "label"], [["a", "b", 1]])
    data = TaskData(path="csv", data_files={"train": "pairs.csv"}, columns={"sentence1": "q1"})
    pair = spec("binary", text_columns=["sentence1", "sentence2"])
    message = load_error(pair, data, data_dir=str(tmp_path))
    assert_names(message, "pairs.csv", "columns.sentence2", "pair task", "['q1', 'q2', 'label']")
    # Names not mapped are looked up as they are: a dataset's own sentence2 column completes the pair.
    write_csv(tmp_path / "pairs.csv", ["q1", "sentence2", "label"], [["a", "b", 1]])
    assert load_task_split(pair, data, "train", data_dir=str(tmp_path))["sentence2"] == ["b"]


def test_text_columns_that_disagree_with_the_mapping(tmp_path):
    write_csv(tmp_path / "pairs.csv", ["q1", "q2", "label"], [["a", "b", 1]])
    data = TaskData(path="csv", data_files={"train": "pairs.csv"}, columns={"sentence1": "q1", "sentence2": "q2"})
    message = load_error(spec("binary"), data, data_dir=str(tmp_path))
    assert_names(message, "pairs.csv", "columns map ['sentence1', 'sentence2']", "text_columns are ['sentence1']")


def test_bad_text_names_row(tmp_path):
    write_csv(tmp_path / "r.csv", ["text", "stars"], [["fine", 1], ["   ", 0]])
    data = TaskData(path="csv", data_files={"train": "r.csv"}, columns={"sentence1": "text", "label": "stars"})
    assert_names(load_error(spec(), data, data_dir=str(tmp_path)), "r.csv", "column 'text'", "row 1", "empty text")


# ------------------------------------------------------------------------------------ recipe layer
def write_recipe(tmp_path: Path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text("base_model: sentence-transformers/all-MiniLM-L6-v2\ntraining: {max_steps: 2}\n" + text)
    return str(path)


def test_recipe_datasets_task_with_files_under_data_dir(tmp_path):
    reviews_csv(tmp_path)
    reviews_csv(tmp_path, "reviews-dev.csv", labels=(2,))
    path = write_recipe(
        tmp_path,
        f"""data: {{dir: {tmp_path}}}
tasks:
  reviews:
    kind: classification
    num_labels: 3
    metric: [accuracy, f1]
    label_names: [bad, ok, good]
    data:
      path: csv
      data_files: {{train: reviews.csv, dev: reviews-dev.csv}}
      eval_split: dev
      test_split: null
      columns: {{sentence1: text, label: stars, id: review_id}}
  pairs:
    kind: binary
    data: {{path: csv, data_files: {{train: p.csv}}, columns: {{sentence1: a, sentence2: b}}}}
""",
    )
    recipe = load_recipe(path)
    specs, task_data = recipe.task_specs(), recipe.task_data()
    assert specs[TASK].text_columns == ("sentence1",) and specs[TASK].metrics == ("accuracy", "f1")
    assert specs[TASK].label_names == ("bad", "ok", "good")
    assert specs["pairs"].text_columns == ("sentence1", "sentence2")  # from the mapping
    assert task_data[TASK] == TaskData(
        path="csv",
        data_files={"train": "reviews.csv", "dev": "reviews-dev.csv"},
        eval_split="dev",
        test_split=None,
        columns={"sentence1": "text", "label": "stars", "id": "review_id"},
    )
    assert recipe.data_dir() == str(tmp_path)
    only = {TASK: specs[TASK]}
    train = load_task_sets(only, task_data, "train", recipe.data_dir())[TASK]
    assert train.features["label"].names == ["bad", "ok", "good"] and train["id"] == ["r0", "r1", "r2"]
    assert load_task_sets(only, task_data, "eval", recipe.data_dir())[TASK]["label"] == [2]
    assert load_task_sets(only, task_data, "test", recipe.data_dir()) == {}  # test_split: null


@pytest.mark.parametrize("name", ["cs224n_pals.yaml", "tiny.yaml"])
def test_cs224n_recipes_read_the_handout_files(name):
    recipe = load_recipe(str(REPO / "recipes" / name))
    task_data = recipe.task_data()
    assert sorted(task_data) == ["quora", "sst", "sts"]
    for data in task_data.values():
        assert (data.source, data.train_split, data.eval_split, data.test_split) == ("cs224n", "train", "dev", "test")
    assert recipe.task_specs()["sst"].num_labels == 5


def test_cfimdb_recipe_reads_tab_separated_files_under_data_dir(tmp_path):
    header = ["", "id", "sentence", "sentiment"]
    write_csv(tmp_path / "ids-cfimdb-train.csv", header, [[0, "a1", " great film", 1], [1, "a2", " dull", 0]], "\t")
    write_csv(tmp_path / "ids-cfimdb-dev.csv", header, [[0, "d1", "fine", 1]], "\t")
    write_csv(tmp_path / "ids-cfimdb-test-student.csv", ["", "id", "sentence"], [[0, "t1", "who knows"]], "\t")
    recipe = load_recipe(str(REPO / "recipes" / "cs224n_cfimdb_pals.yaml"), [f"data.dir={tmp_path}"])
    specs, task_data = recipe.task_specs(), recipe.task_data()
    assert task_data["sst"].source == "cs224n" and task_data["cfimdb"].source == "datasets"
    assert specs["cfimdb"].text_columns == ("sentence1",) and specs["cfimdb"].label_names == ("negative", "positive")
    only = {"cfimdb": specs["cfimdb"]}
    train = load_task_sets(only, task_data, "train", recipe.data_dir())["cfimdb"]
    assert train["id"] == ["a1", "a2"] and train["sentence1"] == ["great film", "dull"] and train["label"] == [1, 0]
    test = load_task_sets(only, task_data, "test", recipe.data_dir())["cfimdb"]
    assert test["id"] == ["t1"] and "label" not in test.column_names


TASKS_BLOCK = """data: {{dir: /tmp}}
tasks:
  reviews:
{body}
"""


@pytest.mark.parametrize(
    "body, parts",
    [
        ("    data: {path: csv, data_files: {train: r.csv}}", ["tasks.reviews", "kind is not set"]),
        (
            "    kind: binary\n    data: {path: csv, colums: {sentence1: text}}",
            ["tasks.reviews.data", "unknown field(s) ['colums']", "columns"],
        ),
        ("    kind: binary\n    data: {data_files: {train: r.csv}}", ["tasks.reviews.data", "path is not set"]),
        (
            "    kind: binary\n    data: {path: csv, columns: {text: review}}",
            ["tasks.reviews.data", "columns: unknown name(s) ['text']"],
        ),
        ("    kind: binary\n    data: {path: csv, train_split: [a, b]}", ["tasks.reviews.data", "train_split"]),
    ],
)
def test_bad_data_entries_name_file_task_and_field(tmp_path, body, parts):
    path = write_recipe(tmp_path, TASKS_BLOCK.format(body=body))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    for part in [path, *parts]:
        assert part in str(err.value), f"{part!r} not in: {err.value}"


def test_task_given_twice_in_a_recipe_file(tmp_path):
    path = write_recipe(tmp_path, "tasks:\n  sst: {}\n  quora: {}\n  sst: {pooling: cls}\n")
    # lines: 1 base_model, 2 training, 3 tasks, 4 sst, 5 quora, 6 sst again
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    message = str(err.value)
    for part in [path, "'sst' is given twice", "first on line 4", "line 6"]:
        assert part in message, f"{part!r} not in: {message}"


def test_yaml_merge_keys_still_load(tmp_path):
    """Refusing repeated keys must not refuse YAML's `<<: *anchor` (a merged key may be overridden)."""
    path = write_recipe(tmp_path, "tasks:\n  sst: &common {pooling: cls}\n  quora: {<<: *common, pooling: max}\n  sts: {<<: *common}\n")
    specs = load_recipe(path).task_specs()
    assert (specs["sst"].pooling, specs["quora"].pooling, specs["sts"].pooling) == ("cls", "max", "cls")
