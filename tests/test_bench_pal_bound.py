"""`hf-pals bench pal-bound`: the cut-down TS(h) compute what their docstrings say, are set on one
model's layers only, and the benchmark runs end to end on a tiny base with consistent figures (its
timings are only meaningful from the command on a quiet machine)."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from transformers import BertModel

from hf_pals.benchmarks import pal_bound
from hf_pals.tuner import PALConfig
from hf_pals.tuner.layer import PALLayer

from conftest import tiny_bert_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _pal_model():
    torch.manual_seed(0)
    return get_peft_model(BertModel(tiny_bert_config()), PALConfig(init_pal_weights="bert"), adapter_name="task").eval()


def _first_pal_layer(model) -> PALLayer:
    return next(m for m in model.modules() if isinstance(m, PALLayer))


def test_products_cut_is_every_product_of_ts_written_out():
    layer = _first_pal_layer(_pal_model())
    h = torch.randn(2, 5, layer.hidden_size)
    name, heads = "task", layer.pals_num_heads["task"]
    x = layer.pals_encoder[name](h)
    q, k, v = (getattr(layer, f"pals_{part}")[name](x) for part in ("query", "key", "value"))
    split = lambda t: t.view(2, 5, heads, -1).transpose(1, 2)  # noqa: E731
    context = (split(q) @ split(k).transpose(-1, -2)) @ split(v)
    expected = layer.pals_decoder[name](context.transpose(1, 2).reshape(2, 5, -1))
    torch.testing.assert_close(pal_bound.ts_products(layer, name, h, None), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pal_bound.ts_low_rank(layer, name, h, None), layer.pals_decoder[name](x))
    assert torch.count_nonzero(pal_bound.ts_none(layer, name, h, None)) == 0


def test_cut_changes_its_own_model_only():
    cut, untouched = _pal_model(), _pal_model()
    ids = torch.randint(0, 99, (2, 6))
    before = untouched(input_ids=ids).last_hidden_state
    assert pal_bound.with_cut(cut, "low_rank") == tiny_bert_config().num_hidden_layers
    assert all(m.task_specific.__func__ is pal_bound.ts_low_rank for m in cut.modules() if isinstance(m, PALLayer))
    torch.testing.assert_close(untouched(input_ids=ids).last_hidden_state, before)
    assert not torch.allclose(cut(input_ids=ids).last_hidden_state, before)


def test_pal_bound_benchmark_reports_every_cut(tiny_base, data_dir):
    result = pal_bound.run(str(data_dir), tiny_base, batch_size=4, max_length=16, repeats=1)
    expected = {"full_finetune"} | {
        e if c is None else f"{e}/{c}" for e in pal_bound.ENCODERS for c in (None, *pal_bound.CUTS)
    }
    steps = result["train_step_seconds"]
    assert set(steps) == expected and all(t > 0 for t in steps.values())
    over = result["over_full_finetune"]
    assert set(over) == expected - {"full_finetune"}
    assert over["pal"] == pytest.approx(steps["pal"] / steps["full_finetune"], rel=0.05)  # one round: its own ratio
    assert result["products_alone_meet_target"]["pal"] == (over["pal/products"] <= 1.08)


def test_unknown_architecture_is_refused_with_the_choices(tiny_base, data_dir):
    with pytest.raises(ValueError, match="unknown architecture 'bert-huge'; choose from bert-base"):
        pal_bound.run(str(data_dir), tiny_base, architecture="bert-huge")
