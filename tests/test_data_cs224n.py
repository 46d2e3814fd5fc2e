"""Tests for hf_pals.data.cs224n: parsing, bad-row reporting, real files, prediction writer."""

import csv
import logging
import os
import re
from pathlib import Path

import pytest

from hf_pals.data import (
    CS224N_FILES,
    TASK_KINDS,
    BadRowError,
    cs224n_path,
    load_cs224n,
    load_cs224n_file,
    write_cs224n_predictions,
)

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("HF_PALS_DATA_DIR", REPO.parent / "shared" / "data" / "cs224n"))

SST_HEADER = "\tid\tsentence\tsentiment\n"
QUORA_HEADER = "\tid\tsentence1\tsentence2\tis_duplicate\n"
STS_HEADER = "\tid\tsentence1\tsentence2\tsimilarity\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def sst_file(tmp_path, *rows, name="ids-sst-train.csv"):
    return write(tmp_path, name, SST_HEADER + "".join(rows))


GOOD_SST = ["0\ta1\t A fine film .\t3\n", "1\ta2\t Dull .\t1\n"]


# --------------------------------------------------------------------------- good input


def test_small_sst_file_columns_and_dtypes(tmp_path):
    ds = load_cs224n_file(sst_file(tmp_path, *GOOD_SST), "sst")
    assert ds.column_names == ["id", "sentence1", "label"]
    assert ds.features["label"].dtype == "int64"
    assert ds["id"] == ["a1", "a2"]
    assert ds["sentence1"] == ["A fine film .", "Dull ."]  # whitespace stripped
    assert ds["label"] == [3, 1]


def test_pair_tasks_and_label_types(tmp_path):
    q = write(tmp_path, "q.csv", QUORA_HEADER + "7\tq1\tHow?\tWhy?\t1.0\n8\tq2\tA?\tB?\t0.0\n")
    s = write(tmp_path, "s.csv", STS_HEADER + "5\ts1\tA cat.\tA dog.\t2.4\n")
    dq, ds = load_cs224n_file(q, "quora"), load_cs224n_file(s, "sts")
    assert dq.column_names == ["id", "sentence1", "sentence2", "label"]
    assert dq.features["label"].dtype == "int64" and dq["label"] == [1, 0]
    assert ds.features["label"].dtype == "float32"
    assert ds[0]["label"] == pytest.approx(2.4)
    assert (ds[0]["sentence1"], ds[0]["sentence2"]) == ("A cat.", "A dog.")


def test_quoted_fields_with_tabs_quotes_and_newlines_round_trip(tmp_path):
    tricky = ['He said "hi"\tthen left', 'two\nlines "quoted"', "plain"]
    path = tmp_path / "sts-dev.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["", "id", "sentence1", "sentence2", "similarity"])
        writer.writerow([0, "x0", tricky[0], tricky[1], "4.0"])
        writer.writerow([1, "x1", tricky[2], tricky[0], "1.5"])
        writer.writerow([2, "x2", "ok", "", "1.5"])  # row starting on line 5 (row x0 spans lines 2-3)
    ds = load_cs224n_file(path, "sts", on_bad_rows="skip")
    assert ds["sentence1"] == [tricky[0], tricky[2]]
    assert ds["sentence2"] == [tricky[1], tricky[0]]
    with pytest.raises(BadRowError, match=r"line 5: empty sentence2"):
        load_cs224n_file(path, "sts")


def test_handout_style_escaped_quotes(tmp_path):
    path = sst_file(tmp_path, '0\tq1\t"She said ""no"" ."\t2\n')
    assert load_cs224n_file(path, "sst")["sentence1"] == ['She said "no" .']


def test_blank_lines_are_ignored_and_line_numbers_stay_physical(tmp_path):
    path = sst_file(tmp_path, GOOD_SST[0], "\n", "1\ta2\tx\tbad\n")
    with pytest.raises(BadRowError, match=r", line 4: label 'bad' is not a number"):
        load_cs224n_file(path, "sst")


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "crlf.csv"
    path.write_bytes((SST_HEADER + "".join(GOOD_SST)).replace("\n", "\r\n").encode())
    assert load_cs224n_file(path, "sst")["label"] == [3, 1]


def test_unlabeled_test_student_header(tmp_path):
    # the handout's odd SST test header: "0<TAB><TAB>id<TAB>sentence" over "1<TAB>0.0<TAB>id<TAB>text"
    path = write(tmp_path, "ids-sst-test-student.csv", "0\t\tid\tsentence\n1\t0.0\tb75\tEffective .\n2\t1.0\td17\tFun .\n")
    ds = load_cs224n_file(path, "sst", labeled=False)
    assert ds.column_names == ["id", "sentence1"]
    assert ds["id"] == ["b75", "d17"] and ds["sentence1"] == ["Effective .", "Fun ."]


def test_labeled_load_of_unlabeled_file_explains(tmp_path):
    path = write(tmp_path, "t.csv", "\tid\tsentence1\tsentence2\n0\ti\ta\tb\n")
    with pytest.raises(BadRowError, match=r"line 1: .*similarity.*labeled=False"):
        load_cs224n_file(path, "sts")


def test_return_report(tmp_path):
    ds, report = load_cs224n_file(sst_file(tmp_path, *GOOD_SST), "sst", return_report=True)
    assert report == {"rows": 2, "skipped": {}}
    assert len(ds) == 2


# --------------------------------------------------------------------------- bad rows, one per kind

# (task, data row placed on line 3 after one good row, kind, expected problem text)
BAD_ROWS = [
    ("sst", "1\ta2\tDull .\n", "column_count", "expected 4 tab-separated columns, found 3"),
    ("sst", "1\ta2\tDull .\t1\textra\n", "column_count", "expected 4 tab-separated columns, found 5"),
    ("sst", "1\ta2\tDull .\t\n", "missing_label", "missing sentiment label"),
    ("sst", "1\ta2\tDull .\tabc\n", "label_not_a_number", "label 'abc' is not a number"),
    ("sts", "1\ta2\tA\tB\tnan\n", "label_not_a_number", "label 'nan' is not a number"),
    ("sst", "1\ta2\tDull .\t5\n", "label_out_of_range", "label '5' is outside 0..4"),
    ("sst", "1\ta2\tDull .\t-1\n", "label_out_of_range", "label '-1' is outside 0..4"),
    ("sst", "1\ta2\tDull .\t2.5\n", "label_not_an_integer", "label '2.5' is not an integer"),
    ("quora", "1\ta2\tA?\tB?\t0.5\n", "label_not_an_integer", "label '0.5' is not an integer"),
    ("quora", "1\ta2\tA?\tB?\t2.0\n", "label_out_of_range", "label '2.0' is outside 0..1"),
    ("sts", "1\ta2\tA\tB\t5.5\n", "label_out_of_range", "label '5.5' is outside 0.0..5.0"),
    ("sst", "1\ta2\t   \t1\n", "empty_text", "empty sentence"),
    ("quora", "1\ta2\tA?\t\t1.0\n", "empty_text", "empty sentence2"),
    ("sst", "1\t\tDull .\t1\n", "empty_id", "empty id"),
]
GOOD_ROW = {"sst": GOOD_SST[0], "quora": "0\ta1\tX?\tY?\t1.0\n", "sts": "0\ta1\tX\tY\t3.2\n"}
HEADER = {"sst": SST_HEADER, "quora": QUORA_HEADER, "sts": STS_HEADER}


@pytest.mark.parametrize("task,row,kind,problem", BAD_ROWS, ids=[f"{b[0]}-{b[2]}-{i}" for i, b in enumerate(BAD_ROWS)])
def test_bad_row_raises_with_file_line_and_problem(tmp_path, task, row, kind, problem):
    path = write(tmp_path, f"{task}-train.csv", HEADER[task] + GOOD_ROW[task] + row + GOOD_ROW[task].replace("a1", "a3"))
    with pytest.raises(BadRowError) as info:
        load_cs224n_file(path, task)
    err = info.value
    assert str(err) == f"{path}, line 3: {problem}"
    assert (err.path, err.lineno, err.problem, err.kind) == (str(path), 3, problem, kind)
    assert isinstance(err, ValueError)

    ds, report = load_cs224n_file(path, task, on_bad_rows="skip", return_report=True)
    assert ds["id"] == ["a1", "a3"]
    assert report == {"rows": 2, "skipped": {kind: 1}}


def test_skip_mode_counts_per_kind_and_warns(tmp_path, caplog):
    rows = [GOOD_SST[0]] + [f"{i}\tb{i}\tx\tabc\n" for i in range(7)] + ["9\tc\tx\n", "10\td\t \t2\n", GOOD_SST[1]]
    path = sst_file(tmp_path, *rows)
    with caplog.at_level(logging.WARNING, logger="hf_pals.data"):
        ds, report = load_cs224n_file(path, "sst", on_bad_rows="skip", return_report=True)
    assert ds["id"] == ["a1", "a2"]
    assert report == {"rows": 2, "skipped": {"label_not_a_number": 7, "column_count": 1, "empty_text": 1}}
    records = [r for r in caplog.records if r.name == "hf_pals.data" and r.levelno == logging.WARNING]
    assert len(records) == 1
    msg = records[0].getMessage()
    assert str(path) in msg and "skipped 9 bad row(s), kept 2" in msg
    assert "label_not_a_number: 7 (lines 3, 4, 5, 6, 7, ...)" in msg  # first few line numbers only
    assert "column_count: 1 (line 10)" in msg and "empty_text: 1 (line 11)" in msg


def test_no_warning_when_clean(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_pals.data"):
        load_cs224n_file(sst_file(tmp_path, *GOOD_SST), "sst", on_bad_rows="skip")
    assert not caplog.records


def test_empty_file_and_missing_header(tmp_path):
    empty = write(tmp_path, "empty.csv", "")
    with pytest.raises(BadRowError, match=r"empty\.csv, line 1: file is empty"):
        load_cs224n_file(empty, "sst", on_bad_rows="skip")  # not skippable
    headless = write(tmp_path, "headless.csv", "".join(GOOD_SST))
    with pytest.raises(BadRowError, match=r"headless\.csv, line 1: header .* lacks column\(s\) id, sentence, sentiment"):
        load_cs224n_file(headless, "sst")


def test_unterminated_quote_reports_starting_line(tmp_path):
    # a stray opening quote swallows the rest of the file into one field: the row has too few columns
    path = sst_file(tmp_path, GOOD_SST[0], '1\ta2\t"broken .\t1\n', GOOD_SST[1])
    with pytest.raises(BadRowError, match=r", line 3: expected 4 tab-separated columns, found 3"):
        load_cs224n_file(path, "sst")


def test_missing_file_and_bad_arguments(tmp_path):
    missing = tmp_path / "nope" / "ids-sst-dev.csv"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_cs224n_file(missing, "sst")
    path = sst_file(tmp_path, *GOOD_SST)
    with pytest.raises(ValueError, match="unknown CS224N task"):
        load_cs224n_file(path, "mnli")
    with pytest.raises(ValueError, match="on_bad_rows"):
        load_cs224n_file(path, "sst", on_bad_rows="ignore")


def test_paths_and_quora_test_missing(tmp_path):
    assert cs224n_path(tmp_path, "sst", "test") == tmp_path / "ids-sst-test-student.csv"
    assert cs224n_path(tmp_path, "quora", "dev") == tmp_path / "quora-dev.csv"
    with pytest.raises(ValueError, match="unknown split"):
        cs224n_path(tmp_path, "sst", "validation")
    with pytest.raises(FileNotFoundError, match="quora-test-student.csv"):
        load_cs224n(tmp_path, "test", tasks=("quora",))


def test_load_cs224n_small_dir(tmp_path):
    sst_file(tmp_path, *GOOD_SST, name="ids-sst-dev.csv")
    write(tmp_path, "sts-dev.csv", STS_HEADER + "0\ts\tA\tB\t1.0\n")
    out = load_cs224n(tmp_path, "dev", tasks=("sts", "sst"))
    assert list(out) == ["sts", "sst"]
    assert len(out["sst"]) == 2 and len(out["sts"]) == 1


def test_task_tables():
    assert set(CS224N_FILES) == set(TASK_KINDS) == {"sst", "quora", "sts"}
    assert TASK_KINDS == {"sst": "classification", "quora": "binary", "sts": "regression"}


# --------------------------------------------------------------------------- prediction writer


def test_write_predictions_handout_format(tmp_path):
    import numpy as np

    out = write_cs224n_predictions(tmp_path / "p" / "sst-test-output.csv", "sst", ["a", "b"], np.array([3, 0]))
    assert out.read_text() == "id \t Predicted_Sentiment \na , 3 \nb , 0 \n"
    out = write_cs224n_predictions(tmp_path / "para.csv", "quora", ["q"], [1.0])
    assert out.read_text() == "id \t Predicted_Is_Paraphrase \nq , 1 \n"
    out = write_cs224n_predictions(tmp_path / "sts.csv", "sts", ["s", "t"], [3.25, np.float64(0.5)])
    assert out.read_bytes() == b"id \t Predicted_Similiary \ns , 3.25 \nt , 0.5 \n"


def test_write_predictions_errors(tmp_path):
    with pytest.raises(ValueError, match="2 ids but 1 predictions"):
        write_cs224n_predictions(tmp_path / "x.csv", "sst", ["a", "b"], [1])
    with pytest.raises(ValueError, match="not an integer"):
        write_cs224n_predictions(tmp_path / "x.csv", "quora", ["a"], [0.7])


# --------------------------------------------------------------------------- the real files

REAL_COUNTS = {
    ("sst", "train"): 8544,
    ("sst", "dev"): 1101,
    ("sst", "test"): 2210,
    ("quora", "train"): 13507,
    ("quora", "dev"): 10107,
    ("sts", "train"): 6040,
    ("sts", "dev"): 863,
    ("sts", "test"): 1725,
}


@pytest.fixture(scope="module")
def real_dir():
    if not (DATA_DIR / "ids-sst-dev.csv").is_file():
        pytest.skip(f"CS224N data not found in {DATA_DIR} (set HF_PALS_DATA_DIR)")
    return DATA_DIR


@pytest.mark.parametrize("task,split", list(REAL_COUNTS), ids=[f"{t}-{s}" for t, s in REAL_COUNTS])
def test_real_files_load_cleanly(real_dir, task, split):
    labeled = split != "test"
    ds, report = load_cs224n_file(
        cs224n_path(real_dir, task, split), task, labeled=labeled, on_bad_rows="skip", return_report=True
    )
    assert report == {"rows": REAL_COUNTS[task, split], "skipped": {}}
    assert len(set(ds["id"])) == len(ds)
    assert all(len(i) == 25 for i in ds["id"])  # the handout's hex ids, not the index columns
    assert all(s and s == s.strip() for s in ds["sentence1"])
    if labeled:
        labels = ds["label"]
        if task == "sts":
            assert ds.features["label"].dtype == "float32"
            assert min(labels) == 0.0 and max(labels) == 5.0
        else:
            assert ds.features["label"].dtype == "int64"
            assert set(labels) == ({0, 1, 2, 3, 4} if task == "sst" else {0, 1})
    else:
        assert "label" not in ds.column_names


def test_real_quoted_sentence(real_dir):
    ds = load_cs224n_file(real_dir / "sts-train.csv", "sts")
    row = ds[ds["id"].index("55c4f22268e4df59ad90b43c0")]
    assert row["sentence1"] == "In standard English, I think \"don't got\" has the same register as \"ain't\"."
