"""Load the CS224N "minBERT" multi-task data files into :class:`datasets.Dataset` objects.

The Stanford CS224N default final project (2023 handout) ships three tasks:

* ``sst``   -- Stanford Sentiment Treebank, 5-way sentiment of one sentence (labels 0..4);
* ``quora`` -- Quora Question Pairs, is sentence2 a paraphrase of sentence1 (0/1, written ``0.0``/``1.0``);
* ``sts``   -- STS Benchmark, similarity of two sentences (a float in 0.0..5.0).

The files are *tab*-separated despite the ``.csv`` name, start with an unnamed pandas index column,
and quote sentences that contain quotes (RFC-4180 style: the field is wrapped in ``"`` and inner
quotes are doubled).  They must therefore be read with a real CSV parser, not ``line.split("\\t")``:
Python's :mod:`csv` module with ``delimiter="\\t"`` and its default quoting (``QUOTE_MINIMAL`` with
``doublequote=True``) parses every real file with no bad rows and un-escapes the quotes.

The ``*-test-student`` files carry no labels and, for SST, an odd header (``0<TAB><TAB>id<TAB>sentence``
over rows ``1<TAB>0.0<TAB><id><TAB><sentence>``: two leading index columns).  Columns are looked up
by their header *name*, which lands on the right positions in every real file, so the junk leading
columns are simply ignored.

Malformed rows are never silently turned into training examples: by default the first one raises
:class:`BadRowError` naming the file, the physical line and the problem; with ``on_bad_rows="skip"``
they are dropped and a warning on the ``hf_pals.data`` logger says how many and where.  A file that
yields no example at all (empty, header only, or every row skipped) raises too: an empty split is bad
input for training, scoring and prediction alike, and would otherwise fail far from the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import math
import os
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Literal

import datasets

__all__ = [
    "CS224N_FILES",
    "CS224N_SPLITS",
    "TASK_KINDS",
    "LABEL_RANGES",
    "PREDICTION_HEADERS",
    "BadRowError",
    "cs224n_path",
    "load_cs224n_file",
    "load_cs224n",
    "write_cs224n_predictions",
]

logger = logging.getLogger("hf_pals.data")

#: File name pattern of each task; ``{split}`` is ``train``, ``dev`` or ``test-student``.
CS224N_FILES = {"sst": "ids-sst-{split}.csv", "quora": "quora-{split}.csv", "sts": "sts-{split}.csv"}

#: Public split names.  ``test`` maps to the handout's unlabeled ``*-test-student`` files.
CS224N_SPLITS = ("train", "dev", "test")
_SPLIT_FILE_PART = {"train": "train", "dev": "dev", "test": "test-student"}

#: What kind of prediction head each task needs.
TASK_KINDS = {"sst": "classification", "quora": "binary", "sts": "regression"}

#: Inclusive label range per task (integers for sst/quora, floats for sts).
LABEL_RANGES = {"sst": (0, 4), "quora": (0, 1), "sts": (0.0, 5.0)}

#: Header names of the text columns in the files, in output order (``sentence1``, ``sentence2``).
_TEXT_COLUMNS = {"sst": ("sentence",), "quora": ("sentence1", "sentence2"), "sts": ("sentence1", "sentence2")}
#: Header name of the label column.
_LABEL_COLUMNS = {"sst": "sentiment", "quora": "is_duplicate", "sts": "similarity"}
_ID_COLUMN = "id"

#: Header line of the handout's prediction files (``multitask_classifier.py``), spelling included:
#: the handout really writes ``Predicted_Similiary``.
PREDICTION_HEADERS = {
    "sst": "id \t Predicted_Sentiment \n",
    "quora": "id \t Predicted_Is_Paraphrase \n",
    "sts": "id \t Predicted_Similiary \n",
}

_MAX_LINES_IN_WARNING = 5

#: The line ends the csv reader counts in ``line_num`` (a text stream opened with ``newline=""``).
_LINE_END = re.compile(rb"\r\n|\r|\n")


class BadRowError(ValueError):
    """A row (or the header) of a CS224N file cannot be turned into an example.

    The message reads ``"{path}, line {lineno}: {problem}"`` where ``lineno`` is the 1-based physical
    line on which the row starts (a quoted field may span several lines).  ``kind`` is a short
    machine-readable problem name, the same keys as in the ``skipped`` part of a load report.
    """

    def __init__(self, path: str | os.PathLike, lineno: int, problem: str, kind: str = "bad_row"):
        self.path = str(path)
        self.lineno = lineno
        self.problem = problem
        self.kind = kind
        super().__init__(f"{self.path}, line {lineno}: {problem}")

    def __reduce__(self):  # keep the error picklable (datasets/multiprocessing may ship it around)
        return (type(self), (self.path, self.lineno, self.problem, self.kind))


class _RowProblem(Exception):
    """Internal: one bad row, before the file and line are attached."""

    def __init__(self, kind: str, problem: str):
        super().__init__(problem)
        self.kind = kind
        self.problem = problem


def _check_task(task: str) -> None:
    if task not in CS224N_FILES:
        raise ValueError(f"unknown CS224N task {task!r}; known tasks: {', '.join(CS224N_FILES)}")


def cs224n_path(data_dir: str | os.PathLike, task: str, split: str) -> Path:
    """Path of ``task``'s ``split`` file under ``data_dir`` (``test`` -> ``*-test-student.csv``)."""
    _check_task(task)
    if split not in _SPLIT_FILE_PART:
        raise ValueError(f"unknown split {split!r}; known splits: {', '.join(CS224N_SPLITS)}")
    return Path(data_dir) / CS224N_FILES[task].format(split=_SPLIT_FILE_PART[split])


def _features(task: str, labeled: bool) -> datasets.Features:
    feats = {"id": datasets.Value("string"), "sentence1": datasets.Value("string")}
    if len(_TEXT_COLUMNS[task]) == 2:
        feats["sentence2"] = datasets.Value("string")
    if labeled:
        feats["label"] = datasets.Value("float32" if TASK_KINDS[task] == "regression" else "int64")
    return datasets.Features(feats)


def _parse_label(task: str, raw: str) -> int | float:
    """Validate one label string; return an ``int`` (sst, quora) or ``float`` (sts)."""
    text = raw.strip()
    column = _LABEL_COLUMNS[task]
    if not text:
        raise _RowProblem("missing_label", f"missing {column} label")
    try:
        value = float(text)
    except ValueError:
        raise _RowProblem("label_not_a_number", f"label {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise _RowProblem("label_not_a_number", f"label {raw!r} is not a number")
    lo, hi = LABEL_RANGES[task]
    if TASK_KINDS[task] != "regression" and not value.is_integer():
        raise _RowProblem("label_not_an_integer", f"label {raw!r} is not an integer")
    if not lo <= value <= hi:
        raise _RowProblem("label_out_of_range", f"label {raw!r} is outside {lo}..{hi}")
    return value if TASK_KINDS[task] == "regression" else int(value)


def _read_text(path: Path) -> str:
    """The text of ``path`` decoded as UTF-8, a leading byte-order mark (from spreadsheet tools) dropped.

    The file is decoded whole, not through a text stream: a stream decodes in chunks of several KB, so
    its error surfaces where the csv reader happens to be (often "line 1"), not where the bad byte is.
    Here the error's byte offset gives the line and the byte, which :class:`BadRowError` names.
    """
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[: err.start]
        lineno = len(_LINE_END.findall(before)) + 1
        column = err.start - max(before.rfind(b"\n"), before.rfind(b"\r"))  # 1-based byte in its line
        problem = f"not UTF-8 text: byte 0x{data[err.start]:02x} at byte {column} of the line ({err.reason})"
        raise BadRowError(path, lineno, problem, "encoding") from err


def _header_positions(path: Path, task: str, header: list[str], labeled: bool) -> tuple[int, list[int], int | None]:
    """Positions of the id, text and (if ``labeled``) label columns, found by header name."""
    names = [h.strip() for h in header]
    wanted = [_ID_COLUMN, *_TEXT_COLUMNS[task]] + ([_LABEL_COLUMNS[task]] if labeled else [])
    missing = [w for w in wanted if w not in names]
    if missing:
        hint = ""
        if labeled and missing == [_LABEL_COLUMNS[task]]:
            hint = " (an unlabeled test file? pass labeled=False)"
        raise BadRowError(
            path, 1, f"header {names!r} lacks column(s) {', '.join(missing)} for task {task!r}{hint}", "bad_header"
        )
    pos = {w: names.index(w) for w in wanted}
    label_pos = pos[_LABEL_COLUMNS[task]] if labeled else None
    return pos[_ID_COLUMN], [pos[c] for c in _TEXT_COLUMNS[task]], label_pos


def load_cs224n_file(
    path: str | os.PathLike,
    task: str,
    *,
    labeled: bool = True,
    on_bad_rows: Literal["raise", "skip"] = "raise",
    return_report: bool = False,
) -> datasets.Dataset | tuple[datasets.Dataset, dict]:
    """Read one CS224N TSV file into a :class:`datasets.Dataset`.

    Args:
        path: the file, e.g. ``.../ids-sst-train.csv``.
        task: ``"sst"``, ``"quora"`` or ``"sts"``; fixes which columns are read and the label check.
        labeled: read and validate the label column (``False`` for the ``*-test-student`` files;
            a label column present in the file is then ignored).
        on_bad_rows: ``"raise"`` -> the first bad row raises :class:`BadRowError`;
            ``"skip"`` -> bad rows are dropped and counted, and one WARNING on the
            ``hf_pals.data`` logger lists the count per problem and the first line numbers.
        return_report: also return ``{"rows": n_kept, "skipped": {problem_kind: count}}``.

    Returns:
        A Dataset with columns ``id`` (str), ``sentence1`` (str), ``sentence2`` (str, pair tasks only)
        and ``label`` (int64 for sst/quora, float32 for sts; absent when ``labeled=False``), in file
        order; sentences are stripped of surrounding whitespace.  With ``return_report`` a
        ``(dataset, report)`` tuple.

    Bad rows (problem kinds): ``column_count`` (not as many fields as the header), ``empty_id``,
    ``empty_text``, ``missing_label``, ``label_not_a_number``, ``label_not_an_integer`` (sst/quora),
    ``label_out_of_range``.  Blank lines are ignored.  Whatever ``on_bad_rows`` says,
    :class:`BadRowError` is raised for an empty file or a header without the expected column names
    (line 1), text that is not UTF-8 (the line of the first bad byte) or that the CSV parser rejects,
    and a file with no rows after the header, or none left once bad rows are skipped (kind
    ``no_rows``, the line after the header): an empty split is never returned.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        BadRowError: see above.
        ValueError: unknown ``task`` or ``on_bad_rows``.
    """
    _check_task(task)
    if on_bad_rows not in ("raise", "skip"):
        raise ValueError(f"on_bad_rows must be 'raise' or 'skip', not {on_bad_rows!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CS224N {task} file not found: {path}")

    pair = len(_TEXT_COLUMNS[task]) == 2
    columns: dict[str, list] = {"id": [], "sentence1": []}
    if pair:
        columns["sentence2"] = []
    if labeled:
        columns["label"] = []
    skipped: Counter[str] = Counter()
    skipped_lines: dict[str, list[int]] = defaultdict(list)

    # newline="" lets the csv module see the real line ends (needed for quoted multi-line fields).
    with io.StringIO(_read_text(path), newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        line_after_previous_row = 0  # reader.line_num after the previous row: a row starts one line later
        try:
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise BadRowError(path, 1, "file is empty or has no header line", "bad_header")
            id_pos, text_pos, label_pos = _header_positions(path, task, header, labeled)
            n_columns = len(header)
            line_after_previous_row = reader.line_num
            first_row_line = line_after_previous_row + 1

            for row in reader:
                lineno = line_after_previous_row + 1
                line_after_previous_row = reader.line_num
                if not row:  # blank line
                    continue
                try:
                    if len(row) != n_columns:
                        raise _RowProblem(
                            "column_count", f"expected {n_columns} tab-separated columns, found {len(row)}"
                        )
                    row_id = row[id_pos].strip()
                    if not row_id:
                        raise _RowProblem("empty_id", "empty id")
                    texts = [row[p].strip() for p in text_pos]
                    for name, text in zip(_TEXT_COLUMNS[task], texts):
                        if not text:
                            raise _RowProblem("empty_text", f"empty {name}")
                    label = _parse_label(task, row[label_pos]) if labeled else None
                except _RowProblem as bad:
                    if on_bad_rows == "raise":
                        raise BadRowError(path, lineno, bad.problem, bad.kind) from None
                    skipped[bad.kind] += 1
                    skipped_lines[bad.kind].append(lineno)
                    continue
                columns["id"].append(row_id)
                columns["sentence1"].append(texts[0])
                if pair:
                    columns["sentence2"].append(texts[1])
                if labeled:
                    columns["label"].append(label)
        except csv.Error as err:
            raise BadRowError(path, line_after_previous_row + 1, f"CSV parse error: {err}", "csv_error") from err

    if not columns["id"]:
        if not skipped:
            raise BadRowError(path, first_row_line, "no rows after the header", "no_rows")
        kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(skipped.items()))
        raise BadRowError(
            path, first_row_line, f"no rows left: all {sum(skipped.values())} row(s) were bad and skipped ({kinds})", "no_rows"
        )

    if skipped:
        details = "; ".join(
            f"{kind}: {count} (line{'s' if count > 1 else ''} "
            f"{', '.join(map(str, skipped_lines[kind][:_MAX_LINES_IN_WARNING]))}"
            f"{', ...' if count > _MAX_LINES_IN_WARNING else ''})"
            for kind, count in sorted(skipped.items())
        )
        logger.warning("%s: skipped %d bad row(s), kept %d: %s", path, sum(skipped.values()), len(columns["id"]), details)

    dataset = datasets.Dataset.from_dict(columns, features=_features(task, labeled))
    if return_report:
        return dataset, {"rows": len(dataset), "skipped": dict(skipped)}
    return dataset


def load_cs224n(
    data_dir: str | os.PathLike,
    split: str,
    tasks: Iterable[str] = ("sst", "quora", "sts"),
    on_bad_rows: Literal["raise", "skip"] = "raise",
) -> dict[str, datasets.Dataset]:
    """Load one split of several tasks: ``{task: Dataset}`` in the order of ``tasks``.

    ``split`` is ``"train"``, ``"dev"`` or ``"test"``; test files are read unlabeled.  There is no
    Quora test file in this data (the handout's ``quora-test-student.csv`` is not shipped), so
    ``load_cs224n(d, "test")`` with the default tasks raises FileNotFoundError naming that path:
    pass ``tasks=("sst", "sts")``.
    """
    if isinstance(tasks, str):  # a lone "sst" would otherwise iterate as "s", "s", "t"
        tasks = (tasks,)
    labeled = split != "test"
    return {
        task: load_cs224n_file(cs224n_path(data_dir, task, split), task, labeled=labeled, on_bad_rows=on_bad_rows)
        for task in tasks
    }


def _as_python_scalar(value):
    """numpy / torch scalars -> Python numbers, so they print as ``3`` rather than ``tensor(3)``."""
    return value.item() if hasattr(value, "item") else value


def write_cs224n_predictions(
    path: str | os.PathLike,
    task: str,
    ids: Iterable[str],
    predictions: Iterable,
) -> Path:
    """Write predictions in the handout's submission format (``multitask_classifier.py``).

    The layout is byte-for-byte what the handout writes, odd spacing and spelling included::

        id \\t Predicted_Sentiment \\n        (Predicted_Is_Paraphrase for quora, Predicted_Similiary for sts)
        <id> , <prediction> \\n

    sst/quora predictions must be integer-valued and are written as integers (``3``, ``1``); sts
    predictions are written as Python floats (``3.25``).  Parent directories are created.
    Returns the path written.

    Raises:
        ValueError: unknown task, ``ids``/``predictions`` of different lengths, or a non-integer
            sst/quora prediction.
    """
    _check_task(task)
    ids = list(ids)
    predictions = [_as_python_scalar(p) for p in predictions]
    if len(ids) != len(predictions):
        raise ValueError(f"{len(ids)} ids but {len(predictions)} predictions")
    regression = TASK_KINDS[task] == "regression"
    lines = [PREDICTION_HEADERS[task]]
    for row_id, pred in zip(ids, predictions):
        value = float(pred)
        if not regression:
            if not value.is_integer():
                raise ValueError(f"{task} prediction for id {row_id!r} is not an integer: {pred!r}")
            value = int(value)
        lines.append(f"{row_id} , {value} \n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:  # newline="": "\n" on every OS
        fh.writelines(lines)
    return path
