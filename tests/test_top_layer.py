"""Task-specific top layer (CS224N report 002): a copy of the encoder's last layer per task, in its head."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, TrainingArguments

from hf_pals import PALConfig
from hf_pals.data.multitask import MultiTaskCollator
from hf_pals.modeling import MultiTaskModel
from hf_pals.tasks import cs224n_task
from hf_pals.training import MultiTaskTrainer

ROWS = {
    "sst": [{"sentence1": "a gripping , funny film", "label": 4}, {"sentence1": "dull", "label": 0}],
    "quora": [
        {"sentence1": "how do i cook rice ?", "sentence2": "what is the way to cook rice ?", "label": 1},
        {"sentence1": "who won ?", "sentence2": "where is paris ?", "label": 0},
    ],
    "sts": [
        {"sentence1": "a man plays a guitar .", "sentence2": "a man is playing guitar .", "label": 4.6},
        {"sentence1": "a cat sleeps .", "sentence2": "stocks fell today .", "label": 0.2},
    ],
}


def _model(tiny_base, freeze_encoder=False, pal_type="pal", top=("sst", "sts")):
    torch.manual_seed(0)
    tasks = {
        "sst": cs224n_task("sst", top_layer="sst" in top),
        "quora": cs224n_task("quora", top_layer="quora" in top),
        "sts": cs224n_task("sts", pair_encoding="siamese", head="cosine", top_layer="sts" in top),
    }
    config = PALConfig(pal_type=pal_type, init_pal_weights="bert")
    return MultiTaskModel.from_base(tiny_base, tasks, config, freeze_encoder=freeze_encoder)


def _batches(tiny_base, model):
    collator = MultiTaskCollator(AutoTokenizer.from_pretrained(tiny_base), model.tasks, max_length=32)
    return {task: collator([dict(r, task=task) for r in rows]) for task, rows in ROWS.items()}


def _last_layer(model):
    layer = model.encoder.get_base_model().encoder.layer[-1]
    return layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer


def test_top_layer_is_a_copy_of_the_last_layer_with_its_parameter_count(tiny_base):
    model = _model(tiny_base)
    last = _last_layer(model)
    top = model.heads["sst"].top_layer
    assert model.heads["quora"].top_layer is None
    assert top is not last and top is not model.heads["sts"].top_layer
    for (name, p), (_, q) in zip(top.named_parameters(), last.named_parameters()):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr(), name
    # a BERT layer: Q, K, V, O (4 d^2 + 4 d), two LayerNorms (4 d), the FFN (2 d i + i + d)
    d, i = 32, 37
    expected = 4 * d * d + 4 * d + 4 * d + 2 * d * i + i + d
    assert sum(p.numel() for p in top.parameters()) == expected
    without = _model(tiny_base, top=())
    added = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in without.parameters())
    assert added == 2 * expected


def test_top_layer_changes_only_its_own_task(tiny_base):
    model = _model(tiny_base).eval()
    batches = _batches(tiny_base, model)
    before = {t: model(**b)["logits"] for t, b in batches.items()}
    with torch.no_grad():
        for p in model.heads["sst"].top_layer.parameters():
            p.add_(0.1)
    after = {t: model(**b)["logits"] for t, b in batches.items()}
    assert not torch.allclose(before["sst"], after["sst"])
    assert torch.equal(before["quora"], after["quora"]) and torch.equal(before["sts"], after["sts"])
    assert after["sts"].shape == (2,)  # siamese pairs go through the top layer too


def test_top_layer_ignores_padding(tiny_base):
    model = _model(tiny_base).eval()
    collator = MultiTaskCollator(AutoTokenizer.from_pretrained(tiny_base), model.tasks, max_length=32)
    short = dict(ROWS["sst"][1], task="sst")
    alone = collator([short])
    padded = collator([dict(ROWS["sst"][0], task="sst"), short])
    assert padded["input_ids"].shape[1] > alone["input_ids"].shape[1]
    assert torch.allclose(model(**alone)["logits"][0], model(**padded)["logits"][1], atol=1e-5)


@pytest.mark.parametrize("freeze_encoder", [False, True])
def test_top_layer_trains_with_the_heads_even_with_a_frozen_encoder(tiny_base, tmp_path, freeze_encoder):
    model = _model(tiny_base, freeze_encoder=freeze_encoder)
    top = [n for n, _ in model.named_parameters() if ".top_layer." in n]
    assert top and all(p.requires_grad for n, p in model.named_parameters() if ".top_layer." in n)
    assert all(p.requires_grad != freeze_encoder for n, p in model.encoder.named_parameters() if "pals_" not in n)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, use_cpu=True, report_to="none")
    from datasets import Dataset

    trainer = MultiTaskTrainer(
        model,
        args,
        train_datasets={"sst": Dataset.from_list(ROWS["sst"])},
        tokenizer=AutoTokenizer.from_pretrained(tiny_base),
        learning_rates={"encoder": 1e-5, "adapters": 1e-4, "heads": 1e-3},
    )
    assert {trainer.parameter_group(n) for n in top} == {"heads"}
    optimizer = trainer.create_optimizer()
    ids = {id(p) for n, p in model.named_parameters() if ".top_layer." in n}
    groups = [g for g in optimizer.param_groups if ids & {id(p) for p in g["params"]}]
    assert groups and all(g["lr"] == 1e-3 for g in groups)
    assert sum(len(ids & {id(p) for p in g["params"]}) for g in groups) == len(ids)


@pytest.mark.parametrize("pal_type", ["pal", "low_rank"])
def test_top_layer_round_trips_through_a_bundle(tiny_base, tmp_path, pal_type):
    model = _model(tiny_base, freeze_encoder=True, pal_type=pal_type).eval()
    with torch.no_grad():
        for p in model.heads["sst"].top_layer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(str(tmp_path))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "heads.safetensors"), framework="pt") as f:
        assert any(k.startswith("sst.top_layer.attention.self.query") for k in f.keys())
        assert not any(k.startswith("quora.top_layer") for k in f.keys())
    config = json.loads((tmp_path / "hf_pals_config.json").read_text())
    assert config["tasks"]["sst"]["top_layer"] is True and config["tasks"]["quora"]["top_layer"] is False
    loaded = MultiTaskModel.from_pretrained(str(tmp_path))
    batches = _batches(tiny_base, model)
    for task, batch in batches.items():
        assert torch.allclose(model(**batch)["logits"], loaded(**batch)["logits"], atol=1e-6), task
    for (name, p), (_, q) in zip(model.heads.named_parameters(), loaded.heads.named_parameters()):
        assert torch.equal(p, q), name


@pytest.mark.slow
def test_tiny_recipe_with_top_layer_low_rank_smart_augment_and_new_heads(tmp_path, data_dir, minilm_path, monkeypatch):
    """The tiny recipe end to end with a top layer on SST and STS (with low-rank adapters, report 002's
    best mix), SMART and EDA on SST and STS, a linear + cosine Quora head and a ReLU-cosine STS head on
    1 - Pearson. EDA uses all four operations when WordNet (the augment extra) is installed."""
    from pathlib import Path

    from hf_pals.cli import main
    from hf_pals.data.augment import EDAAugmenter, wordnet_dir

    try:
        wordnet_dir()
        operations = "[synonym_replacement, random_insertion, random_swap, random_deletion]"
    except ImportError:
        operations = "[random_swap, random_deletion]"
    augmented = []
    call = EDAAugmenter.__call__

    def spy(self, task, features, columns):
        out = call(self, task, features, columns)
        augmented.append((task, [r[c] for r in out for c in columns] != [r[c] for r in features for c in columns]))
        return out

    monkeypatch.setattr(EDAAugmenter, "__call__", spy)

    tiny = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml")  # ~20 s
    out = tmp_path / "run"
    sets = [
        "tasks.sst.top_layer=true",
        "tasks.sts.top_layer=true",
        "adapter.pal_type=low_rank",
        "tasks.quora={pair_encoding: siamese, head: linear_cosine}",
        "tasks.sts.head=cosine_relu",
        "tasks.sts.loss=one_minus_pearson",
        "smart.weights={sst: 0.5, sts: 0.5}",
        f"augment={{tasks: [sst, sts], alpha: 0.1, num_aug: 1, prob: 0.5, operations: {operations}}}",
    ]
    args = ["train", tiny, "--data-dir", str(data_dir), "--output-dir", str(out)]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    report = json.loads((out / "eval_results.json").read_text())
    assert set(report) >= {"sst", "quora", "sts", "overall"}
    assert any(changed for task, changed in augmented if task in ("sst", "sts"))
    assert not any(changed for task, changed in augmented if task == "quora")  # not an augmented task
    loaded = MultiTaskModel.from_pretrained(str(out))
    assert loaded.heads["sst"].top_layer is not None and loaded.heads["quora"].top_layer is None
    assert loaded.tasks["sts"].loss == "one_minus_pearson"
    evaluate = ["evaluate", str(out), "--data-dir", str(data_dir), "--max-examples", "32"]
    assert main(evaluate + ["--output", str(tmp_path / "r.json")]) == 0
    assert set(json.loads((tmp_path / "r.json").read_text())) >= {"sst", "quora", "sts", "overall"}
