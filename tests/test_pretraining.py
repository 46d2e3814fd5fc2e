"""Further MLM pretraining: recipe checks, the tasks' text, the masking collator, the job, and a
multi-task run on the pretrained encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from hf_pals.cli import main
from hf_pals.pretraining import (
    INFO_NAME,
    load_pretrain_recipe,
    masked_lm_loss,
    mlm_collator,
    mlm_optimizer,
    pretrain,
    task_sentences,
    tokenize_sentences,
)
from hf_pals.recipe import RecipeError

REPO = Path(__file__).resolve().parents[1]
MLM_RECIPE = REPO / "recipes" / "pretraining" / "cs224n_mlm.yaml"


def _write(tmp_path, values, name="mlm.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _shipped() -> dict:
    return yaml.safe_load(MLM_RECIPE.read_text())


# ------------------------------------------------------------------------------------------- recipe
def test_shipped_pretraining_recipe_parses():
    recipe = load_pretrain_recipe(str(MLM_RECIPE))
    assert recipe.mlm_probability == 0.15
    assert recipe.data.tasks == ["sst", "quora", "sts"]
    assert recipe.training_arguments().remove_unused_columns is False


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("base_model"), "missing required field 'base_model'"),
        (lambda r: r.update(epochs=3), "unknown field(s) ['epochs']"),
        (lambda r: r["data"].update(tasks=["mnli"]), "data.tasks: unknown task(s) ['mnli']"),
        (lambda r: r["data"].update(colour="red"), "data: unknown field(s) ['colour']"),
        (lambda r: r["data"].update(max_sentences=0), "data.max_sentences must be"),
        (lambda r: r["data"].update(eval_sentences=-1), "data.eval_sentences must be"),
        (lambda r: r["data"].update(on_bad_rows="ignore"), "data.on_bad_rows must be"),
        (lambda r: r.update(mlm_probability=1.5), "mlm_probability must be"),
        (lambda r: r.update(max_length=0), "max_length must be"),
        (lambda r: r.update(head_warmup_steps=-2), "head_warmup_steps must be"),
        (lambda r: r.update(head_learning_rate=0), "head_learning_rate must be"),
        (lambda r: r["training"].update(learning_rat=1.0), "training: unknown TrainingArguments field(s) ['learning_rat']"),
    ],
)
def test_bad_pretraining_recipes_name_file_and_field(tmp_path, mutate, message):
    values = _shipped()
    mutate(values)
    path = _write(tmp_path, values)
    with pytest.raises(RecipeError) as err:
        load_pretrain_recipe(path)
    assert path in str(err.value) and message in str(err.value)


def test_cli_reports_a_bad_pretraining_recipe(tmp_path, capsys):
    values = _shipped()
    values["mlm_probabilty"] = 0.2
    path = _write(tmp_path, values)
    assert main(["pretrain", path]) == 2
    err = capsys.readouterr().err
    assert path in err and "mlm_probabilty" in err


def test_overrides_apply(tmp_path):
    recipe = load_pretrain_recipe(str(MLM_RECIPE), ["mlm_probability=0.3", "data.tasks=[sts]", 'output_dir="/tmp/x"'])
    assert recipe.mlm_probability == 0.3 and recipe.data.tasks == ["sts"] and recipe.output_dir == "/tmp/x"


# --------------------------------------------------------------------------------------------- text
def _write_cs224n(directory: Path, split: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / f"ids-sst-{split}.csv").write_text(
        "\tid\tsentence\tsentiment\n0\ta\tA fine film .\t3\n1\tb\t A  fine film . \t4\n2\tc\tHow do I cook rice?\t2\n"
    )
    (directory / f"quora-{split}.csv").write_text(
        "\tid\tsentence1\tsentence2\tis_duplicate\n"
        "0\td\tHow do I cook rice?\tHow to cook rice?\t1.0\n1\te\tHow to cook rice?\tWhat is rice?\t0.0\n"
    )
    (directory / f"sts-{split}.csv").write_text(
        "\tid\tsentence1\tsentence2\tsimilarity\n0\tf\tA man sings.\tA fine film .\t0.5\n"
    )


def test_task_sentences_takes_both_sides_of_pairs_once_each(tmp_path):
    _write_cs224n(tmp_path, "train")
    sentences = task_sentences(str(tmp_path), ["sst", "quora", "sts"])
    assert sentences == ["A fine film .", "How do I cook rice?", "How to cook rice?", "What is rice?", "A man sings."]
    assert task_sentences(str(tmp_path), ["sts"]) == ["A man sings.", "A fine film ."]


# ------------------------------------------------------------------------------------------ masking
@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def test_collator_masks_15_percent_of_non_special_tokens(tokenizer):
    words = "the film was a good and bad story about rice music people who cook".split()
    g = torch.Generator().manual_seed(0)
    sentences = [" ".join(words[i] for i in torch.randint(len(words), (int(n),), generator=g)) for n in torch.randint(3, 30, (600,), generator=g)]
    rows = tokenize_sentences(sentences, tokenizer, max_length=32)
    collator = mlm_collator(tokenizer, 0.15, seed=1)
    batch = collator([rows[i] for i in range(len(rows))])
    original = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(rows[i]["input_ids"]) for i in range(len(rows))], batch_first=True, padding_value=tokenizer.pad_token_id
    )
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    chosen = batch["labels"] != -100
    assert not (chosen & special).any()  # [CLS], [SEP] and padding are never chosen
    assert torch.equal(batch["labels"][chosen], original[chosen])  # labels: the original token where chosen
    assert (batch["labels"][~chosen] == -100).all()
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])  # everything else untouched
    share = chosen.sum().item() / (~special).sum().item()
    assert share == pytest.approx(0.15, abs=0.01)  # ~11k non-special tokens: sd 0.0034
    masked = (batch["input_ids"][chosen] == tokenizer.mask_token_id).float().mean().item()
    kept = (batch["input_ids"][chosen] == original[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.04) and kept == pytest.approx(0.1, abs=0.04)


# ---------------------------------------------------------------------------------------------- job
def _tiny_recipe(tmp_path, tiny_base, data_dir, **changes) -> str:
    values = _shipped()
    values.update(base_model=tiny_base, output_dir=str(tmp_path / "mlm"), head_warmup_steps=0, max_length=32)
    values["data"].update(dir=str(data_dir), max_sentences=96, eval_sentences=48)
    values["training"] = dict(
        max_steps=12, per_device_train_batch_size=8, learning_rate=5e-3, save_strategy="no", logging_steps=4, seed=0
    )
    values.update(changes)
    return _write(tmp_path, values)


def test_mlm_loss_falls_on_the_tasks_text_and_the_encoder_saves_as_a_bert_model(tmp_path, tiny_base, data_dir):
    from safetensors.torch import load_file
    from transformers import AutoModel, BertModel

    info = pretrain(load_pretrain_recipe(_tiny_recipe(tmp_path, tiny_base, data_dir)))
    assert info["global_step"] == 12 and info["train_sentences"] == 96 and info["eval_sentences"] == 48
    assert info["eval_mlm_loss_after"] < info["eval_mlm_loss_before"] - 0.3  # held-out dev sentences
    assert info["new_head_parameters"] and all(k.startswith("cls.") for k in info["new_head_parameters"])
    out = tmp_path / "mlm"
    assert json.loads((out / INFO_NAME).read_text())["global_step"] == 12
    encoder, loading = AutoModel.from_pretrained(out, output_loading_info=True)
    assert type(encoder) is BertModel and not loading["missing_keys"] and not loading["unexpected_keys"]
    assert (out / "tokenizer_config.json").exists()
    base = load_file(str(Path(tiny_base) / "model.safetensors"))
    saved = load_file(str(out / "model.safetensors"))
    assert torch.equal(saved["pooler.dense.weight"], base["pooler.dense.weight"])  # the base's pooler, kept
    assert not torch.equal(saved["encoder.layer.0.attention.self.query.weight"], base["encoder.layer.0.attention.self.query.weight"])


def test_head_warmup_leaves_the_encoder_untouched(tmp_path, tiny_base, data_dir):
    from safetensors.torch import load_file

    path = _tiny_recipe(tmp_path, tiny_base, data_dir, head_warmup_steps=5, head_learning_rate=1e-2)
    recipe = load_pretrain_recipe(path, ["training.max_steps=5", "data.eval_sentences=0", "training.weight_decay=0.1"])
    assert recipe.training["learning_rate"] == 5e-3
    info = pretrain(recipe)
    assert info["global_step"] == 5 and "eval_mlm_loss_before" not in info and info["head_learning_rate"] == 1e-2
    base = load_file(str(Path(tiny_base) / "model.safetensors"))
    saved = load_file(str(tmp_path / "mlm" / "model.safetensors"))
    assert set(saved) <= set(base)
    for name, tensor in saved.items():
        assert torch.equal(tensor, base[name]), name


def test_masked_lm_loss_is_repeatable(tokenizer):
    from transformers import BertForMaskedLM

    from conftest import tiny_bert_config

    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_bert_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=64))
    rows = tokenize_sentences(["a fine film .", "how do i cook rice ?"] * 20, tokenizer, max_length=16)
    first = masked_lm_loss(model, rows, tokenizer, batch_size=7, seed=3)
    assert first == masked_lm_loss(model, rows, tokenizer, batch_size=7, seed=3)
    assert first == pytest.approx(torch.log(torch.tensor(float(tokenizer.vocab_size))).item(), rel=0.1)


@pytest.mark.slow
def test_pretrained_minilm_is_the_base_of_a_multitask_run(tmp_path, data_dir, minilm_path):
    """The real MiniLM (no MLM head in its checkpoint): 3 MLM steps on 64 sentences, then the tiny
    multi-task recipe on the result; the bundle records the pretrained directory as its base."""
    from transformers import AutoModel, BertModel

    from hf_pals.modeling import MultiTaskModel

    mlm_dir = tmp_path / "mlm"
    args = ["pretrain", str(MLM_RECIPE), "--data-dir", str(data_dir), "--output-dir", str(mlm_dir)]
    sets = ["data.max_sentences=64", "data.eval_sentences=8", "head_warmup_steps=1", "max_length=32"]
    sets += ["training={max_steps: 3, per_device_train_batch_size: 8, save_strategy: 'no', seed: 0}"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    info = json.loads((mlm_dir / INFO_NAME).read_text())
    assert info["global_step"] == 3 and info["train_sentences"] == 64
    assert any(k.startswith("cls.predictions.transform.") for k in info["new_head_parameters"])
    encoder, loading = AutoModel.from_pretrained(mlm_dir, output_loading_info=True)
    assert type(encoder) is BertModel and not loading["missing_keys"]
    original = AutoModel.from_pretrained(minilm_path)
    assert not torch.equal(encoder.encoder.layer[0].output.dense.weight, original.encoder.layer[0].output.dense.weight)

    bundle = tmp_path / "bundle"
    train = ["train", str(REPO / "recipes" / "tiny.yaml"), "--data-dir", str(data_dir), "--output-dir", str(bundle)]
    train += ["--max-steps", "2", "--set", f"base_model={json.dumps(str(mlm_dir))}", "--set", "training.save_strategy='no'"]
    train += ["--set", "training.per_device_train_batch_size=4", "--set", "data.max_eval_examples={sst: 8, quora: 8, sts: 8}"]
    assert main(train) == 0
    config = json.loads((bundle / "hf_pals_config.json").read_text())
    assert config["base_model_name_or_path"] == str(mlm_dir)
    assert "overall" in json.loads((bundle / "eval_results.json").read_text())
    model = MultiTaskModel.from_pretrained(str(bundle))
    assert model.base_model_name_or_path == str(mlm_dir)


def test_the_head_gets_its_own_learning_rate(tmp_path, tokenizer):
    from transformers import BertForMaskedLM, Trainer, TrainingArguments

    from conftest import tiny_bert_config

    model = BertForMaskedLM(tiny_bert_config(vocab_size=tokenizer.vocab_size))
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=5e-5, weight_decay=0.01, report_to="none", use_cpu=True)
    optimizer = mlm_optimizer(Trainer(model=model, args=args), head_learning_rate=1e-3)
    lr = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert len(lr) == sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    for name, param in model.named_parameters():
        assert lr[id(param)] == (1e-3 if name.startswith("cls.") else 5e-5), name
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(model.cls.predictions.transform.dense.weight)] == 0.01
    assert decay[id(model.cls.predictions.bias)] == 0.0
