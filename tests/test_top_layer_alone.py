"""A task-specific top layer alone: a `MultiTaskModel` without adapters (`adapter: none` in a recipe).

The shared encoder is a plain `BertModel`, fine-tuned with every task or frozen; each task has its head
and its own transformer layer on top. Tiny random BERTs (hidden 32, 2 layers), one CPU thread; the CLI
run uses a few synthetic CS224N-format rows, not the real data.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, BertModel, TrainingArguments

from hf_pals import MultiTaskPredictor, PALConfig, hub
from hf_pals.cli import main
from hf_pals.modeling import MultiTaskModel
from hf_pals.recipe import RecipeError, load_recipe
from hf_pals.tasks import cs224n_task
from hf_pals.training import MultiTaskTrainer
from peft import PeftModel

from conftest import REPO
from test_curricula import ParameterSnapshots, _snapshot
from test_recipe import _base, _write
from test_top_layer import ROWS, _batches
from test_trainer import _datasets

TINY = str(REPO / "recipes" / "tiny.yaml")
TASKS = ("sst", "quora", "sts")


pytestmark = pytest.mark.one_thread  # small models: one torch thread is faster and deterministic


def _tasks(top=TASKS, sts_head="cosine"):
    return {
        "sst": cs224n_task("sst", top_layer="sst" in top),
        "quora": cs224n_task("quora", top_layer="quora" in top),
        "sts": cs224n_task("sts", pair_encoding="siamese", head=sts_head, top_layer="sts" in top),
    }


def _model(tiny_base, freeze_encoder=False, top=TASKS, sts_head="cosine"):
    torch.manual_seed(0)
    return MultiTaskModel.from_base(tiny_base, _tasks(top, sts_head), freeze_encoder=freeze_encoder, adapters=False)


def _bert_layer_parameters(config) -> int:
    """One BERT layer: Q, K, V, O (4 d^2 + 4 d), two LayerNorms (4 d), the FFN (2 d i + i + d)."""
    d, i = config.hidden_size, config.intermediate_size
    return 4 * d * d + 4 * d + 4 * d + 2 * d * i + i + d


def _bert_parameters(config) -> int:
    """A `BertModel`: embeddings (word, position, token type, LayerNorm), the layers, the pooler."""
    d = config.hidden_size
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * d + 2 * d
    return embeddings + config.num_hidden_layers * _bert_layer_parameters(config) + d * d + d


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _changed(before, after) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n])}


# ------------------------------------------------------------------------------------------- model
def test_the_encoder_is_a_plain_bert_model_without_pal_parameters(tiny_base):
    model = _model(tiny_base)
    assert type(model.encoder) is BertModel and not isinstance(model.encoder, PeftModel)
    assert model.bert is model.encoder and not model.has_adapters
    assert not [n for n, _ in model.named_parameters() if "pals_" in n]
    assert all(model.heads[t].top_layer is not None for t in TASKS)
    assert model.bundle_config()["adapters"] is False
    with_adapters = MultiTaskModel.from_base(tiny_base, _tasks(), PALConfig(init_pal_weights="bert"))
    assert with_adapters.has_adapters and type(with_adapters.bert) is BertModel
    assert [n for n, _ in with_adapters.named_parameters() if "pals_" in n]
    with pytest.raises(ValueError, match="without adapters; pass no pal_config"):
        MultiTaskModel.from_base(tiny_base, _tasks(), PALConfig(), adapters=False)


@pytest.mark.parametrize("freeze_encoder", [False, True], ids=["joint", "frozen"])
def test_trainable_parameters_are_encoder_heads_and_top_layers(tiny_base, freeze_encoder):
    model = _model(tiny_base, freeze_encoder=freeze_encoder)
    config = model.bert.config
    d = config.hidden_size
    heads = (5 * d + 5) + (d + 1) + 0  # sst: linear to 5 classes; quora: linear to 1 logit; sts: cosine
    top_layers = 3 * _bert_layer_parameters(config)
    encoder = 0 if freeze_encoder else _bert_parameters(config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == encoder + heads + top_layers
    assert sum(p.numel() for p in model.encoder.parameters()) == _bert_parameters(config)
    assert all(p.requires_grad != freeze_encoder for p in model.encoder.parameters())


# ---------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("freeze_encoder", [False, True], ids=["joint", "frozen"])
def test_training_moves_the_encoder_and_the_trained_tasks_heads_only(tiny_base, tmp_path, freeze_encoder):
    """sst and sts train (round robin), quora does not: its head and top layer stay as they were; the
    frozen encoder (or, when trained, its unused pooler) too. Weight decay is on, so a parameter that
    merely had a zero gradient would still move."""
    model = _model(tiny_base, freeze_encoder=freeze_encoder)
    data = _datasets()
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3, weight_decay=0.1,
        save_strategy="no", seed=11, use_cpu=True, report_to="none",
    )
    rates = {"encoder": 1e-4, "adapters": 5e-2, "heads": 1e-3}
    trainer = MultiTaskTrainer(
        model, args, train_datasets={"sst": data["sst"], "sts": data["sts"]}, max_length=16,
        tokenizer=AutoTokenizer.from_pretrained(tiny_base), sampling="round_robin", learning_rates=rates,
    )
    groups = {trainer.parameter_group(n) for n in _trainable(model)}
    assert groups == ({"heads"} if freeze_encoder else {"encoder", "heads"})  # no "adapters" group
    optimizer = trainer.create_optimizer()
    assert {g["lr"] for g in optimizer.param_groups} == ({1e-3} if freeze_encoder else {1e-4, 1e-3})

    before = _snapshot(model)
    trainer.train()
    assert trainer.task_steps() == {"sst": 2, "sts": 2}
    moved = _changed(before, _snapshot(model))

    expected = {n for n in _trainable(model) if n.startswith(("heads.sst.", "heads.sts."))}
    if not freeze_encoder:
        expected |= {n for n in _trainable(model) if n.startswith("encoder.") and ".pooler." not in n}
    assert moved <= expected, sorted(moved - expected)[:5]
    matrices = {n for n in expected if before[n].dim() == 2}
    assert matrices and matrices <= moved, sorted(matrices - moved)[:5]
    assert any(n.startswith("heads.sts.top_layer.") for n in moved)  # sts's head is its top layer alone
    assert not any(n.startswith("heads.quora.") for n in moved)


def test_smart_perturbs_the_plain_encoders_embeddings(tiny_base):
    """SMART's penalty reaches the word embeddings and the task's top layer through the plain encoder."""
    from hf_pals.training.smart import SMARTConfig, smart_penalty
    from test_smart import BIG

    model = _model(tiny_base).eval()
    batch = _batches(tiny_base, model)["sst"]
    logits = model(**batch)["logits"]
    penalty = smart_penalty(model, batch, logits, SMARTConfig(**BIG))
    assert penalty.item() > 0.0
    penalty.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert "encoder.embeddings.word_embeddings.weight" in grads
    assert any(n.startswith("heads.sst.top_layer.") for n in grads)


def test_hybrid_curriculum_trains_only_the_current_tasks_head_and_top_layer(tiny_base, tmp_path):
    """Sequential epoch (steps 0, 1): step 0 trains sst's head and top layer only, step 1 quora's; joint
    epoch (steps 2, 3): the encoder and every task train."""
    from hf_pals.training.curriculum import HybridTrainer, task_parameters

    recorder = ParameterSnapshots()
    snapshots = recorder.snapshots

    model = _model(tiny_base)
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3, weight_decay=0.1,
        save_strategy="no", seed=11, use_cpu=True, report_to="none",
    )
    common = dict(
        train_datasets=_datasets(), max_length=16, tokenizer=AutoTokenizer.from_pretrained(tiny_base),
        sampling={"name": "hybrid", "steps_per_epoch": 2}, multitask={"step_mode": "joint"},
    )
    trainer = HybridTrainer(model, args, callbacks=[recorder], **common)
    owned = task_parameters(model, list(TASKS))
    ids = {id(p): n for n, p in model.named_parameters()}
    owner = {ids[id(p)]: task for task, params in owned.items() for p in params}
    assert all(n.startswith(f"heads.{task}.") for n, task in owner.items())
    assert {n for n in owner if ".top_layer." in n} == {n for n in ids.values() if ".top_layer." in n}
    trainer.train()
    assert len(snapshots) == 5
    for step, task in ((0, "sst"), (1, "quora")):
        moved = _changed(snapshots[step], snapshots[step + 1])
        assert moved and {owner.get(n) for n in moved} == {task}, (step, sorted(moved)[:5])
    moved = _changed(snapshots[2], snapshots[4])
    assert {owner.get(n) for n in moved} == {None, *TASKS}  # None: the shared encoder

    # A task whose head has no parameters and no top layer would train nothing in its sequential steps.
    bare = _model(tiny_base, top=("sst", "quora"))
    with pytest.raises(ValueError, match=r"task\(s\) \['sts'\] own no parameters"):
        HybridTrainer(bare, args, **common)


# ------------------------------------------------------------------------------------- save / load
def _perturbed(tiny_base, freeze_encoder):
    """A model whose trainable weights (heads, top layers, and the encoder when trained) all differ
    from a fresh one, in eval mode."""
    model = _model(tiny_base, freeze_encoder=freeze_encoder, sts_head="linear")
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


@pytest.fixture(scope="module", params=[False, True], ids=["joint", "frozen"])
def bundle(request, tiny_base, tmp_path_factory):
    path = tmp_path_factory.mktemp("no_adapters")
    model = _perturbed(tiny_base, request.param)
    model.save_pretrained(str(path), tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    return path, model


def test_bundle_has_no_adapters_and_round_trips(bundle, tiny_base):
    path, model = bundle
    frozen = model.freeze_encoder
    assert not (path / "adapters").exists()
    assert (path / "encoder" / "model.safetensors").is_file() != frozen
    config = json.loads((path / "hf_pals_config.json").read_text())
    assert config["adapters"] is False and config["freeze_encoder"] is frozen
    assert all(config["tasks"][t]["top_layer"] for t in TASKS)

    loaded = MultiTaskModel.from_pretrained(str(path))
    assert type(loaded.encoder) is BertModel and not loaded.has_adapters
    assert not [n for n, _ in loaded.named_parameters() if "pals_" in n]
    with torch.no_grad():
        for task, batch in _batches(tiny_base, model).items():
            torch.testing.assert_close(loaded(**batch)["logits"], model(**batch)["logits"], msg=task)
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_bundle_and_model_must_agree_on_adapters(bundle, tiny_base, tmp_path):
    path, _ = bundle
    pal_config = PALConfig(init_pal_weights="bert")
    with_adapters = MultiTaskModel.from_base(tiny_base, _tasks(), pal_config, freeze_encoder=True)
    with pytest.raises(ValueError, match="the bundle has no adapters, this model has one adapter per task"):
        with_adapters.load_weights(str(path))
    # A bundle from before the "adapters" field had adapters: it still loads with them.
    old = tmp_path / "old"
    with_adapters.save_pretrained(str(old))
    config = json.loads((old / "hf_pals_config.json").read_text())
    assert config.pop("adapters") is True
    (old / "hf_pals_config.json").write_text(json.dumps(config))
    assert MultiTaskModel.from_pretrained(str(old)).has_adapters
    with pytest.raises(ValueError, match="the bundle has adapters, this model has no adapters"):
        _model(tiny_base, freeze_encoder=True).load_weights(str(old))
    config["adapters"] = "no"
    (old / "hf_pals_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="field 'adapters' must be true or false, got 'no'"):
        MultiTaskModel.from_pretrained(str(old))


@torch.no_grad()
def test_predictor_on_a_bundle_without_adapters(bundle):
    path, model = bundle
    predictor = MultiTaskPredictor.from_pretrained(str(path), batch_size=2)
    texts = [r["sentence1"] for r in ROWS["sst"]]
    predicted = predictor.predict("sst", texts)
    batch = predictor.collator.encode("sst", [{"sentence1": t} for t in texts])
    probs = model(task="sst", **batch)["logits"].softmax(-1)
    assert [p["label"] for p in predicted] == probs.argmax(-1).tolist()
    torch.testing.assert_close(torch.tensor([p["score"] for p in predicted]), probs.max(-1).values)
    pairs = [(r["sentence1"], r["sentence2"]) for r in ROWS["sts"]]
    items = [("sts", pairs[0]), ("sst", texts[0]), ("quora", pairs[1]), ("sts", pairs[1])]
    mixed = predictor.predict_mixed(items)
    for (task, inputs), result in zip(items, mixed):
        (alone,) = predictor.predict(task, [inputs])
        assert result["task"] == task and result["label"] == pytest.approx(alone["label"], abs=1e-5)
        assert result["score"] == pytest.approx(alone["score"], abs=1e-5)


def test_upload_folder_and_card_of_a_bundle_without_adapters(bundle, tmp_path):
    path, model = bundle
    files = hub.bundle_files(str(path))
    assert not [f for f in files if f.startswith("adapters/")]
    assert ("encoder/model.safetensors" in files) != model.freeze_encoder
    card = hub.model_card(str(path), repo_id="user/tiny-top-layer")
    assert card.data.library_name is None and card.data.tags == hub.TAGS_WITHOUT_ADAPTERS
    assert "without adapters" in card.text and "load_adapter" not in card.text
    assert "The heads of `sst`, `quora`, `sts`" in card.text


# -------------------------------------------------------------------------------------------- recipe
@pytest.mark.parametrize("value", ["none"])
def test_recipe_adapter_none_means_no_adapters(tmp_path, value):
    values = _base()
    values["adapter"] = value
    recipe = load_recipe(_write(tmp_path, values))
    assert not recipe.uses_adapters and recipe.adapter is None and recipe.pal_config() is None
    shipped = load_recipe(TINY)
    assert shipped.uses_adapters and shipped.pal_config() == PALConfig()


@pytest.mark.parametrize("value", ["pals", "None", None, False, ["pal"], 3])
def test_a_bad_adapter_value_names_the_file_and_field(tmp_path, value):
    values = _base()
    values["adapter"] = value
    path = _write(tmp_path, values)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    message = str(err.value)
    assert message.startswith(f"{path}: adapter: expected a mapping of PALConfig fields, or none")
    assert repr(value) in message


def test_cli_reports_a_bad_adapter_value(tmp_path, capsys):
    assert main(["train", TINY, "--set", "adapter=nothing", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert TINY in err and "adapter:" in err and "'nothing'" in err


# ----------------------------------------------------------------------------------------------- CLI
def _write_cs224n_split(directory, split: str, datasets) -> None:
    """`datasets` (task -> rows with sentence1, sentence2, label) as CS224N-format files of `split`."""
    header = {
        "sst": ("sentence", "sentiment"),
        "quora": ("sentence1", "sentence2", "is_duplicate"),
        "sts": ("sentence1", "sentence2", "similarity"),
    }
    for task, file in (("sst", f"ids-sst-{split}.csv"), ("quora", f"quora-{split}.csv"), ("sts", f"sts-{split}.csv")):
        lines = ["\t".join(["", "id", *header[task]])]
        for i, row in enumerate(datasets[task]):
            texts = [row["sentence1"]] + ([row["sentence2"]] if task != "sst" else [])
            label = str(row["label"]) if task == "sst" else f"{float(row['label'])}"
            lines.append("\t".join([str(i), f"{task}{split}{i}", *texts, label]))
        (directory / file).write_text("\n".join(lines) + "\n")


def test_tiny_recipe_without_adapters_trains_through_the_cli(tiny_base, tmp_path):
    """The tiny recipe with `adapter: none` and a top layer on every task, on the tiny base and a few
    synthetic rows: train (2 steps), save, reload, evaluate."""
    data = tmp_path / "data"
    data.mkdir()
    rows = _datasets(n=16)
    _write_cs224n_split(data, "train", rows)
    _write_cs224n_split(data, "dev", {t: d.select(range(8)) for t, d in rows.items()})
    out = tmp_path / "run"
    sets = [
        f"base_model={json.dumps(tiny_base)}",
        "adapter=none",
        "tasks.sst.top_layer=true",
        "tasks.quora.top_layer=true",
        "tasks.sts.top_layer=true",
        "max_length=32",
        "training.per_device_train_batch_size=4",
        "training.save_steps=2",
        "eval_batch_size=8",
    ]
    args = ["train", TINY, "--data-dir", str(data), "--output-dir", str(out), "--max-steps", "2"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0

    report = json.loads((out / "eval_results.json").read_text())
    assert set(report) >= {*TASKS, "overall"}
    assert not (out / "adapters").exists() and not (out / "checkpoint-2" / "adapters").exists()
    assert (out / "encoder" / "model.safetensors").is_file()
    loaded = MultiTaskModel.from_pretrained(str(out))
    assert not loaded.has_adapters and all(loaded.heads[t].top_layer is not None for t in TASKS)
    config = loaded.bert.config
    d = config.hidden_size
    heads = (5 * d + 5) + (d + 1) + 3 * _bert_layer_parameters(config)  # sts: cosine, no parameters
    assert report["trainable_parameters"] == _bert_parameters(config) + heads
    evaluate = ["evaluate", str(out), "--data-dir", str(data), "--output", str(tmp_path / "r.json")]
    assert main(evaluate) == 0
    assert set(json.loads((tmp_path / "r.json").read_text())) >= {*TASKS, "overall"}
