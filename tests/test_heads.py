"""Heads and losses: cosine with ReLU, linear + cosine, 1 - Pearson, CoSENT, label smoothing, and the choices a
TaskSpec checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hf_pals.heads import (
    COSENT_SCALE,
    LINEAR_COSINE_SCALE,
    LINEAR_COSINE_THRESHOLD,
    TaskHead,
    cosent_loss,
    pearson_loss,
    pool,
    task_loss,
)
from hf_pals.tasks import TaskSpec, cs224n_task

D = 8


def _pair(batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, D, generator=g), torch.randn(batch, D, generator=g)


# ------------------------------------------------------------------------------------------ pooling
def test_pooling_reads_only_real_tokens():
    hidden = torch.tensor([[[1.0, -1.0], [3.0, 5.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(pool(hidden, mask, "cls"), torch.tensor([[1.0, -1.0]]))
    assert torch.equal(pool(hidden, mask, "mean"), torch.tensor([[2.0, 2.0]]))
    assert torch.equal(pool(hidden, mask, "max"), torch.tensor([[3.0, 5.0]]))


# -------------------------------------------------------------------------------------------- heads
def test_cosine_relu_is_relu_of_cosine_times_label_max():
    head = TaskHead(cs224n_task("sts", pair_encoding="siamese", head="cosine_relu"), D)
    u, v = _pair()
    v[0] = -u[0]  # cos = -1: scored 0, not -5
    out = head(u, v)
    expected = F.relu(F.cosine_similarity(u, v, dim=-1)) * 5.0
    assert torch.allclose(out, expected)
    assert out[0] == 0.0 and (out >= 0).all() and (out <= 5.0 + 1e-5).all()
    assert not list(head.parameters())


def test_linear_cosine_binary_starts_as_scaled_cosine_and_learns_scale_and_threshold():
    spec = cs224n_task("quora", pair_encoding="siamese", head="linear_cosine")
    head = TaskHead(spec, D)
    u, v = _pair()
    expected = LINEAR_COSINE_SCALE * (F.cosine_similarity(u, v, dim=-1) - LINEAR_COSINE_THRESHOLD)
    assert torch.allclose(head(u, v), expected, atol=1e-5)  # W starts as the identity
    names = {n for n, _ in head.named_parameters()}
    assert names == {"projection.weight", "projection.bias", "log_scale", "threshold"}
    loss = task_loss(spec, head(u, v), torch.tensor([1.0, 0, 1, 0, 1, 0]))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    # the projection is shared: swapping the sentences gives the same logit
    assert torch.allclose(head(u, v), head(v, u))


def test_linear_cosine_regression_is_projected_cosine_times_label_max():
    head = TaskHead(cs224n_task("sts", pair_encoding="siamese", head="linear_cosine"), D)
    with torch.no_grad():
        head.projection.weight.copy_(torch.randn(D, D))
    u, v = _pair()
    expected = F.cosine_similarity(head.projection(u), head.projection(v), dim=-1) * 5.0
    assert torch.allclose(head(u, v), expected)
    assert {n for n, _ in head.named_parameters()} == {"projection.weight", "projection.bias"}


@pytest.mark.parametrize("head", ["cosine", "cosine_relu", "linear_cosine"])
def test_siamese_heads_need_a_siamese_pair(head):
    with pytest.raises(ValueError, match=f"head '{head}' needs a sentence pair"):
        cs224n_task("sts", head=head)  # packed pair
    with pytest.raises(ValueError, match=f"head '{head}' needs a sentence pair"):
        cs224n_task("sst", head=head)


def test_linear_cosine_refuses_classification():
    with pytest.raises(ValueError, match="linear_cosine"):
        TaskSpec("nli", kind="classification", num_labels=3, text_columns=("a", "b"), pair_encoding="siamese",
                 head="linear_cosine")


# ------------------------------------------------------------------------------------------- losses
def test_one_minus_pearson_properties():
    g = torch.Generator().manual_seed(1)
    labels = torch.rand(16, generator=g) * 5
    assert pearson_loss(labels * 0.3 + 7.0, labels).item() == pytest.approx(0.0, abs=1e-5)
    assert pearson_loss(-labels, labels).item() == pytest.approx(2.0, abs=1e-5)
    scores = torch.randn(16, generator=g)
    plain = pearson_loss(scores, labels)
    for a, b in [(3.0, -2.0), (0.1, 10.0), (250.0, 0.0)]:
        assert pearson_loss(a * scores + b, labels).item() == pytest.approx(plain.item(), abs=1e-5)
    r = torch.corrcoef(torch.stack([scores, labels]))[0, 1]
    assert plain.item() == pytest.approx(1.0 - r.item(), abs=1e-5)


def test_one_minus_pearson_is_the_chosen_loss_and_has_gradients():
    spec = cs224n_task("sts", pair_encoding="siamese", head="linear_cosine", loss="one_minus_pearson")
    head = TaskHead(spec, D)
    u, v = _pair()
    loss = task_loss(spec, head(u, v), torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]))
    loss.backward()
    assert 0.0 <= loss.item() <= 2.0
    assert head.projection.weight.grad.abs().sum() > 0
    # one example, or constant labels: no correlation to measure, a finite loss of 1
    assert pearson_loss(torch.tensor([0.3]), torch.tensor([2.0])).item() == pytest.approx(1.0)
    assert math.isfinite(pearson_loss(torch.randn(4), torch.ones(4)).item())


def test_one_minus_pearson_is_for_regression_only():
    with pytest.raises(ValueError, match="one_minus_pearson"):
        cs224n_task("quora", loss="one_minus_pearson")


def _cosent_by_hand(scores, labels, scale=COSENT_SCALE):
    """CoSENT written as a loop over the ordered pairs: log(1 + sum_{y_i > y_j} exp(scale (s_j - s_i)))."""
    terms = [
        math.exp(scale * (scores[j] - scores[i]))
        for i in range(len(labels)) for j in range(len(labels)) if labels[i] > labels[j]
    ]
    return math.log(1.0 + sum(terms))


def test_cosent_equals_its_pairwise_sum():
    g = torch.Generator().manual_seed(3)
    scores, labels = torch.rand(7, generator=g), torch.tensor([0.0, 1.2, 3.4, 3.4, 5.0, 2.0, 0.6])
    assert cosent_loss(scores, labels).item() == pytest.approx(_cosent_by_hand(scores.tolist(), labels.tolist()), rel=1e-5)
    # scores ranked like the labels, far apart: no loss left; ranked the other way: a large loss
    assert cosent_loss(labels, labels).item() == pytest.approx(0.0, abs=1e-4)
    assert cosent_loss(-labels, labels).item() > 50
    # ties in the labels make no pair; one example or constant labels: log 1 = 0
    assert cosent_loss(torch.tensor([0.2, 0.9]), torch.tensor([3.0, 3.0])).item() == 0.0
    assert cosent_loss(torch.tensor([0.2]), torch.tensor([3.0])).item() == 0.0


def test_cosent_is_the_chosen_loss_on_scores_scaled_by_label_max_and_has_gradients():
    spec = cs224n_task("sts", pair_encoding="siamese", head="cosine", loss="cosent")
    u, v = _pair()
    u.requires_grad_(True)
    labels = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    outputs = TaskHead(spec, D)(u, v)
    loss = task_loss(spec, outputs, labels)
    cosines = F.cosine_similarity(u, v, dim=-1)  # the head's outputs are cos * 5; CoSENT sees cos
    assert loss.item() == pytest.approx(_cosent_by_hand(cosines.tolist(), labels.tolist()), rel=1e-5)
    loss.backward()
    assert u.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cosent"):
        cs224n_task("sst", loss="cosent")


def test_label_smoothing_is_torchs_and_for_cross_entropy_only():
    spec = cs224n_task("sst", label_smoothing=0.1)
    outputs, labels = torch.tensor([[2.0, 0.5, 0.0, -1.0, 0.3], [0.0, 0.0, 3.0, 0.0, 0.0]]), torch.tensor([0, 4])
    expected = F.cross_entropy(outputs, labels, label_smoothing=0.1)
    assert torch.allclose(task_loss(spec, outputs, labels), expected)
    assert not torch.allclose(expected, F.cross_entropy(outputs, labels))  # the option does something
    # by hand: (1 - 0.1) * NLL of the label + 0.1 * the mean NLL over the 5 classes
    logp = F.log_softmax(outputs, -1)
    by_hand = (0.9 * -logp[torch.arange(2), labels] + 0.1 * -logp.mean(-1)).mean()
    assert torch.allclose(expected, by_hand)
    with pytest.raises(ValueError, match="label_smoothing needs loss 'cross_entropy'"):
        cs224n_task("quora", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        cs224n_task("sst", label_smoothing=1.0)


@pytest.mark.parametrize(
    "task, outputs, labels, expected",
    [
        ("sst", torch.tensor([[2.0, 0.0, 0, 0, 0]]), torch.tensor([0]), lambda o, l: F.cross_entropy(o, l)),
        ("quora", torch.tensor([0.7, -1.0]), torch.tensor([1.0, 0.0]),
         lambda o, l: F.binary_cross_entropy_with_logits(o, l)),
        ("sts", torch.tensor([5.0, 1.0]), torch.tensor([4.0, 1.0]), lambda o, l: F.mse_loss(o / 5, l / 5)),
    ],
)
def test_default_losses_by_kind(task, outputs, labels, expected):
    spec = cs224n_task(task)
    assert torch.allclose(task_loss(spec, outputs, labels), expected(outputs, labels))


def test_loss_is_chosen_per_task_in_a_recipe():
    from hf_pals.recipe import parse_recipe

    recipe = parse_recipe(
        {
            "base_model": "sentence-transformers/all-MiniLM-L6-v2",
            "tasks": {
                "sst": {"loss": "cross_entropy"},
                "quora": {"pair_encoding": "siamese", "head": "linear_cosine", "loss": "bce"},
                "sts": {"pair_encoding": "siamese", "head": "cosine_relu", "loss": "one_minus_pearson"},
            },
            "training": {"max_steps": 1},
        }
    )
    specs = recipe.task_specs()
    assert [specs[t].loss for t in ("sst", "quora", "sts")] == ["cross_entropy", "bce", "one_minus_pearson"]
    assert specs["sts"].head == "cosine_relu" and specs["quora"].head == "linear_cosine"
