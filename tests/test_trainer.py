"""MultiTaskTrainer on a tiny BERT: routing, per-task logging, learning-rate groups, exact resume."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, TrainerCallback, TrainingArguments

from hf_pals import PALConfig
from hf_pals.modeling import MultiTaskModel
from hf_pals.tasks import cs224n_task
from hf_pals.training import MultiTaskTrainer, NonFiniteLossError

WORDS = "good bad film plot actor great boring fun slow rice cook paris music happy sad".split()


def _datasets(n=24):
    g = torch.Generator().manual_seed(0)

    def sentence():
        return " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (6,), generator=g))

    return {
        "sst": Dataset.from_list([{"sentence1": sentence(), "label": i % 5} for i in range(n)]),
        "quora": Dataset.from_list(
            [{"sentence1": sentence(), "sentence2": sentence(), "label": i % 2} for i in range(n + 8)]
        ),
        "sts": Dataset.from_list(
            [{"sentence1": sentence(), "sentence2": sentence(), "label": float(i % 6) * 0.9} for i in range(n - 8)]
        ),
    }


def _trainer(tiny_base, output_dir, max_steps=6, callbacks=None, learning_rates=None, sampling=None, **args):
    torch.manual_seed(0)
    tasks = {
        "sst": cs224n_task("sst"),
        "quora": cs224n_task("quora"),
        "sts": cs224n_task("sts", pair_encoding="siamese", head="cosine"),
    }
    model = MultiTaskModel.from_base(tiny_base, tasks, PALConfig(init_pal_weights="bert"))
    data = _datasets()
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        save_steps=3,
        logging_steps=3,
        seed=11,
        use_cpu=True,
        **{"report_to": "none", **args},
    )
    return MultiTaskTrainer(
        model,
        training_args,
        train_datasets=data,
        eval_datasets={t: d.select(range(8)) for t, d in data.items()},
        tokenizer=AutoTokenizer.from_pretrained(tiny_base),
        steps_per_epoch=3,
        learning_rates=learning_rates,
        max_length=16,
        callbacks=callbacks,
        sampling=sampling,
    )


class _Kill(TrainerCallback):
    """Stops the run hard after `at` steps, as a SIGKILL would (no clean shutdown)."""

    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt("killed")


def test_train_logs_every_task_and_evaluates(tiny_base, tmp_path):
    trainer = _trainer(tiny_base, tmp_path)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    batches = {t: sum(h.get(f"batches_{t}", 0) for h in logged) for t in ("sst", "quora", "sts")}
    expected = {t: sum(trainer.schedule.task_at(s) == t for s in range(6)) for t in batches}
    assert batches == expected
    metrics = trainer.evaluate()
    assert set(metrics) >= {"eval_sst_accuracy", "eval_quora_accuracy", "eval_sts_pearson", "eval_overall"}
    r = metrics["eval_sts_pearson"]
    overall = (metrics["eval_sst_accuracy"] + metrics["eval_quora_accuracy"] + (r + 1) / 2) / 3
    assert metrics["eval_overall"] == pytest.approx(overall)


def test_learning_rate_groups(tiny_base, tmp_path):
    trainer = _trainer(tiny_base, tmp_path, learning_rates={"encoder": 1e-5, "adapters": 1e-3, "heads": 2e-3})
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    for group in optimizer.param_groups:
        kinds = {trainer.parameter_group(names[id(p)]) for p in group["params"]}
        assert len(kinds) == 1
        assert group["lr"] == {"encoder": 1e-5, "adapters": 1e-3, "heads": 2e-3}[kinds.pop()]


def test_killed_run_resumes_to_the_same_weights(tiny_base, tmp_path):
    straight = _trainer(tiny_base, tmp_path / "straight")
    straight.train()
    expected = {k: v.clone() for k, v in straight.model.state_dict().items()}

    killed = _trainer(tiny_base, tmp_path / "killed", callbacks=[_Kill(at=4)])
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    assert (tmp_path / "killed" / "checkpoint-3" / "heads.safetensors").exists()

    resumed = _trainer(tiny_base, tmp_path / "killed")
    resumed.train(resume_from_checkpoint=True)
    got = resumed.model.state_dict()
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    assert resumed.state.global_step == 6


def test_non_finite_loss_stops_with_task_and_step(tiny_base, tmp_path):
    trainer = _trainer(tiny_base, tmp_path)
    with torch.no_grad():
        trainer.model.heads["sst"].classifier.weight.fill_(math.inf)
        trainer.model.heads["quora"].classifier.weight.fill_(math.inf)
        trainer.model.heads["sts"].task.label_max = math.nan
    with pytest.raises(NonFiniteLossError, match=r"task '(sst|quora|sts)' gave a non-finite loss .* at step 1"):
        trainer.train()


def test_unknown_training_task_is_named(tiny_base, tmp_path):
    trainer = _trainer(tiny_base, tmp_path)
    with pytest.raises(ValueError, match="mnli"):
        MultiTaskTrainer(trainer.model, trainer.args, train_datasets={"mnli": _datasets()["sst"]})


def test_sampling_probabilities_and_task_losses_reach_tensorboard(tiny_base, tmp_path):
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    trainer = _trainer(tiny_base, tmp_path, sampling="round_robin", report_to="tensorboard")
    trainer.train()
    sampling = [h for h in trainer.state.log_history if "sampling_epoch" in h]
    assert [(h["step"], h["sampling_epoch"]) for h in sampling] == [(0, 1), (3, 2)]  # steps_per_epoch=3
    assert all(h[f"sampling_p_{t}"] == pytest.approx(1 / 3) for h in sampling for t in ("sst", "quora", "sts"))
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["batches_sst"] for h in logged] == [1, 1]  # round robin: each task once per 3 steps
    (events,) = tmp_path.glob("runs/*/events.out.tfevents.*")
    tags = accumulator.EventAccumulator(str(events)).Reload().Tags()["scalars"]
    for task in ("sst", "quora", "sts"):
        assert {f"train/loss_{task}", f"train/batches_{task}", f"train/sampling_p_{task}"} <= set(tags)
