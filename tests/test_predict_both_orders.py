"""`predict_both_orders`: pairs predicted as (a, b) and (b, a), the head outputs averaged, in evaluation,
`MultiTaskPredictor.predict`, `predict_mixed`, and saved bundles."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoTokenizer

from hf_pals import MultiTaskModel, MultiTaskPredictor, PALConfig
from hf_pals.data.multitask import MultiTaskCollator
from hf_pals.evaluation import predict_outputs, swap_pair
from hf_pals.tasks import TaskSpec, cs224n_task

pytestmark = pytest.mark.one_thread

PAIRS = [
    ("how do i cook rice ?", "what is the way to cook rice ?"),
    ("who won the cup in 1998 ?", "where is paris ?"),
    ("a man plays a guitar .", "a man is playing guitar ."),
    ("is it raining ?", "will it rain in london tomorrow afternoon ?"),
]
SST = ["a gripping , funny film", "dull"]


def test_the_field_needs_a_pair_and_round_trips():
    with pytest.raises(ValueError, match="task 'sst': predict_both_orders needs a sentence pair"):
        cs224n_task("sst", predict_both_orders=True)
    spec = cs224n_task("quora", predict_both_orders=True)
    assert TaskSpec.from_dict("quora", {k: v for k, v in spec.to_dict().items() if k != "name"}) == spec
    old_bundle = {k: v for k, v in cs224n_task("quora").to_dict().items() if k not in ("name", "predict_both_orders")}
    assert TaskSpec.from_dict("quora", old_bundle).predict_both_orders is False  # bundles written before it


@pytest.fixture(scope="module")
def model_and_collator(tiny_base):
    torch.manual_seed(0)
    tasks = [cs224n_task("sst"), cs224n_task("quora", pair_encoding="both"), cs224n_task("sts")]
    model = MultiTaskModel.from_base(tiny_base, tasks, PALConfig(init_pal_weights="bert"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".pals_" in name or name.startswith("heads."):
                param.add_(torch.randn_like(param) * 0.2)
    model.eval()
    return model, MultiTaskCollator(AutoTokenizer.from_pretrained(tiny_base), model.tasks, max_length=64)


def _rows(pairs):
    return [{"sentence1": a, "sentence2": b} for a, b in pairs]


@pytest.mark.parametrize("task", ["quora", "sts"])
def test_outputs_are_the_mean_of_both_orders_and_symmetric(model_and_collator, task):
    model, collator = model_and_collator
    spec = model.tasks[task]
    one_way = predict_outputs(model, collator, _rows(PAIRS), task, batch_size=3)
    other_way = predict_outputs(model, collator, [swap_pair(spec, r) for r in _rows(PAIRS)], task, batch_size=3)
    assert not torch.allclose(one_way, other_way)  # the packed pair reads an order
    model.tasks[task] = dataclasses.replace(spec, predict_both_orders=True)
    try:
        both = predict_outputs(model, collator, _rows(PAIRS), task, batch_size=3)
        reversed_both = predict_outputs(model, collator, _rows([(b, a) for a, b in PAIRS]), task, batch_size=3)
    finally:
        model.tasks[task] = spec
    torch.testing.assert_close(both, (one_way + other_way) / 2)
    torch.testing.assert_close(both, reversed_both)


def test_predictor_and_mixed_stream_agree(model_and_collator, tmp_path, tiny_base):
    model, _ = model_and_collator
    spec = model.tasks["quora"]
    model.tasks["quora"] = dataclasses.replace(spec, predict_both_orders=True)
    try:
        model.save_pretrained(str(tmp_path), tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    finally:
        model.tasks["quora"] = spec
    predictor = MultiTaskPredictor.from_pretrained(str(tmp_path))
    assert predictor.model.tasks["quora"].predict_both_orders  # kept in the bundle
    single = predictor.predict("quora", PAIRS)
    assert single == predictor.predict("quora", [(b, a) for a, b in PAIRS])
    items = [("sst", SST[0]), *[("quora", p) for p in PAIRS], ("sst", SST[1]), ("sts", PAIRS[0])]
    mixed = predictor.predict_mixed(items, batch_size=4)
    quora_mixed = [r for r in mixed if r["task"] == "quora"]
    assert [r["label"] for r in quora_mixed] == [r["label"] for r in single]
    torch.testing.assert_close(torch.tensor([r["score"] for r in quora_mixed]),
                               torch.tensor([r["score"] for r in single]), atol=1e-5, rtol=1e-5)
    assert [r["task"] for r in mixed] == [t for t, _ in items]
    sst = predictor.predict("sst", SST)
    assert [r["label"] for r in (mixed[0], mixed[5])] == [r["label"] for r in sst]
