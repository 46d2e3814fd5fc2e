"""SMART (smoothness-inducing adversarial regularisation): R_s's properties, and its use in the trainer."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import AutoTokenizer, TrainingArguments

from hf_pals import PALConfig
from hf_pals.data.multitask import MultiTaskCollator
from hf_pals.modeling import MultiTaskModel
from hf_pals.tasks import cs224n_task
from hf_pals.training import MultiTaskTrainer
from hf_pals.training.smart import SMARTConfig, smart_penalty, smoothness_regularizer, symmetric_divergence
from test_trainer import _Kill

KINDS = ["classification", "binary", "regression"]
BIG = dict(epsilon=0.1, step_size=0.1, noise_var=0.01, steps=1)


class _Toy(nn.Module):
    """A small smooth function of a batch of token embeddings [B, L, 4] -> outputs of each kind."""

    def __init__(self, kind):
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3 if kind == "classification" else 1))

    def forward(self, embeds):
        out = self.net(embeds).mean(1) * 3.0
        return out if self.kind == "classification" else out.squeeze(-1)


def _embeds(seed=0):
    return torch.randn(5, 7, 4, generator=torch.Generator().manual_seed(seed))


def _regularizer(model, config, embeds=None, seed=3, **kwargs):
    embeds = _embeds() if embeds is None else embeds
    clean = model(embeds)
    generator = torch.Generator().manual_seed(seed)
    return smoothness_regularizer(model, embeds, clean, model.kind, config, generator=generator, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_for_a_model_that_ignores_its_input(kind):
    constant = nn.Parameter(torch.randn(3 if kind == "classification" else 1))

    def ignores(embeds):
        out = constant.expand(embeds.shape[0], -1)
        return out if kind == "classification" else out.squeeze(-1)

    ignores.kind = kind
    r_s = _regularizer(ignores, SMARTConfig(**BIG))
    assert r_s.item() == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_positive_for_a_model_that_reads_its_input(kind):
    assert _regularizer(_Toy(kind), SMARTConfig(**BIG)).item() > 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_ascent_step_increases_the_divergence_over_the_random_start(kind):
    model = _Toy(kind)
    random_start = _regularizer(model, SMARTConfig(**{**BIG, "steps": 0}))
    one_step = _regularizer(model, SMARTConfig(**BIG))
    two_steps = _regularizer(model, SMARTConfig(**{**BIG, "steps": 2}))
    assert one_step.item() > 10 * random_start.item()
    assert two_steps.item() >= 0.9 * one_step.item()


def test_perturbation_stays_in_the_epsilon_ball_and_off_padding():
    seen = []

    def model(embeds):
        seen.append(embeds.detach().clone())
        return _Toy("regression")(embeds)

    model.kind = "regression"
    embeds = _embeds()
    mask = torch.ones(5, 7)
    mask[:, 5:] = 0
    _regularizer(model, SMARTConfig(**BIG), embeds=embeds, mask=mask)
    for perturbed in seen[1:]:
        delta = perturbed - embeds
        assert delta.abs().max() <= BIG["epsilon"] + 1e-7
        assert delta[:, 5:].abs().max() == 0.0
        assert delta.abs().max() > 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_flow_to_the_parameters(kind):
    model = _Toy(kind)
    _regularizer(model, SMARTConfig(**BIG)).backward()
    # a regression output's bias cancels in f(x̃) - f(x): it alone has no gradient
    params = [p for n, p in model.named_parameters() if not (kind == "regression" and n == "net.2.bias")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_symmetric_divergence_is_symmetric_zero_on_equal_and_matches_kl():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    d = symmetric_divergence("classification", a, b)
    assert d.item() == pytest.approx(symmetric_divergence("classification", b, a).item())
    assert symmetric_divergence("classification", a, a).item() == 0.0
    p, q = a.log_softmax(-1), b.log_softmax(-1)
    kl = lambda x, y: (x.exp() * (x - y)).sum(-1).mean()  # noqa: E731
    assert d.item() == pytest.approx((kl(p, q) + kl(q, p)).item(), rel=1e-5)
    x, y = a[:, 0], b[:, 0]
    two_class = symmetric_divergence("classification", torch.stack([x, 0 * x], -1), torch.stack([y, 0 * y], -1))
    assert symmetric_divergence("binary", x, y).item() == pytest.approx(two_class.item(), rel=1e-5)
    assert symmetric_divergence("regression", x * 5, y * 5, label_max=5.0).item() == pytest.approx(
        ((x - y) ** 2).mean().item(), rel=1e-5
    )


def test_config_checks_its_values():
    assert SMARTConfig(weights={"sst": 0.5}).weight("quora") == 0.0
    with pytest.raises(ValueError, match="weights"):
        SMARTConfig(weights={"sst": -1})
    with pytest.raises(ValueError, match="steps"):
        SMARTConfig(steps=1.5)


# -------------------------------------------------------------------------------- MultiTaskModel
ROWS = {
    "sst": [{"sentence1": "a gripping , funny film", "label": 4}, {"sentence1": "dull and slow", "label": 0}],
    "sts": [
        {"sentence1": "a man plays a guitar .", "sentence2": "a man is playing guitar .", "label": 4.6},
        {"sentence1": "a cat sleeps .", "sentence2": "stocks fell today .", "label": 0.2},
    ],
}


def _model(tiny_base):
    torch.manual_seed(0)
    tasks = {"sst": cs224n_task("sst"), "sts": cs224n_task("sts", pair_encoding="siamese", head="linear_cosine")}
    return MultiTaskModel.from_base(tiny_base, tasks, PALConfig(init_pal_weights="bert"))


def _batch(tiny_base, model, task):
    collator = MultiTaskCollator(AutoTokenizer.from_pretrained(tiny_base), model.tasks, max_length=32)
    return collator([dict(r, task=task) for r in ROWS[task]])


@pytest.mark.parametrize("task", ["sst", "sts"])
def test_penalty_on_a_multitask_model_replays_dropout(tiny_base, task):
    from hf_pals.training.smart import capture_rng_state

    model = _model(tiny_base).train()  # dropout on
    batch = _batch(tiny_base, model, task)
    state = capture_rng_state()
    logits = model(**batch)["logits"]
    still = SMARTConfig(epsilon=0.0, noise_var=0.0)
    assert smart_penalty(model, batch, logits, still, rng_state=state).item() == 0.0  # same masks, no perturbation
    penalty = smart_penalty(model, batch, logits, SMARTConfig(**BIG), rng_state=state)
    assert penalty.item() > 0.0
    penalty.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("word_embeddings" in n for n in grads)
    assert any(f"heads.{task}." in n for n in grads) and any(".pals_" in n for n in grads)


def _trainer(tiny_base, output_dir, smart=None, augment=False, callbacks=None):
    from hf_pals.data.augment import AugmentConfig, EDAAugmenter

    model = _model(tiny_base)
    words = "good bad film plot actor great boring fun slow rice cook paris music happy sad".split()
    g = torch.Generator().manual_seed(0)

    def sentence():
        return " ".join(words[int(i)] for i in torch.randint(len(words), (6,), generator=g))

    data = {
        "sst": Dataset.from_list([{"sentence1": sentence(), "label": i % 5} for i in range(16)]),
        "sts": Dataset.from_list(
            [{"sentence1": sentence(), "sentence2": sentence(), "label": float(i % 6) * 0.9} for i in range(16)]
        ),
    }
    args = TrainingArguments(
        output_dir=str(output_dir), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3, seed=5,
        use_cpu=True, report_to="none", save_steps=2, logging_steps=2,
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    collator = None
    if augment:  # EDA with a small synonym table (no WordNet needed)
        table = {"good": ["fine"], "film": ["movie"], "fun": ["merriment"], "slow": ["dull"]}
        augmenter = EDAAugmenter(AugmentConfig(tasks=["sst", "sts"], alpha=0.3), seed=5, synonyms=lambda w: table.get(w, []))
        collator = MultiTaskCollator(tokenizer, model.tasks, max_length=16, augment=augmenter)
    trainer = MultiTaskTrainer(
        model, args, train_datasets=data, tokenizer=tokenizer, max_length=16, data_collator=collator, callbacks=callbacks
    )
    trainer.smart = smart
    return trainer


def test_weight_zero_gives_exactly_the_plain_loss_and_a_weight_adds_the_penalty(tiny_base, tmp_path):
    trainer = _trainer(tiny_base, tmp_path, smart=SMARTConfig(weights={"sst": 0.0, "sts": 0.5}, **BIG))
    model = trainer.model.train()
    for task in ("sst", "sts"):
        batch = _batch(tiny_base, model, task)
        torch.manual_seed(7)
        plain = model(**batch)["loss"]
        torch.manual_seed(7)
        got = trainer.compute_loss(model, batch)
        if task == "sst":
            assert torch.equal(got, plain)
        else:
            assert got.item() > plain.item()  # + 0.5 R_s, R_s > 0; the clean part is the same forward
    trainer.smart = None
    torch.manual_seed(7)
    plain = model(**_batch(tiny_base, model, "sts"))["loss"]
    torch.manual_seed(7)
    assert torch.equal(trainer.compute_loss(model, _batch(tiny_base, model, "sts")), plain)


def test_a_killed_run_with_smart_and_augmentation_resumes_to_the_same_weights(tiny_base, tmp_path):
    config = SMARTConfig(weights={"sst": 0.5, "sts": 0.5}, **BIG)
    straight = _trainer(tiny_base, tmp_path / "straight", smart=config, augment=True)
    straight.train()
    expected = {k: v.clone() for k, v in straight.model.state_dict().items()}
    losses = [h["loss"] for h in straight.state.log_history if "loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(losses)))

    killed = _trainer(tiny_base, tmp_path / "killed", smart=config, augment=True, callbacks=[_Kill(at=3)])
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    resumed = _trainer(tiny_base, tmp_path / "killed", smart=config, augment=True)
    resumed.train(resume_from_checkpoint=True)
    got = resumed.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())

    plain = _trainer(tiny_base, tmp_path / "plain")  # and SMART + EDA did change the training
    plain.train()
    assert not all(torch.equal(plain.model.state_dict()[k], v) for k, v in expected.items())
