"""Two defects of the CS224N loader a user met (issue 13, part 8), each pinned where it surfaced.

1. A file with its header but no rows ended in scipy's "`x` and `y` must have length at least 2" while
   scoring, naming no file: the loader now refuses it (every split, every task, skip mode too).
2. A byte that is not UTF-8 on line 3 was reported at "line 1" (a text stream decodes in chunks): the
   error now names the line of the bad byte.
"""

from __future__ import annotations

import codecs

import pytest
from transformers import AutoTokenizer

from hf_pals import MultiTaskModel, PALConfig, run
from hf_pals.cli import main
from hf_pals.data import BadRowError, cs224n_path, load_cs224n, load_cs224n_file
from hf_pals.tasks import cs224n_task

HEADERS = {
    "sst": "\tid\tsentence\tsentiment\n",
    "quora": "\tid\tsentence1\tsentence2\tis_duplicate\n",
    "sts": "\tid\tsentence1\tsentence2\tsimilarity\n",
}
STS_ROWS = ["0\ts1\tA cat sits.\tA cat is sitting.\t4.2\n", "1\ts2\tA man runs.\tThe sky is blue.\t0.4\n"]


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------- header, no rows
@pytest.mark.parametrize("task", ["sst", "quora", "sts"])
@pytest.mark.parametrize("on_bad_rows", ["raise", "skip"])
def test_header_only_file_is_refused_naming_it(tmp_path, task, on_bad_rows):
    path = _write(tmp_path / f"{task}-dev.csv", HEADERS[task].encode())
    with pytest.raises(BadRowError) as info:
        load_cs224n_file(path, task, on_bad_rows=on_bad_rows)
    err = info.value
    assert (err.path, err.lineno, err.kind) == (str(path), 2, "no_rows")
    assert str(err) == f"{path}, line 2: no rows after the header"


def test_header_and_blank_lines_only_is_refused(tmp_path):
    path = _write(tmp_path / "sts-dev.csv", (HEADERS["sts"] + "\n\r\n\n").encode())
    with pytest.raises(BadRowError, match=r"sts-dev\.csv, line 2: no rows after the header"):
        load_cs224n_file(path, "sts")


def test_every_row_skipped_is_refused_with_the_counts(tmp_path):
    rows = "0\ts1\tA.\tB.\tnine\n1\ts2\tC.\t\t1.0\n"
    path = _write(tmp_path / "sts-train.csv", (HEADERS["sts"] + rows).encode())
    with pytest.raises(BadRowError) as info:
        load_cs224n_file(path, "sts", on_bad_rows="skip")
    assert info.value.kind == "no_rows" and info.value.lineno == 2
    assert "all 2 row(s) were bad and skipped (empty_text: 1, label_not_a_number: 1)" in str(info.value)


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_every_split_refuses_an_empty_file(tmp_path, split):
    path = _write(cs224n_path(tmp_path, "sts", split), HEADERS["sts"].encode())
    with pytest.raises(BadRowError, match=rf"{path.name}, line 2: no rows after the header"):
        load_cs224n(tmp_path, split, tasks=("sts",))


@pytest.fixture(scope="module")
def sts_bundle(tiny_base, tmp_path_factory):
    """A tiny bundle with one CS224N task (sts), as `hf-pals evaluate` reads it."""
    out = tmp_path_factory.mktemp("sts_bundle")
    model = MultiTaskModel.from_base(tiny_base, [cs224n_task("sts")], PALConfig(), freeze_encoder=True)
    model.save_pretrained(str(out), tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    return str(out)


@pytest.fixture
def no_scoring(monkeypatch):
    """Fail the test if anything is scored or predicted: the loader must refuse the file first."""

    def scored(*args, **kwargs):
        raise AssertionError("scored an empty split: the loader should have refused the file")

    monkeypatch.setattr(run, "evaluate_tasks", scored)
    monkeypatch.setattr(run, "evaluate_predictions", scored)
    monkeypatch.setattr(run.Ensemble, "predict", scored)  # `hf-pals evaluate` predicts through an Ensemble
    monkeypatch.setattr(run.Ensemble, "outputs", scored)


@pytest.mark.one_thread
@pytest.mark.parametrize("split", ["dev", "train", "test"])
def test_evaluate_refuses_a_header_only_file_before_scoring(sts_bundle, tmp_path, no_scoring, split):
    path = _write(cs224n_path(tmp_path, "sts", split), HEADERS["sts"].encode())
    with pytest.raises(BadRowError, match=rf"{path}, line 2: no rows after the header"):
        run.evaluate(sts_bundle, str(tmp_path), split=split)


@pytest.mark.one_thread
@pytest.mark.parametrize("skip", [False, True])
def test_cli_evaluate_names_the_empty_file(sts_bundle, tmp_path, no_scoring, capsys, skip):
    path = _write(cs224n_path(tmp_path, "sts", "dev"), HEADERS["sts"].encode())
    argv = ["evaluate", sts_bundle, "--data-dir", str(tmp_path), "--split", "dev"] + (["--skip-bad-rows"] if skip else [])
    assert main(argv) == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' progress bars
    assert last_line == f"hf-pals: error: {path}, line 2: no rows after the header"


@pytest.mark.one_thread
def test_evaluate_still_scores_a_file_with_rows(sts_bundle, tmp_path):
    _write(cs224n_path(tmp_path, "sts", "dev"), (HEADERS["sts"] + "".join(STS_ROWS)).encode())
    report = run.evaluate(sts_bundle, str(tmp_path), split="dev")
    assert set(report["sts"]) >= {"pearson"} and report["split"] == "dev"


# ----------------------------------------------------------------------------------- bad byte's line
def _bad_byte_error(path, task="sts") -> BadRowError:
    with pytest.raises(BadRowError) as info:
        load_cs224n_file(path, task, on_bad_rows="skip")  # not skippable: the text cannot be read
    assert info.value.kind == "encoding" and info.value.path == str(path)
    return info.value


def test_bad_byte_on_line_3_is_reported_on_line_3(tmp_path):
    data = HEADERS["sts"].encode() + STS_ROWS[0].encode() + b"2\ts3\tA caf\xe9 .\tA bar .\t3.0\n"
    err = _bad_byte_error(_write(tmp_path / "sts-dev.csv", data))
    assert err.lineno == 3
    assert str(err).startswith(f"{tmp_path / 'sts-dev.csv'}, line 3: not UTF-8 text: byte 0xe9 at byte 11 of the line")


def test_bad_byte_on_line_5_after_a_quoted_multiline_field_and_crlf(tmp_path):
    # line 2 is a row, lines 3-4 one row whose quoted sentence spans both, line 5 holds the bad byte
    rows = [
        STS_ROWS[0],
        '1\ts2\t"Two\nlines ."\tOne line .\t2.0\n',
        "2\ts3\tfine\tbad \xff here\t1.0\n",
    ]
    data = (HEADERS["sts"] + "".join(rows)).replace("\n", "\r\n").encode("latin-1")
    assert data.split(b"\r\n")[4].startswith(b"2\ts3")  # the bad row really is on line 5
    assert _bad_byte_error(_write(tmp_path / "sts-train.csv", data)).lineno == 5


def test_bad_byte_far_into_a_large_file_names_its_line(tmp_path):
    """Beyond the first read buffer (where a text stream first reports it): line 2001 of ~100 KB."""
    rows = [f"{i}\ts{i}\tSentence number {i} is here .\tAnother one , number {i} .\t2.5\n" for i in range(1999)]
    data = (HEADERS["sts"] + "".join(rows)).encode() + b"1999\ts1999\t\xc3\x28 broken\tok .\t1.0\n"
    assert len(data) > 64 * 1024
    assert _bad_byte_error(_write(tmp_path / "sts-train.csv", data)).lineno == 2001


def test_bad_byte_in_the_header_is_line_1(tmp_path):
    err = _bad_byte_error(_write(tmp_path / "sts-dev.csv", b"\tid\tsentence1\xfe\tsentence2\tsimilarity\n"))
    assert err.lineno == 1 and "byte 0xfe at byte 14 of the line" in str(err)


# ------------------------------------------------------------------------------------ BOM still loads
def test_file_with_a_byte_order_mark_still_loads(tmp_path):
    rows = STS_ROWS[0] + '1\ts2\t"Two\nlines ."\t"Say ""hi"" ."\t2.0\n'
    path = _write(tmp_path / "sts-dev.csv", codecs.BOM_UTF8 + (HEADERS["sts"] + rows).encode())
    ds = load_cs224n_file(path, "sts")
    assert ds["id"] == ["s1", "s2"]
    assert ds["sentence1"] == ["A cat sits.", "Two\nlines ."] and ds["sentence2"][1] == 'Say "hi" .'


def test_byte_order_mark_does_not_shift_the_bad_byte_line(tmp_path):
    data = codecs.BOM_UTF8 + HEADERS["sts"].encode() + STS_ROWS[0].encode() + b"2\ts3\t\x80\tB .\t3.0\n"
    assert _bad_byte_error(_write(tmp_path / "sts-dev.csv", data)).lineno == 3
