"""Growing a trained bundle by a task (the PALs paper's argument: a new task costs one adapter and a head).

On a tiny random BERT: a 2-task bundle (sst, quora) trained and saved with its encoder, grown by sts with
the encoder and the old tasks frozen, trained on sts alone. The old tasks' outputs stay bit-identical and
the grown bundle differs from the old one by sts's files alone; a task left unfrozen trains further; bad
recipes fail with clear errors and leave the bundle's bytes as they were.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoTokenizer, TrainingArguments

from hf_pals import PALConfig
from hf_pals.data.multitask import MultiTaskCollator
from hf_pals.growing import grow_model
from hf_pals.modeling import MultiTaskModel
from hf_pals.tasks import cs224n_task
from hf_pals.training import MultiTaskTrainer

pytestmark = pytest.mark.one_thread

WORDS = "good bad film plot actor great boring fun slow rice cook paris music happy sad".split()
PAL = PALConfig(init_pal_weights="bert", pal_hidden_size=12, pal_num_heads=2)


def _old_tasks():
    return {"sst": cs224n_task("sst"), "quora": cs224n_task("quora")}


def _new_task():
    return cs224n_task("sts", top_layer=True)


def _datasets(n=16):
    g = torch.Generator().manual_seed(0)

    def sentence():
        return " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (5,), generator=g))

    return {
        "sst": Dataset.from_list([{"sentence1": sentence(), "label": i % 5} for i in range(n)]),
        "quora": Dataset.from_list([{"sentence1": sentence(), "sentence2": sentence(), "label": i % 2} for i in range(n)]),
        "sts": Dataset.from_list(
            [{"sentence1": sentence(), "sentence2": sentence(), "label": float(i % 6) * 0.9} for i in range(n)]
        ),
    }


def _train(model, tiny_base, output_dir, tasks, steps=4):
    """A few real optimizer steps of MultiTaskTrainer on `tasks` (AdamW with weight decay)."""
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        weight_decay=0.1,
        save_strategy="no",
        seed=3,
        use_cpu=True,
        report_to="none",
    )
    data = _datasets()
    trainer = MultiTaskTrainer(
        model, args, train_datasets={t: data[t] for t in tasks}, tokenizer=AutoTokenizer.from_pretrained(tiny_base), max_length=16
    )
    trainer.train()
    return trainer


def _logits(model, tiny_base, tasks):
    """Eval-mode logits of each task on fixed inputs."""
    model.eval()
    collator = MultiTaskCollator(AutoTokenizer.from_pretrained(tiny_base), model.tasks, max_length=16)
    data = _datasets(4)
    with torch.no_grad():
        return {t: model(**collator([dict(r, task=t) for r in data[t]]))["logits"] for t in tasks}


def _files(directory) -> dict[str, bytes]:
    """Relative path -> bytes of every file under `directory`."""
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


@pytest.fixture(scope="module")
def bundle(tiny_base, tmp_path_factory) -> str:
    """A trained 2-task bundle (sst, quora) whose encoder was trained too, so it has encoder/."""
    torch.manual_seed(0)
    model = MultiTaskModel.from_base(tiny_base, _old_tasks(), PAL)
    _train(model, tiny_base, tmp_path_factory.mktemp("train_old"), ["sst", "quora"])
    path = tmp_path_factory.mktemp("bundle")
    model.save_pretrained(str(path))
    assert os.path.isfile(path / "encoder" / "model.safetensors")
    return str(path)


def _grow(bundle, tiny_base, freeze):
    torch.manual_seed(1)
    return grow_model(bundle, {**_old_tasks(), "sts": _new_task()}, PAL, freeze=freeze, base_model=tiny_base)


def test_grown_model_keeps_old_tasks_bit_identical_and_saves_only_the_new_task(bundle, tiny_base, tmp_path):
    before = _files(bundle)
    expected = _logits(MultiTaskModel.from_pretrained(bundle), tiny_base, ["sst", "quora"])
    model = _grow(bundle, tiny_base, freeze=["encoder", "sst", "quora"])
    assert list(model.tasks) == ["sst", "quora", "sts"] and model.frozen == ("encoder", "sst", "quora")
    assert not model.freeze_encoder  # the encoder was trained before: it is still saved

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".pals_" in n and ".sts." in n or n.startswith("heads.sts.") for n in trainable)
    assert any(n.startswith("heads.sts.top_layer.") for n in trainable)
    new_before = {n: p.detach().clone() for n, p in model.named_parameters() if n in trainable}

    trainer = _train(model, tiny_base, tmp_path / "train_new", ["sts"])
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters() if p.requires_grad}
    changed = [n for n, p in model.named_parameters() if n in new_before and not torch.equal(p, new_before[n])]
    assert changed, "the new task did not train"

    got = _logits(model, tiny_base, ["sst", "quora"])
    for task in expected:
        assert torch.equal(got[task], expected[task]), task

    grown = tmp_path / "grown"
    model.save_pretrained(str(grown))
    after = _files(grown)
    assert _files(bundle) == before  # the trained bundle was only read
    new_files = set(after) - set(before)
    assert set(before) <= set(after)
    assert new_files and all(f.startswith(os.path.join("adapters", "sts") + os.sep) for f in new_files)
    assert os.path.join("adapters", "sts", "adapter_model.safetensors") in new_files
    for task in ("sst", "quora"):
        name = os.path.join("adapters", task, "adapter_model.safetensors")
        assert after[name] == before[name], name
    encoder = os.path.join("encoder", "model.safetensors")
    assert after[encoder] == before[encoder]
    old_heads, new_heads = load_file(os.path.join(bundle, "heads.safetensors")), load_file(grown / "heads.safetensors")
    assert set(new_heads) - set(old_heads) and all(k.startswith("sts.") for k in set(new_heads) - set(old_heads))
    assert set(old_heads) <= set(new_heads)
    for key, tensor in old_heads.items():
        assert torch.equal(new_heads[key], tensor), key
    assert "sts" in json.loads((grown / "hf_pals_config.json").read_text())["tasks"]

    reloaded = MultiTaskModel.from_pretrained(str(grown))
    again = _logits(reloaded, tiny_base, ["sst", "quora", "sts"])
    new_logits = _logits(model, tiny_base, ["sts"])
    assert all(torch.equal(again[t], expected[t]) for t in expected)
    assert torch.equal(again["sts"], new_logits["sts"])


def test_an_old_task_left_unfrozen_trains_further(bundle, tiny_base, tmp_path):
    model = _grow(bundle, tiny_base, freeze=["encoder", "sst"])
    adapter = {id(p): p.detach().clone() for p in model.adapter_parameters("quora")}
    head = {n: p.detach().clone() for n, p in model.heads["quora"].named_parameters()}
    assert adapter and all(p.requires_grad for p in model.adapter_parameters("quora"))
    assert not any(p.requires_grad for p in model.adapter_parameters("sst"))
    sst_before = _logits(MultiTaskModel.from_pretrained(bundle), tiny_base, ["sst"])["sst"]

    _train(model, tiny_base, tmp_path / "train", ["quora", "sts"])
    assert any(not torch.equal(p, adapter[id(p)]) for p in model.adapter_parameters("quora"))
    assert any(not torch.equal(p, head[n]) for n, p in model.heads["quora"].named_parameters())
    assert torch.equal(_logits(model, tiny_base, ["sst"])["sst"], sst_before)


def test_freeze_unfreeze_and_set_trainable_keep_frozen_parts(bundle, tiny_base):
    model = _grow(bundle, tiny_base, freeze=["sst"])
    encoder = [p for n, p in model.bert.named_parameters() if "pals_" not in n]
    assert encoder and all(p.requires_grad for p in encoder)  # the encoder trains: not frozen
    model._set_trainable()  # set_adapter with every task must not re-enable sst
    assert not any(p.requires_grad for p in model.adapter_parameters("sst"))
    assert not any(p.requires_grad for p in model.heads["sst"].parameters())
    model.freeze([])
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match=r"unknown part\(s\) \['mnli'\].*'encoder', 'sst', 'quora', 'sts'"):
        model.freeze(["encoder", "mnli"])


def test_bad_recipes_fail_clearly_and_leave_the_bundle_untouched(bundle, tiny_base):
    before = _files(bundle)
    with pytest.raises(ValueError, match=r"'other/bert'.*hf_pals_config.json.*base_model_name_or_path") as err:
        grow_model(bundle, _old_tasks(), PAL, base_model="other/bert")
    assert tiny_base in str(err.value)
    with pytest.raises(ValueError, match=r"task 'sst': the recipe has num_labels 3.*has 5"):
        grow_model(bundle, {"sst": cs224n_task("sst", num_labels=3)}, PAL, base_model=tiny_base)
    with pytest.raises(ValueError, match=r"task 'quora': the recipe has pair_encoding 'siamese'"):
        grow_model(bundle, {"quora": cs224n_task("quora", pair_encoding="siamese")}, PAL)
    with pytest.raises(ValueError, match=r"freeze: unknown part\(s\) \['sts'\]"):
        grow_model(bundle, _old_tasks(), PAL, freeze=["encoder", "sts"])
    assert _files(bundle) == before


def test_add_and_remove_task_errors(bundle, tiny_base):
    model = MultiTaskModel.from_pretrained(bundle, is_trainable=True)
    with pytest.raises(ValueError, match=r"task 'sst' already exists"):
        model.add_task(cs224n_task("sst"), PAL)
    with pytest.raises(ValueError, match=r"unknown task 'sts'"):
        model.remove_task("sts")
    model.remove_task("quora")
    with pytest.raises(ValueError, match=r"'sst' is the model's last task"):
        model.remove_task("sst")

    torch.manual_seed(0)
    plain = MultiTaskModel.from_base(tiny_base, {"sst": cs224n_task("sst")}, adapters=False)
    with pytest.raises(ValueError, match=r"no adapters.*'quora'.*pass no pal_config"):
        plain.add_task(cs224n_task("quora"), PAL)
    plain.add_task(cs224n_task("quora", top_layer=True))
    assert set(plain.heads) == {"sst", "quora"} and plain.heads["quora"].top_layer is not None
    plain.freeze(["encoder", "sst"])
    trainable = {n for n, p in plain.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("heads.quora.") for n in trainable)


def test_remove_task_round_trips(bundle, tiny_base, tmp_path):
    model = _grow(bundle, tiny_base, freeze=["encoder", "sst", "quora"])
    model.remove_task("quora")
    assert list(model.tasks) == ["sst", "sts"] and model.frozen == ("encoder", "sst")
    assert "quora" not in model.encoder.peft_config
    expected = _logits(model, tiny_base, ["sst", "sts"])
    model.save_pretrained(str(tmp_path))
    saved = os.listdir(tmp_path / "adapters")
    assert {"sst", "sts"} <= set(saved) and "quora" not in saved
    assert "quora" not in json.loads((tmp_path / "hf_pals_config.json").read_text())["tasks"]
    reloaded = MultiTaskModel.from_pretrained(str(tmp_path))
    got = _logits(reloaded, tiny_base, ["sst", "sts"])
    for task in expected:
        assert torch.equal(got[task], expected[task]), task
    original = _logits(MultiTaskModel.from_pretrained(bundle), tiny_base, ["sst"])
    assert torch.equal(got["sst"], original["sst"])


# ------------------------------------------------------------------ the recipe and CLI (`--init-from`, `freeze`)
def _task_folder(tmp_path, name, rows) -> str:
    from datasets import DatasetDict

    path = tmp_path / f"data_{name}"
    DatasetDict({"train": rows, "validation": rows.select(range(8))}).save_to_disk(str(path))
    return str(path)


def _recipe(tmp_path, base, folders, tasks, name, **extra) -> str:
    import yaml

    fields = {
        "sst": {"kind": "classification", "num_labels": 5, "text_columns": ["sentence1"]},
        "quora": {"kind": "binary", "text_columns": ["sentence1", "sentence2"]},
        "sts": {"kind": "regression", "text_columns": ["sentence1", "sentence2"], "label_max": 5.0},
    }
    values = {
        "base_model": base,
        "tasks": {t: {**fields[t], "data": {"path": folders[t], "test_split": None}} for t in tasks},
        "adapter": {"init_pal_weights": "bert", "pal_hidden_size": 12, "pal_num_heads": 2},
        "max_length": 16,
        "eval_batch_size": 8,
        "training": {"max_steps": 3, "per_device_train_batch_size": 4, "save_strategy": "no", "use_cpu": True, "seed": 0},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_hf_pals_train_init_from_grows_a_trained_run(tiny_base, tmp_path):
    from hf_pals.cli import main

    data = _datasets()
    folders = {t: _task_folder(tmp_path, t, data[t]) for t in data}
    first, grown = tmp_path / "first", tmp_path / "grown"
    old = _recipe(tmp_path, tiny_base, folders, ["sst", "quora"], "old")
    assert main(["train", old, "--output-dir", str(first)]) == 0
    before = _files(first)
    new = _recipe(tmp_path, tiny_base, folders, ["sst", "quora", "sts"], "new", freeze=["encoder", "sst", "quora"])
    assert main(["train", new, "--output-dir", str(grown), "--init-from", str(first)]) == 0
    assert _files(first) == before
    after = _files(grown)
    for name in ("encoder/model.safetensors", "adapters/sst/adapter_model.safetensors", "adapters/quora/adapter_model.safetensors"):
        assert after[name] == before[name], name
    assert "adapters/sts/adapter_model.safetensors" in after
    old_report = json.loads((first / "eval_results.json").read_text())
    report = json.loads((grown / "eval_results.json").read_text())
    assert report["sst"] == old_report["sst"] and report["quora"] == old_report["quora"]
    assert set(report["task_steps"]) == {"sts"}  # frozen tasks are evaluated, not trained


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"freeze": ["encoder"]}, "freeze ['encoder'] needs init_from"),
        ({"init_from": "m", "freeze": "encoder"}, "freeze must be a list"),
        ({"init_from": "m", "freeze": ["encoder", "sst"]}, "freezes every task of the recipe"),
        ({"init_from": "m", "freeze_encoder": True}, "use freeze: [encoder]"),
        ({"init_from": "runs/x", "output_dir": "runs/x"}, "would overwrite the bundle"),
    ],
)
def test_recipe_growing_fields_are_checked(tmp_path, extra, message):
    from hf_pals.recipe import RecipeError, load_recipe

    path = _recipe(tmp_path, "tiny", {"sst": str(tmp_path)}, ["sst"], "recipe", **extra)
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        load_recipe(path)
    assert path in str(err.value)
