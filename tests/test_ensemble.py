"""Prediction ensembles (`hf_pals.ensemble`, `hf-pals evaluate DIR DIR ...`): the combination rule per task
kind against its written-out formula, an ensemble of one predicting exactly as its model, the report of an
ensemble on real dev rows, and members that disagree refused with the member and field named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from hf_pals import PALConfig
from hf_pals.cli import main
from hf_pals.ensemble import Ensemble, EnsembleError, combine_outputs
from hf_pals.evaluation import predict, predict_outputs
from hf_pals.modeling import MultiTaskModel
from hf_pals.run import load_for_inference
from hf_pals.tasks import TaskSpec, cs224n_task

from test_soup import _bundle as soup_bundle

DEV_ROWS = 40


def _bundle(tiny_base, path: Path, seed: int, sts_encoding: str = "siamese") -> Path:
    """A tiny CS224N bundle with seeded random weights (different seeds predict differently)."""
    sts = (
        cs224n_task("sts", pair_encoding="siamese", head="cosine")
        if sts_encoding == "siamese"
        else cs224n_task("sts", pair_encoding=sts_encoding)
    )
    tasks = {"sst": cs224n_task("sst"), "quora": cs224n_task("quora"), "sts": sts}
    return soup_bundle(tiny_base, path, seed, tasks=tasks, noise=0.05)


@pytest.fixture(scope="module")
def bundles(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    return [
        _bundle(tiny_base, root / "seed-1", seed=1),
        _bundle(tiny_base, root / "seed-2", seed=2),
        _bundle(tiny_base, root / "packed-sts", seed=3, sts_encoding="packed"),
    ]


def test_combine_outputs_follows_each_kinds_formula():
    torch.manual_seed(0)
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    sst = TaskSpec(name="sst", kind="classification", num_labels=5, text_columns=["sentence1"])
    probabilities = (torch.softmax(a, -1) + torch.softmax(b, -1)) / 2
    combined = combine_outputs(sst, [a, b])
    assert torch.allclose(torch.softmax(combined, -1), probabilities, atol=1e-6)
    assert torch.equal(combined.argmax(-1), probabilities.argmax(-1))

    x, y = torch.tensor([2.0, -3.0, 0.5]), torch.tensor([-1.0, -1.0, -2.0])
    binary = TaskSpec(name="para", kind="binary", text_columns=["sentence1", "sentence2"])
    mean_p = (torch.sigmoid(x) + torch.sigmoid(y)) / 2
    assert torch.allclose(torch.sigmoid(combine_outputs(binary, [x, y])), mean_p, atol=1e-6)
    # mean probability 0.5 * (0.881 + 0.269) = 0.575 > 0.5 for the first row, though the logits' mean is 0.5 either way
    assert (combine_outputs(binary, [x, y]) > 0).tolist() == [True, False, False]

    sts = TaskSpec(name="sts", kind="regression", text_columns=["sentence1", "sentence2"], label_max=5.0)
    assert torch.equal(combine_outputs(sts, [x, y]), (x + y) / 2)
    assert combine_outputs(sts, [x]) is x  # one member: its outputs as they are
    with pytest.raises(EnsembleError, match="no member outputs"):
        combine_outputs(sts, [])


@pytest.mark.one_thread
def test_an_ensemble_of_one_predicts_exactly_as_its_model(bundles):
    model, collator = load_for_inference(str(bundles[0]))
    ensemble = Ensemble([(model, collator)])
    rows = [{"sentence1": "a fine film", "sentence2": "a good film"}, {"sentence1": "dull", "sentence2": "rice"}]
    for task in ("sst", "quora", "sts"):
        task_rows = [{c: r[c] for c in model.tasks[task].text_columns} for r in rows]
        assert torch.equal(ensemble.outputs(task_rows, task), predict_outputs(model, collator, task_rows, task))
        assert np.array_equal(ensemble.predict(task_rows, task), predict(model, collator, task_rows, task))


@pytest.mark.one_thread
def test_evaluate_several_dirs_scores_the_ensemble_on_dev_rows(bundles, data_dir, tmp_path, capsys):
    """Members with different STS pair encodings (siamese cosine, packed) each use their own collator; the
    report's scores are those of the averaged outputs, computed here by hand from each member's outputs."""
    out = tmp_path / "ensemble.json"
    args = ["evaluate", *map(str, bundles), "--data-dir", str(data_dir), "--max-examples", str(DEV_ROWS)]
    assert main([*args, "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ensemble"] == [str(b) for b in bundles]
    assert set(report) >= {"sst", "quora", "sts", "overall"} and math.isfinite(report["overall"])

    from hf_pals.data import cs224n_path, load_cs224n_file

    members = [load_for_inference(str(b)) for b in bundles]
    for task, handout in (("sst", "sst"), ("quora", "quora"), ("sts", "sts")):
        rows = load_cs224n_file(cs224n_path(str(data_dir), handout, "dev"), handout).select(range(DEV_ROWS))
        outputs = [predict_outputs(m, c, rows, task) for m, c in members]
        spec = members[0][0].tasks[task]
        if spec.kind == "regression":
            by_hand = torch.stack(outputs).mean(0).numpy()
            assert report[task]["pearson"] == pytest.approx(np.corrcoef(by_hand, rows["label"])[0, 1], abs=1e-5)
        else:
            if spec.kind == "binary":  # Quora: one logit, the mean probability against 0.5
                by_hand = (torch.stack([torch.sigmoid(o) for o in outputs]).mean(0) > 0.5).long().numpy()
            else:
                by_hand = torch.stack([torch.softmax(o, -1) for o in outputs]).mean(0).argmax(-1).numpy()
            assert report[task]["accuracy"] == pytest.approx(float(np.mean(by_hand == np.asarray(rows["label"]))))
    # and it is not simply the first member's report
    capsys.readouterr()
    assert main(["evaluate", str(bundles[0]), "--data-dir", str(data_dir), "--max-examples", str(DEV_ROWS)]) == 0
    single = json.loads(capsys.readouterr().out)
    assert "ensemble" not in single
    assert any(single[t] != report[t] for t in ("sst", "quora", "sts"))


def test_members_that_disagree_are_refused_naming_member_and_field(tiny_base, bundles, tmp_path, capsys):
    torch.manual_seed(4)
    tasks = {"sst": cs224n_task("sst", num_labels=3), "quora": cs224n_task("quora"),
             "sts": cs224n_task("sts", pair_encoding="siamese", head="cosine")}
    three = tmp_path / "sst-3"
    MultiTaskModel.from_base(tiny_base, tasks, PALConfig()).save_pretrained(
        str(three), tokenizer=AutoTokenizer.from_pretrained(tiny_base)
    )
    with pytest.raises(EnsembleError, match=rf"{three}: task 'sst' has num_labels 3, .* has 5"):
        Ensemble([load_for_inference(str(bundles[0])), load_for_inference(str(three))], names=[str(bundles[0]), str(three)])

    two_tasks = tmp_path / "two-tasks"
    MultiTaskModel.from_base(tiny_base, {"sst": cs224n_task("sst"), "quora": cs224n_task("quora")}, PALConfig()).save_pretrained(
        str(two_tasks), tokenizer=AutoTokenizer.from_pretrained(tiny_base)
    )
    assert main(["evaluate", str(bundles[0]), str(two_tasks), "--data-dir", "unused", "--max-examples", "4"]) == 2
    err = capsys.readouterr().err
    assert str(two_tasks) in err and "differ from" in err
    with pytest.raises(EnsembleError, match="at least one model"):
        Ensemble([])


@pytest.mark.one_thread
def test_ensemble_test_predictions_need_their_own_output_dir(bundles, data_dir, tmp_path, capsys):
    args = ["evaluate", str(bundles[0]), str(bundles[1]), "--data-dir", str(data_dir), "--split", "test"]
    assert main([*args, "--max-examples", "4"]) == 2
    assert "--output" in capsys.readouterr().err
    assert not (bundles[0] / "predictions").exists()
    out = tmp_path / "preds"
    assert main([*args, "--max-examples", "4", "--output", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "quora" in result["skipped"]  # the data here has no Quora test file
    assert sorted(p.name for p in out.iterdir()) == ["sst-test-output.csv", "sts-test-output.csv"]
    assert len((out / "sst-test-output.csv").read_text().splitlines()) == 1 + 4  # header and 4 predictions


@pytest.mark.one_thread
def test_ensemble_predictor_gives_the_mean_probability_of_its_label(bundles):
    from hf_pals.predictor import EnsemblePredictor
    from hf_pals.predictor import MultiTaskPredictor

    texts = ["a gripping , funny film", "dull and slow", "it is a film"]
    ensemble = EnsemblePredictor.from_pretrained([str(b) for b in bundles[:2]])
    assert ensemble.tasks == ["sst", "quora", "sts"]
    members = [MultiTaskPredictor.from_pretrained(str(b)) for b in bundles[:2]]
    rows = [{"sentence1": t} for t in texts]
    mean_p = torch.stack([torch.softmax(predict_outputs(m.model, m.collator, rows, "sst"), -1) for m in members]).mean(0)
    got = ensemble.predict("sst", texts)
    assert [g["label"] for g in got] == mean_p.argmax(-1).tolist()
    assert [g["score"] for g in got] == pytest.approx(mean_p.max(-1).values.tolist(), abs=1e-6)
    pairs = [("a man plays", "a man is playing"), ("rice", "music")]
    sts = ensemble.predict("sts", pairs)
    by_hand = [(a["score"] + b["score"]) / 2 for a, b in zip(*(m.predict("sts", pairs) for m in members))]
    assert [s["score"] for s in sts] == pytest.approx(by_hand, abs=1e-6)
