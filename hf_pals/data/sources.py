"""Where a task's examples come from: `datasets` (a Hub id, local data files, a `save_to_disk` folder)
or the CS224N handout's files, each giving one `datasets.Dataset` per task and split.

A recipe task's `data:` entry is a `TaskData`:

    tasks:
      mrpc:
        kind: binary
        text_columns: [sentence1, sentence2]
        metric: [f1, accuracy]
        data: {path: nyu-mll/glue, name: mrpc, train_split: train, eval_split: validation, test_split: test}
      qqp:
        ...
        data: {path: nyu-mll/glue, name: qqp, columns: {sentence1: question1, sentence2: question2}}
      reviews:
        data: {path: csv, data_files: {train: reviews.csv, dev: reviews-dev.csv}, eval_split: dev,
               columns: {sentence1: text, label: stars}, load_kwargs: {delimiter: "\\t"}}

`path` and `name` go to `datasets.load_dataset(path, name, split=..., data_files=..., revision=...)`, as in
transformers' run_glue.py; a folder written by `save_to_disk` is read with `datasets.load_from_disk`.
Relative `data_files` are resolved against the recipe's `data.dir` when it is set.

Every loaded split leaves here in one shape, whatever the source: `id` (str), `sentence1`, `sentence2`
(pair tasks) and `label` (a `ClassLabel` for classification and binary tasks, float32 for regression;
absent for an unlabelled split, such as GLUE's test splits, whose labels are all -1). `columns` maps
those names onto the dataset's own (`{sentence1: question1, label: is_duplicate}`); names not mapped are
looked up as they are, and `id` falls back to `idx`, then to the row number. Labels may be `ClassLabel`
ids, integers, strings named in the task's `label_names`, or numbers for regression.

Bad input stops the load with one error naming the task, the dataset and the field: a mapped column the
dataset lacks (the ones it has are listed), a split it lacks, an empty split, a label outside the task's
classes or not among its `label_names`, a non-numeric regression label, a label type that does not fit
the task's kind.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Sequence, Union

import datasets
from datasets.arrow_writer import SchemaInferenceError
from pandas.errors import EmptyDataError

from ..tasks import TaskSpec
from .cs224n import load_cs224n_file, cs224n_path

__all__ = ["SOURCES", "TaskData", "TaskDataError", "load_task_split", "load_task_sets", "task_splits", "eval_set_name"]

#: Where a task's data can come from.
SOURCES = ("datasets", "cs224n")
#: The names a loaded split's columns take, whatever the source calls them.
CANONICAL_COLUMNS = ("id", "sentence1", "sentence2", "label")
#: What a split is used for, and the `TaskData` field that names it.
ROLES = {"train": "train_split", "eval": "eval_split", "test": "test_split"}
#: The label GLUE (and run_glue.py) gives the rows of an unlabelled split.
UNLABELLED = -1


class TaskDataError(ValueError):
    """A task's data cannot be loaded as the recipe describes it; the message names task, dataset and field."""


@dataclass
class TaskData:
    """A recipe task's `data:` entry (see the module docstring).

    Args:
        source: "datasets" (the default) or "cs224n" (the handout's files under `data.dir`, read by
            `hf_pals.data.cs224n` with its row-level errors; `task` says which file set).
        path / name / revision / data_dir / data_files: `datasets.load_dataset`'s own arguments; `path` may
            also be a `save_to_disk` folder (a relative one is looked up under `data.dir` first, like
            relative `data_files`, then in the working directory).
        train_split / eval_split / test_split: the dataset's split names for training, evaluation (one or
            a list: MNLI's validation_matched and validation_mismatched; the first is the task's main
            evaluation set) and prediction (one or a list; None: the task has none).
        columns: canonical name (sentence1, sentence2, label, id) -> the dataset's column.
        load_kwargs: more keyword arguments for `load_dataset` (e.g. `delimiter: "\\t"` for TSV files).
        submission_files: test split -> the file name its predictions are written to (default
            `<task>.tsv`, or `<task>-<split>.tsv` for a task with several test splits).
        submission_labels: "ids" writes predicted class numbers, "names" the task's label names (GLUE's
            MNLI, QNLI and RTE files want the names; the others want numbers).
        task: for `source: cs224n`, the handout's task (sst, quora, sts); default: the task's name.
    """

    source: str = "datasets"
    path: Optional[str] = None
    name: Optional[str] = None
    revision: Optional[str] = None
    data_dir: Optional[str] = None
    data_files: Optional[Any] = None
    train_split: Optional[str] = "train"
    eval_split: Optional[Union[str, list[str]]] = "validation"
    test_split: Optional[Union[str, list[str]]] = "test"
    columns: dict[str, str] = field(default_factory=dict)
    load_kwargs: dict[str, Any] = field(default_factory=dict)
    submission_files: dict[str, str] = field(default_factory=dict)
    submission_labels: str = "ids"
    task: Optional[str] = None

    @classmethod
    def from_value(cls, value: Any, where: str) -> "TaskData":
        """A `TaskData` from a recipe mapping; unknown fields and bad values are errors naming `where`."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TaskDataError(f"{where}: expected a mapping, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise TaskDataError(f"{where}: unknown field(s) {unknown}; known fields are {sorted(known)}")
        data = cls(**value)
        data.check(where)
        return data

    def check(self, where: str) -> None:
        if self.source not in SOURCES:
            raise TaskDataError(f"{where}: source must be one of {list(SOURCES)}, got {self.source!r}")
        if self.source == "datasets" and not self.path:
            raise TaskDataError(f"{where}: path is not set (a Hub dataset id, a builder such as csv, or a folder)")
        if not isinstance(self.columns, dict) or not all(isinstance(v, str) for v in self.columns.values()):
            raise TaskDataError(f"{where}: columns must map {list(CANONICAL_COLUMNS)} to the dataset's column names")
        bad = sorted(set(self.columns) - set(CANONICAL_COLUMNS))
        if bad:
            raise TaskDataError(f"{where}: columns: unknown name(s) {bad}; map {list(CANONICAL_COLUMNS)} onto the dataset's")
        if self.submission_labels not in ("ids", "names"):
            raise TaskDataError(f"{where}: submission_labels must be 'ids' or 'names', got {self.submission_labels!r}")
        for role, attr in ROLES.items():
            value = getattr(self, attr)
            if value is not None and not isinstance(value, str) and not (
                isinstance(value, list) and value and all(isinstance(v, str) for v in value)
            ):
                raise TaskDataError(f"{where}: {attr} must be a split name or a list of them, got {value!r}")
        if isinstance(self.train_split, list):
            raise TaskDataError(f"{where}: train_split names one split, got {self.train_split!r}")

    @property
    def text_columns(self) -> Optional[tuple[str, ...]]:
        """The task's text columns as the mapping implies them (a pair when sentence2 is mapped), or None."""
        if "sentence2" in self.columns:
            return ("sentence1", "sentence2")
        if "sentence1" in self.columns:
            return ("sentence1",)
        return None

    def describe(self) -> str:
        """How the dataset is named in errors: `nyu-mll/glue (mrpc)`, `csv ({'train': ...})`, `CS224N files`."""
        if self.source == "cs224n":
            return "the CS224N files"
        detail = self.name or (self.data_files if self.data_files is not None else None)
        return f"{self.path}" + (f" ({detail})" if detail is not None else "")


def task_splits(data: TaskData, role: str) -> list[str]:
    """The split names of `role` ("train", "eval", "test"), as a list (empty when the task has none)."""
    value = getattr(data, ROLES[role])
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def eval_set_name(task: str, split: str, index: int) -> str:
    """The key of an evaluation set in reports: the task's name for its main set, `task/split` for others."""
    return task if index == 0 else f"{task}/{split}"


# ------------------------------------------------------------------------------------------- loading
def load_task_split(
    spec: TaskSpec,
    data: TaskData,
    split: str,
    *,
    role: str = "train",
    data_dir: Optional[str] = None,
    on_bad_rows: str = "raise",
) -> datasets.Dataset:
    """Split `split` of task `spec` from `data`, in the canonical columns (module docstring).

    `role` "test" allows an unlabelled split (its label column is dropped when every label is -1 or it has
    none); "train" and "eval" need labels. `data_dir` is the recipe's `data.dir`: the CS224N files' folder,
    and the folder relative `data_files` are resolved against. `on_bad_rows` applies to CS224N files."""
    where = f"task {spec.name!r}"
    if data.source == "cs224n":
        loaded = _load_cs224n(spec, data, split, role, data_dir, on_bad_rows, where)
        described = f"{where}, file {cs224n_path(data_dir, data.task or spec.name, split)}"
    else:
        raw = _load_raw(data, split, data_dir, f"{where}, dataset {data.describe()}", ROLES.get(role, "split"))
        described = f"{where}, dataset {data.describe()}, split {split!r}"
        loaded = canonical_split(spec, data, raw, split, role=role, where=described)
    if role in ("eval", "test"):
        check_unique_ids(loaded["id"], described)
    return loaded


def check_unique_ids(ids: Sequence[str], where: str) -> None:
    """Evaluation and prediction rows are written out by id (predictions, submission files): two rows with
    one id would make those files ambiguous, so they are an error naming the id and both rows."""
    first: dict[str, int] = {}
    for row, row_id in enumerate(ids):
        if row_id in first:
            raise TaskDataError(
                f"{where}: column 'id': rows {first[row_id]} and {row} (counting from 0) share the id {row_id!r}; evaluation and "
                f"test rows need unique ids (their predictions are written by id)"
            )
        first[row_id] = row


def _load_cs224n(spec, data, split, role, data_dir, on_bad_rows, where) -> datasets.Dataset:
    task = data.task or spec.name
    if not data_dir:
        raise TaskDataError(f"{where}: source cs224n reads the CS224N files from data.dir, which is not set")
    path = cs224n_path(data_dir, task, split)
    return load_cs224n_file(path, task, labeled=role != "test", on_bad_rows=on_bad_rows)


def _resolve_files(data_files: Any, data_dir: Optional[str]) -> Any:
    """`data_files` with relative paths joined to `data_dir` (strings, lists, or split -> paths)."""
    if data_files is None or not data_dir:
        return data_files
    if isinstance(data_files, str):
        return data_files if os.path.isabs(data_files) or "://" in data_files else os.path.join(data_dir, data_files)
    if isinstance(data_files, (list, tuple)):
        return [_resolve_files(f, data_dir) for f in data_files]
    if isinstance(data_files, dict):
        return {k: _resolve_files(v, data_dir) for k, v in data_files.items()}
    return data_files


def _is_saved_to_disk(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, name)) for name in ("dataset_dict.json", "state.json")
    )


def _saved_folder(path: str, data_dir: Optional[str]) -> Optional[str]:
    """The `save_to_disk` folder `path` names, if it is one: a relative path is looked up under `data_dir`
    first (as relative `data_files` are), then against the working directory; None for a Hub id or files."""
    candidates = [path] if os.path.isabs(path) or not data_dir else [os.path.join(data_dir, path), path]
    return next((c for c in candidates if _is_saved_to_disk(c)), None)


def _load_saved(path: str, split: str, where: str, split_field: str, hint: str) -> datasets.Dataset:
    """Split `split` of a `save_to_disk` folder: a DatasetDict's split folder (only that one is read), or a
    single Dataset, read as split "train"."""
    dict_file = os.path.join(path, "dataset_dict.json")
    if os.path.exists(dict_file):
        with open(dict_file) as f:
            splits = json.load(f)["splits"]
        if split not in splits:
            raise TaskDataError(f"{where}: {split_field} {split!r} is not a split of {path}; its splits are {sorted(splits)} ({hint})")
        folder = os.path.join(path, split)
    elif split != "train":
        raise TaskDataError(
            f"{where}: {split_field} {split!r}: {path} holds one Dataset without splits, which is read as split "
            f"'train'; set {split_field} to train" + (" or to null" if split_field != "train_split" else "")
        )
    else:
        folder = path
    with open(os.path.join(folder, "state.json")) as f:
        if not json.load(f).get("_data_files"):  # datasets saves an empty split without shards, and cannot read it
            raise TaskDataError(f"{where}: {split_field} {split!r} is empty: {folder} holds no rows")
    return datasets.load_from_disk(folder)


def _load_raw(data: TaskData, split: str, data_dir: Optional[str], where: str, split_field: str = "split") -> datasets.Dataset:
    """The split as the source has it: `load_from_disk` for a saved folder, else `load_dataset`.
    `split_field` is the `TaskData` field that named the split (train_split, eval_split, test_split)."""
    hint = f"set {split_field} to one of them" + (" or to null" if split_field != "train_split" else "")
    saved = _saved_folder(data.path, data_dir)
    if saved is not None:
        return _load_saved(saved, split, where, split_field, hint)
    kwargs = dict(data.load_kwargs)
    if data.revision:
        kwargs["revision"] = data.revision
    if data.data_dir:
        kwargs["data_dir"] = data.data_dir
    files = None
    if data.data_files is not None:
        files = _resolve_files(data.data_files, data_dir)
        if isinstance(files, dict):
            # One split's files at a time: `datasets` needs every file of one load to share its columns,
            # and a test file often lacks the label column (the CS224N test files also have other ones).
            if split not in files:
                raise TaskDataError(
                    f"{where}: {split_field} {split!r} is not a split of data_files, whose splits are {sorted(files)} ({hint})"
                )
            files = {split: files[split]}
        kwargs["data_files"] = files
    read_from = f" (data_files {files})" if files is not None else ""
    empty = f"{where}: {split_field} {split!r} is empty: no rows{read_from}"
    try:
        return datasets.load_dataset(data.path, data.name, split=split, **kwargs)
    except StopIteration as err:  # the json builder on an empty file
        raise TaskDataError(empty) from err
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__ or err.__context__ or err
        if isinstance(cause, (SchemaInferenceError, EmptyDataError)):  # no rows / an empty csv file
            raise TaskDataError(empty) from err
        raise TaskDataError(f"{where}: {split_field} {split!r} could not be read{read_from}: {cause}") from err
    except ValueError as err:
        text = str(err)
        if "Unknown split" in text:  # datasets: 'Unknown split "dev". Should be one of [...]'
            raise TaskDataError(f"{where}: {split_field} {split!r} is not a split of the dataset ({text}; {hint})") from err
        if "corresponds to no data" in text:  # datasets: a csv file with a header and no rows
            raise TaskDataError(empty) from err
        raise TaskDataError(f"{where}: {text}") from err
    except (FileNotFoundError, ConnectionError) as err:  # a missing file or folder; an unknown or unreachable Hub id
        field_name = "data_files" if data.data_files is not None else "path"
        raise TaskDataError(f"{where}: {field_name}: {err}") from err


# --------------------------------------------------------------------------------- canonical columns
def canonical_split(
    spec: TaskSpec, data: TaskData, raw: datasets.Dataset, split: str, role: str = "train", where: str = ""
) -> datasets.Dataset:
    """`raw` in the canonical columns, its texts and labels checked for `spec` (module docstring)."""
    where = where or f"task {spec.name!r}, split {split!r}"
    if len(raw) == 0:
        raise TaskDataError(f"{where}: the split is empty")
    available = list(raw.column_names)

    def column(name: str, required: bool, optional: bool = False) -> Optional[str]:
        mapped = data.columns.get(name, name)
        if mapped in available:
            return mapped
        if required or (name in data.columns and not optional):
            field_name = f"columns.{name}" if name in data.columns else name
            raise TaskDataError(
                f"{where}: {field_name}: no column {mapped!r}; the dataset's columns are {available}"
            )
        return None

    implied = data.text_columns
    if implied is not None and tuple(implied) != tuple(spec.text_columns):
        if implied == ("sentence1",) and spec.is_pair and tuple(spec.text_columns) == ("sentence1", "sentence2"):
            # A pair task may map sentence1 only when the dataset has its own sentence2 column.
            if "sentence2" not in available:
                raise TaskDataError(
                    f"{where}: columns.sentence2 is not set and the dataset has no column 'sentence2', but the task "
                    f"is a pair task (text_columns {list(spec.text_columns)}); map columns.sentence2 onto one of "
                    f"the dataset's columns {available}"
                )
        else:
            raise TaskDataError(
                f"{where}: columns map {list(implied)}, but the task's text_columns are {list(spec.text_columns)} "
                f"(a {'pair' if spec.is_pair else 'single-sentence'} task)"
            )
    out: dict[str, list] = {}
    for name in spec.text_columns:
        source_column = column(name, required=True)
        out[name] = _texts(raw[source_column], f"{where}: column {source_column!r}")
    id_column = column("id", required=False) or ("idx" if "idx" in available else None)
    out["id"] = [str(v) for v in raw[id_column]] if id_column else [str(i) for i in range(len(raw))]

    label_column = column("label", required=role != "test", optional=role == "test")  # test splits may have none
    features = {"id": datasets.Value("string"), **{n: datasets.Value("string") for n in spec.text_columns}}
    if label_column is not None:
        labels, label_feature = _labels(spec, raw.features[label_column], raw[label_column], f"{where}: column {label_column!r}")
        # -1 everywhere: GLUE's unlabelled test splits (STS-B's regression ones too, as -1.0).
        unlabelled = (spec.kind != "regression" or role == "test") and all(v == UNLABELLED for v in labels)
        if unlabelled and role != "test":
            raise TaskDataError(
                f"{where}: column {label_column!r}: every label is {UNLABELLED} (an unlabelled split): it cannot be "
                f"used for {role}"
            )
        if not unlabelled:
            if spec.kind != "regression" and UNLABELLED in labels:
                row = labels.index(UNLABELLED)
                raise TaskDataError(
                    f"{where}: column {label_column!r}, row {row}: label {UNLABELLED} (unlabelled) among labelled rows"
                )
            out["label"] = labels
            features["label"] = label_feature
    return datasets.Dataset.from_dict(out, features=datasets.Features(features))


def _texts(values: list, where: str) -> list[str]:
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise TaskDataError(f"{where}, row {row}: text is {type(value).__name__} {value!r}, not a string")
        if not value.strip():
            raise TaskDataError(f"{where}, row {row}: empty text")
    return [v.strip() for v in values]


def _bare_ids(feature: datasets.ClassLabel) -> bool:
    """A `ClassLabel(num_classes=n)`: its names are "0", "1", ..., which name no class."""
    return list(feature.names) == [str(i) for i in range(feature.num_classes)]


def _class_names(spec: TaskSpec) -> Optional[list[str]]:
    return list(spec.label_names) if spec.label_names is not None else None


def _labels(spec: TaskSpec, feature, values: list, where: str) -> tuple[list, Any]:
    """Checked labels and their output feature: ClassLabel ids for classification/binary, floats for regression."""
    num_classes = spec.num_labels if spec.kind == "classification" else 2
    if spec.kind == "regression":
        if isinstance(feature, datasets.ClassLabel):
            raise TaskDataError(f"{where}: a ClassLabel ({feature.names}) does not fit a regression task")
        out = []
        for row, value in enumerate(values):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TaskDataError(f"{where}, row {row}: regression label {value!r} is not a number") from None
            if not math.isfinite(number):
                raise TaskDataError(f"{where}, row {row}: regression label {value!r} is not a finite number")
            out.append(number)
        return out, datasets.Value("float32")

    names = _class_names(spec)
    if isinstance(feature, datasets.ClassLabel):
        if names is not None and not _bare_ids(feature) and list(feature.names) != names:
            raise TaskDataError(
                f"{where}: the dataset's ClassLabel names {feature.names} differ from the task's label_names {names}"
            )
        if feature.num_classes != num_classes:
            raise TaskDataError(
                f"{where}: the dataset's ClassLabel has {feature.num_classes} classes {feature.names}, the task has "
                f"{num_classes} ({spec.kind}, num_labels {spec.num_labels})"
            )
        names = names or (None if _bare_ids(feature) else list(feature.names))
    ids = []
    for row, value in enumerate(values):
        if isinstance(value, str):
            if names is None:
                raise TaskDataError(f"{where}, row {row}: label {value!r} is a string; name the classes in label_names")
            if value not in names:
                raise TaskDataError(f"{where}, row {row}: label {value!r} is not in label_names {names}")
            ids.append(names.index(value))
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TaskDataError(f"{where}, row {row}: label {value!r} is not a class") from None
        if not number.is_integer():
            raise TaskDataError(f"{where}, row {row}: label {value!r} is not a class number (a {spec.kind} task)")
        number = int(number)
        if number != UNLABELLED and not 0 <= number < num_classes:
            raise TaskDataError(
                f"{where}, row {row}: label {number} is outside 0..{num_classes - 1} (num_labels of a {spec.kind} task)"
            )
        ids.append(number)
    feature_out = datasets.ClassLabel(names=names) if names is not None else datasets.ClassLabel(num_classes=num_classes)
    return ids, feature_out


def load_task_sets(
    specs: dict[str, TaskSpec],
    task_data: dict[str, TaskData],
    role: str,
    data_dir: Optional[str] = None,
    on_bad_rows: str = "raise",
) -> dict[str, datasets.Dataset]:
    """Every task's `role` split(s) ("train", "eval", "test"): `{set name: Dataset}`.

    Train and test sets are keyed by task (test sets of a task with several test splits by `task/split`);
    evaluation sets by `eval_set_name`. A task without a split of that role is left out. A classification
    task without `label_names` takes them from its train split's `ClassLabel` (so a bundle stores them and
    predictions return them), which is why train sets are loaded first."""
    out: dict[str, datasets.Dataset] = {}
    for task, spec in specs.items():
        data = task_data[task]
        splits = task_splits(data, role)
        for index, split in enumerate(splits):
            dataset = load_task_split(spec, data, split, role=role, data_dir=data_dir, on_bad_rows=on_bad_rows)
            if role == "train":
                adopt_label_names(spec, dataset)
            key = eval_set_name(task, split, index) if role != "train" else task
            if role == "test" and len(splits) > 1:
                key = f"{task}/{split}"
            out[key] = dataset
    return out


def adopt_label_names(spec: TaskSpec, dataset: datasets.Dataset) -> None:
    """Give `spec` the class names of `dataset`'s `ClassLabel` when it has none and the names are real
    (not the "0", "1", ... that a ClassLabel of bare ids carries)."""
    feature = dataset.features.get("label")
    if spec.label_names is not None or not isinstance(feature, datasets.ClassLabel):
        return
    if not _bare_ids(feature):
        spec.label_names = tuple(feature.names)
