"""A mixed-task batch whose tasks' rows interleave runs under CPU autocast to bfloat16 (the README's way to
serve in bf16): each task's rows give what they give alone. Before, the PAL layer wrote the bfloat16
changes of interleaved rows into a float32 buffer and `index_copy_` failed (found by `bench serving`)."""

from __future__ import annotations

import pytest
import torch

from hf_pals import MultiTaskModel, MultiTaskPredictor, PALConfig
from hf_pals.tasks import cs224n_task

pytestmark = [
    pytest.mark.one_thread,
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),  # PEFT: the base path is renamed to the bundle's encoder
]


@pytest.fixture(scope="module")
def model(tiny_base):
    torch.manual_seed(0)
    tasks = [cs224n_task("sst"), cs224n_task("quora")]
    return MultiTaskModel.from_base(tiny_base, tasks, PALConfig(init_pal_weights="bert")).eval()


@torch.no_grad()
def test_interleaved_rows_under_bf16_autocast_equal_each_task_alone(model):
    torch.manual_seed(1)
    input_ids = torch.randint(1000, 2000, (4, 9))
    mask = torch.ones_like(input_ids)
    names = ["sst", "quora", "sst", "quora"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.encoder(input_ids=input_ids, attention_mask=mask, adapter_names=names).last_hidden_state
        for task, rows in (("sst", [0, 2]), ("quora", [1, 3])):
            alone = model.encoder(input_ids=input_ids[rows], attention_mask=mask[rows], adapter_names=task).last_hidden_state
            torch.testing.assert_close(mixed[rows].float(), alone.float(), atol=3e-2, rtol=3e-2)


def test_predict_mixed_under_bf16_autocast(model, tiny_base, tmp_path):
    from transformers import AutoTokenizer

    model.save_pretrained(str(tmp_path), tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    predictor = MultiTaskPredictor.from_pretrained(str(tmp_path), batch_size=4)
    items = [("sst", "a fine film"), ("quora", ("how ?", "why ?")), ("sst", "dull"), ("quora", ("who ?", "who ?"))]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        results = predictor.predict_mixed(items)
    assert [r["task"] for r in results] == ["sst", "quora", "sst", "quora"]
    float32 = predictor.predict_mixed(items)
    for low, full in zip(results, float32):
        assert low["score"] == pytest.approx(full["score"], abs=0.05)
