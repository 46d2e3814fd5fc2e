"""Joint multi-task steps on a tiny BERT: batches, combined losses, gradients, exact resume, recipes, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from datasets import Dataset
from transformers import AutoTokenizer, TrainingArguments

from hf_pals import PALConfig
from hf_pals.cli import main
from hf_pals.modeling import MultiTaskModel
from hf_pals.recipe import RecipeError, load_recipe
from hf_pals.tasks import cs224n_task
from hf_pals.training import MultiTaskTrainer
from hf_pals.training.gradient_surgery import PCGRAD_KEY, count_conflicts, pcgrad
from hf_pals.training.joint import JOINT_KEY, JointBatchSampler, JointCollator, MultitaskConfig
from test_trainer import _Kill

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
WORDS = "good bad film plot actor great boring fun slow rice cook paris music happy sad".split()
TASKS = ("sst", "quora", "sts")


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


def _trainer(tiny_base, output_dir, multitask, max_steps=6, callbacks=None, **args):
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
        learning_rates={"loss_balancing": 0.05},
        max_length=16,
        callbacks=callbacks,
        multitask={"step_mode": "joint", "memory_size": 4, **multitask},
    )


# ------------------------------------------------------------------------------------------- batches
def test_joint_batch_sampler_gives_every_task_in_every_micro_batch():
    sampler = JointBatchSampler({"a": 5, "b": 7}, {"a": 0, "b": 5}, batch_size=3, num_steps=4, num_processes=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 8  # 4 steps x 2 processes
    assert sampler.batch_size == 6  # what Accelerate's BatchSamplerShard compares each batch with
    for batch in batches:
        assert len(batch) == 6
        assert all(0 <= i < 5 for i in batch[:3]) and all(5 <= i < 12 for i in batch[3:])
    a_rows = [i for batch in batches for i in batch[:3]]
    assert sorted(a_rows[:5]) == list(range(5))  # a full pass over task a before any row repeats
    assert batches == list(JointBatchSampler({"a": 5, "b": 7}, {"a": 0, "b": 5}, 3, 4, num_processes=2))
    other_seed = list(JointBatchSampler({"a": 5, "b": 7}, {"a": 0, "b": 5}, 3, 4, num_processes=2, seed=1))
    assert batches != other_seed


def test_joint_collator_groups_rows_by_task():
    collator = JointCollator(lambda rows: [r["x"] for r in rows])
    rows = [{"task": "a", "x": 1}, {"task": "a", "x": 2}, {"task": "b", "x": 3}]
    assert collator(rows) == {JOINT_KEY: {"a": [1, 2], "b": [3]}}


# ---------------------------------------------------------------------------------------- the loss
@pytest.mark.parametrize(
    "balancing, combine", [("sum", lambda ls: sum(ls)), ("squares", lambda ls: sum(l**2 for l in ls))]
)
def test_joint_loss_combines_the_single_task_losses(tiny_base, tmp_path, balancing, combine):
    trainer = _trainer(tiny_base, tmp_path, {"loss_balancing": balancing})
    batch = next(iter(trainer.get_train_dataloader()))
    assert list(batch[JOINT_KEY]) == list(TASKS)
    assert [len(batch[JOINT_KEY][t]["labels"]) for t in TASKS] == [4, 4, 4]  # per_device_train_batch_size each
    model = trainer.model.eval()
    joint = trainer.compute_loss(model, batch)
    singles = [trainer.compute_loss(model, batch[JOINT_KEY][t]) for t in TASKS]
    assert joint.item() == pytest.approx(combine(singles).item(), rel=1e-6)


@pytest.mark.parametrize("surgery", ["none", "pcgrad"])
def test_joint_step_gradients(tiny_base, tmp_path, surgery):
    """No surgery: the gradient of the summed losses. PCGrad: `pcgrad` on the parameters two or more tasks
    share (the encoder), each task's own gradient on its adapter and head."""
    trainer = _trainer(tiny_base, tmp_path, {"gradient_surgery": surgery})
    model = trainer.model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    torch.manual_seed(1)  # the same dropout masks in both computations
    per_task = [torch.autograd.grad(model(**batch[JOINT_KEY][t])["loss"], params, allow_unused=True) for t in TASKS]
    torch.manual_seed(1)
    model.zero_grad()
    trainer.training_step(model, batch)
    reached = [sum(g[k] is not None for g in per_task) for k in range(len(params))]
    shared = [k for k in range(len(params)) if reached[k] >= 2]
    assert shared and all("pals_" not in named[k][0] and "heads." not in named[k][0] for k in shared)
    assert any("pals_" in named[k][0] for k in range(len(params)) if reached[k] == 1)
    for k, p in enumerate(params):
        if reached[k] == 0:
            assert p.grad is None, named[k][0]
        elif reached[k] == 1 or surgery == "none":
            expected = sum(g[k] for g in per_task if g[k] is not None)
            assert torch.allclose(p.grad, expected, atol=1e-6, rtol=1e-5), named[k][0]
    if surgery == "pcgrad":
        def flat(g):
            return torch.cat([(g[k] if g[k] is not None else torch.zeros_like(params[k])).reshape(-1) for k in shared])

        grads = torch.stack([flat(g) for g in per_task])
        expected = pcgrad(grads, np.random.default_rng([11, PCGRAD_KEY, 0]))
        got = torch.cat([params[k].grad.reshape(-1) for k in shared])
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
        assert count_conflicts(grads) >= 1 and not torch.allclose(got, grads.sum(0))  # a projection happened


# -------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize(
    "balancing, surgery",
    [
        ("sum", "none"),
        ("squares", "pcgrad"),
        ("dwa", "agem"),
        ("uncertainty", "pcgrad"),
        ("gradnorm", "none"),
        ("gradnorm", "agem"),
    ],
)
def test_joint_training_runs_and_logs(tiny_base, tmp_path, balancing, surgery):
    trainer = _trainer(tiny_base, tmp_path, {"loss_balancing": balancing, "gradient_surgery": surgery})
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2 and all(np.isfinite(h["loss"]) for h in logged)
    assert all(h[f"batches_{t}"] == 3 for h in logged for t in TASKS)  # every task in every step
    assert not any("sampling_epoch" in h for h in trainer.state.log_history)
    if balancing != "squares":
        assert all(f"loss_weight_{t}" in h for h in logged for t in TASKS)
    assert all(("grad_conflicts" in h) == (surgery != "none") for h in logged)
    assert trainer.task_steps() == {t: 6 for t in TASKS}
    balancer = trainer.joint.balancer
    learnable = [p for p in balancer.parameters()]
    if learnable:  # in the optimizer, and trained
        assert trainer.optimizer.param_groups[-1]["params"] == learnable
        assert trainer.optimizer.param_groups[-1]["initial_lr"] == 0.05  # learning_rates.loss_balancing
        assert trainer.optimizer.param_groups[-1]["weight_decay"] == 0.0
    if balancing == "uncertainty":
        assert not torch.equal(balancer.log_vars, torch.zeros(3))
    if balancing == "gradnorm":
        balancer.start_step()  # renormalised before each step, so after the last update too
        assert balancer.weights.sum().item() == pytest.approx(3.0, rel=1e-4)
        assert not torch.allclose(balancer.weights, torch.ones(3))
    if balancing == "dwa":
        assert not torch.isnan(balancer.history).any()
    assert (tmp_path / "checkpoint-3" / "joint_state.safetensors").exists() == bool(balancer.state_dict())


@pytest.mark.parametrize(
    "balancing, surgery, accumulation",
    [("uncertainty", "pcgrad", 1), ("dwa", "agem", 2), ("gradnorm", "none", 1)],
)
def test_joint_killed_run_resumes_to_the_same_weights(tiny_base, tmp_path, balancing, surgery, accumulation):
    multitask = {"loss_balancing": balancing, "gradient_surgery": surgery}
    straight = _trainer(tiny_base, tmp_path / "straight", multitask, gradient_accumulation_steps=accumulation)
    straight.train()
    expected = {k: v.clone() for k, v in straight.model.state_dict().items()}
    expected_balancer = {k: v.clone() for k, v in straight.joint.balancer.state_dict().items()}

    killed = _trainer(
        tiny_base, tmp_path / "killed", multitask, callbacks=[_Kill(at=4)], gradient_accumulation_steps=accumulation
    )
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    assert (tmp_path / "killed" / "checkpoint-3" / "joint_state.safetensors").exists()

    resumed = _trainer(tiny_base, tmp_path / "killed", multitask, gradient_accumulation_steps=accumulation)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    got = resumed.model.state_dict()
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    for name, value in resumed.joint.balancer.state_dict().items():
        assert torch.equal(value.nan_to_num(), expected_balancer[name].nan_to_num()), name


# -------------------------------------------------------------------------------------------- recipes
def _recipe(tmp_path, multitask, **top):
    values = yaml.safe_load(TINY.read_text())
    values.update(top)
    if multitask is not None:
        values["multitask"] = multitask
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize(
    "multitask, top, message",
    [
        ({"step_mode": "both"}, {}, "multitask.step_mode must be one of"),
        ({"step_mode": "joint", "loss_balancing": "max"}, {}, "multitask.loss_balancing must be one of"),
        ({"loss_balancing": "dwa"}, {}, "multitask.loss_balancing: 'dwa' needs multitask.step_mode: joint"),
        ({"gradient_surgery": "pcgrad"}, {}, "multitask.gradient_surgery: 'pcgrad' needs multitask.step_mode: joint"),
        ({"step_mode": "joint", "gradient_surgery": "gem"}, {}, "multitask.gradient_surgery must be one of"),
        ({"step_mode": "joint", "dwa_temperature": 0}, {}, "multitask.dwa_temperature"),
        ({"step_mode": "joint", "dwa_window": 0}, {}, "multitask.dwa_window"),
        ({"step_mode": "joint", "memory_size": 1.5}, {}, "multitask.memory_size"),
        ({"step_mode": "joint", "uncertainty_factors": "mine"}, {}, "multitask.uncertainty_factors"),
        ({"step_mode": "joint", "gradnorm_alpha": -1}, {}, "multitask.gradnorm_alpha"),
        ({"stepmode": "joint"}, {}, r"multitask: unknown field\(s\) \['stepmode'\]"),
        (
            {"step_mode": "joint", "loss_balancing": "gradnorm"},
            {"freeze_encoder": True},
            "multitask.loss_balancing: gradnorm",
        ),
        (None, {"learning_rates": {"balancing": 0.1}}, r"unknown group\(s\) \['balancing'\]"),
    ],
)
def test_recipe_multitask_errors_name_the_field(tmp_path, multitask, top, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(_recipe(tmp_path, multitask, **top))


def test_recipe_multitask_section(tmp_path):
    assert load_recipe(str(TINY)).multitask == MultitaskConfig()  # absent: one task per step
    recipe = load_recipe(
        _recipe(
            tmp_path, {"step_mode": "joint", "loss_balancing": "uncertainty"}, learning_rates={"loss_balancing": 0.01}
        ),
        ["multitask.gradient_surgery=agem", "multitask.memory_size=16"],
    )
    assert recipe.multitask == MultitaskConfig(
        step_mode="joint", loss_balancing="uncertainty", gradient_surgery="agem", memory_size=16
    )


def test_cli_trains_a_joint_pcgrad_recipe(tmp_path, tiny_base, data_dir):
    out = tmp_path / "run"
    sets = {
        "base_model": tiny_base,
        "multitask.step_mode": "joint",
        "multitask.gradient_surgery": "pcgrad",
        "multitask.loss_balancing": "dwa",
        "training.max_steps": 2,
        "training.save_steps": 2,
        "training.logging_steps": 1,
        "data.max_train_examples": "{sst: 16, quora: 16, sts: 16}",
        "data.max_eval_examples": "{sst: 16, quora: 16, sts: 16}",
    }
    argv = ["train", str(TINY), "--data-dir", str(data_dir), "--output-dir", str(out)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    report = json.loads((out / "eval_results.json").read_text())
    assert report["task_steps"] == {"sst": 2, "quora": 2, "sts": 2}
    assert set(report) >= {"sst", "quora", "sts", "overall"}
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    logged = [h for h in state["log_history"] if "loss" in h]
    assert all("grad_conflicts" in h and "loss_weight_sts" in h for h in logged)
    assert (out / "checkpoint-2" / "joint_state.safetensors").exists()


# ------------------------------------------------------------------------------------------------ DDP
def _run(cmd, env, timeout):
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"accelerate launch hung for {timeout} s:\n{output[-3000:]}")
    return proc.returncode, output


@pytest.mark.slow
def test_two_processes_joint_pcgrad_end_with_the_same_weights(tmp_path, tiny_base, data_dir):
    out = tmp_path / "run"
    sets = {
        "base_model": tiny_base,
        "multitask.step_mode": "joint",
        "multitask.gradient_surgery": "pcgrad",
        "multitask.loss_balancing": "uncertainty",
        "learning_rates.loss_balancing": 0.1,
        "training.max_steps": 3,
        "training.per_device_train_batch_size": 4,
        "training.save_steps": 3,
        "training.logging_steps": 1,
        "data.max_train_examples": "{sst: 32, quora: 32, sts: 32}",
        "data.max_eval_examples": "{sst: 8, quora: 8, sts: 8}",
    }
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch"]
    cmd += ["--config_file", str(REPO / "recipes" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", "0"]
    cmd += ["-m", "hf_pals.cli", "train", str(TINY), "--data-dir", str(data_dir), "--output-dir", str(out)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "HF_PALS_TASK_LOG": "1", "OMP_NUM_THREADS": "1"}
    code, output = _run(cmd, env, timeout=540)
    assert code == 0, output[-3000:]

    logs = [[json.loads(line) for line in (out / f"task_log.rank{k}.jsonl").read_text().splitlines()] for k in (0, 1)]
    batches = [[r for r in log if "task" in r] for log in logs]
    assert [len(b) for b in batches] == [9, 9]  # 3 steps x 3 tasks on each rank
    for first, second in zip(*batches):
        assert (first["step"], first["task"]) == (second["step"], second["task"])
        assert first["batch"] != second["batch"]  # each rank trains on its own examples
    final = [log[-1] for log in logs]
    assert final[0]["step"] == final[1]["step"] == 3
    assert final[0]["weights"] == final[1]["weights"]
    assert (out / "checkpoint-3" / "joint_state.safetensors").exists()
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert all("grad_conflicts" in h for h in state["log_history"] if "loss" in h)
