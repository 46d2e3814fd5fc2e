"""R-Drop (two dropout passes pulled together): the loss against the paper's formula, its use in the
trainer (weighted tasks only, training only), the recipe section, and a killed run's resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from hf_pals.recipe import RecipeError, load_recipe
from hf_pals.training.r_drop import RDropConfig, r_drop_loss
from test_smart import _batch
from test_smart import _trainer as smart_trainer
from test_trainer import _Kill

REPO = Path(__file__).resolve().parents[1]


def test_classification_loss_is_the_papers_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    labels = torch.tensor([0, 3, 4, 1])
    first = {"logits": a, "loss": F.cross_entropy(a, labels)}
    second = {"logits": b, "loss": F.cross_entropy(b, labels)}
    log_p, log_q = F.log_softmax(a, -1), F.log_softmax(b, -1)
    kl_pq = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")  # KL(p || q)
    kl_qp = F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")
    expected = 0.5 * (first["loss"] + second["loss"]) + 0.7 * 0.5 * (kl_pq + kl_qp)
    torch.testing.assert_close(r_drop_loss(first, second, "classification", 0.7), expected)
    # equal passes: no divergence, the mean of the two (equal) losses
    torch.testing.assert_close(r_drop_loss(first, dict(first), "classification", 0.7), first["loss"])


def test_regression_divergence_is_on_the_label_scale():
    a, b = torch.tensor([1.0, 4.0]), torch.tensor([2.0, 1.0])
    first, second = {"logits": a, "loss": torch.tensor(0.3)}, {"logits": b, "loss": torch.tensor(0.5)}
    expected = 0.4 + 2.0 * 0.5 * (((a - b) / 5.0) ** 2).mean()
    torch.testing.assert_close(r_drop_loss(first, second, "regression", 2.0, label_max=5.0), expected)


def test_config_checks_its_weights():
    assert RDropConfig(weights={"sst": 1}).weight("sst") == 1.0 and RDropConfig().weight("sst") == 0.0
    with pytest.raises(ValueError, match="r_drop.weights must be >= 0"):
        RDropConfig(weights={"sst": -0.1})


def _trainer(tiny_base, output_dir, r_drop=None, callbacks=None):
    """test_smart's trainer (SST and a siamese STS on a tiny base, 4 steps) with R-Drop instead of SMART."""
    trainer = smart_trainer(tiny_base, output_dir, callbacks=callbacks)
    trainer.r_drop = r_drop
    return trainer


def test_trainer_runs_two_passes_on_weighted_tasks_in_training_only(tiny_base, tmp_path):
    trainer = _trainer(tiny_base, tmp_path, r_drop=RDropConfig(weights={"sst": 1.0, "sts": 0.0}))
    model = trainer.model.train()
    sst, sts = _batch(tiny_base, model, "sst"), _batch(tiny_base, model, "sts")
    torch.manual_seed(7)
    first, second = model(**sst), model(**sst)
    assert not torch.equal(first["logits"], second["logits"])  # two dropout draws
    torch.manual_seed(7)
    got = trainer.compute_loss(model, sst)
    torch.testing.assert_close(got, r_drop_loss(first, second, "classification", 1.0))
    assert got.item() != pytest.approx(first["loss"].item())
    got.backward()  # both passes carry gradients into the PALs and the head
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if ".pals_" in n)

    torch.manual_seed(7)
    plain = model(**sts)["loss"]
    torch.manual_seed(7)
    assert torch.equal(trainer.compute_loss(model, sts), plain)  # weight 0: one pass, the plain loss

    model.eval()  # evaluation: one pass, the plain loss
    assert torch.equal(trainer.compute_loss(model, sst), model(**sst)["loss"])


def test_a_killed_run_with_r_drop_resumes_to_the_same_weights(tiny_base, tmp_path):
    config = RDropConfig(weights={"sst": 1.0, "sts": 1.0})
    straight = _trainer(tiny_base, tmp_path / "straight", r_drop=config)
    straight.train()
    expected = {k: v.clone() for k, v in straight.model.state_dict().items()}

    killed = _trainer(tiny_base, tmp_path / "killed", r_drop=config, callbacks=[_Kill(at=3)])
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = _trainer(tiny_base, tmp_path / "killed", r_drop=config)
    resumed.train(resume_from_checkpoint=True)
    got = resumed.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())

    plain = _trainer(tiny_base, tmp_path / "plain")  # and R-Drop did change the training
    plain.train()
    assert not all(torch.equal(plain.model.state_dict()[k], v) for k, v in expected.items())


def _recipe(tmp_path, r_drop) -> str:
    values = yaml.safe_load((REPO / "recipes" / "tiny.yaml").read_text())
    values["r_drop"] = r_drop
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_recipe_section_builds_the_config_and_names_bad_fields(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, {"weights": {"sst": 0.5}}))
    assert isinstance(recipe.r_drop, RDropConfig) and recipe.r_drop.weight("sst") == 0.5
    for bad, message in (
        ({"weights": {"mnli": 1.0}}, "r_drop.weights: task(s) ['mnli'] are not in tasks"),
        ({"weights": {"sst": -1.0}}, "r_drop.weights must be >= 0"),
        ({"alpha": 1.0}, "r_drop"),
    ):
        path = _recipe(tmp_path, bad)
        with pytest.raises(RecipeError) as err:
            load_recipe(path)
        assert path in str(err.value) and message in str(err.value)
