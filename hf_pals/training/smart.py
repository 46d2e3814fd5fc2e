"""SMART: smoothness-inducing adversarial regularisation (Jiang et al., "SMART: Robust and Efficient
Fine-Tuning for Pre-trained Natural Language Models through Principled Regularized Optimization", ACL 2020).

A task's loss becomes L(θ) + λ_s R_s(θ), with

    R_s(θ) = 1/n Σ_i  max_{||x̃_i − x_i||_∞ ≤ ε}  ℓ_s(f(x̃_i; θ), f(x_i; θ))

where x_i are the word embeddings of example i (the output of the encoder's word-embedding table, fed
back through `inputs_embeds`; position and token-type embeddings are added after it as usual), f the
task's head output, and ℓ_s the symmetric KL divergence KL(p||q) + KL(q||p) of the predicted
distributions for classification (softmax) and binary (sigmoid) tasks, the squared error (on the scale
of labels divided by `label_max`, as the MSE loss) for regression. The inner max is approximated as in
the paper's Algorithm 1: a random start x̃ = x + ν, ν ~ N(0, σ²I), then `steps` projected gradient ascent
steps

    g  = ∇_x̃ ℓ_s(f(x̃), f(x))                           (f(x) held fixed)
    x̃ ← Π_{||x̃ − x||_∞ ≤ ε} (x̃ + η g / ||g||_∞)        (per token)

and R_s is ℓ_s at the final x̃, differentiated through both f(x̃) and f(x). Padding tokens are never
perturbed. The dropout masks of the clean forward pass are replayed in the perturbed ones (the RNG state
is captured before the clean pass), so R_s measures the effect of the perturbation alone; the noise comes
from its own generator seeded from (seed, step), so a resumed run draws the same noise.

Cost: each SMART step adds `steps + 1` forward passes and `steps` backward passes to the input, on the
tasks that have a weight; the others train exactly as before.

Used by `MultiTaskTrainer.compute_loss` when the trainer's `smart` attribute holds a `SMARTConfig`
(a recipe's `smart:` section; see `hf_pals.recipe`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

#: Keeps g / ||g||_∞ finite for a token whose gradient is exactly zero.
_GRAD_EPS = 1e-12


@dataclass
class SMARTConfig:
    """SMART's settings (names as in the paper and its MT-DNN implementation).

    Args:
        weights: λ_s of each task, e.g. {"sst": 0.5, "sts": 0.5} (CS224N report 004 used 0.5 for SST and
            STS and none for Quora); tasks not listed (or with weight 0) train without SMART.
        epsilon: ε, the radius of the ∞-norm ball the perturbation of each word embedding stays in.
        step_size: η, the length (∞-norm) of each normalised ascent step before projection.
        noise_var: σ, the standard deviation of the random start ν ~ N(0, σ²I) (called noise_var in
            MT-DNN and smart-pytorch, where it is used as a standard deviation too).
        steps: T, the number of projected gradient ascent steps (0: random perturbation only).

    The default ε = η = 1e-2 is sized for BERT-style word embeddings (all-MiniLM-L6-v2's have std 0.056
    and a mean per-token max |x| of 0.17). Measured on a 32-row SST batch of MiniLM + PALs (task loss
    1.6): R_s ≈ 5e-8 at ε = 1e-5, 7e-5 at 1e-3, 6e-3 at 1e-2, 7e-2 at 1e-1; on STS (siamese cosine,
    loss 0.034) 6e-7, 9e-4, 7e-2 and 0.42. smart-pytorch, which CS224N report 004 used, rescales the
    perturbation to unit ∞-norm per token: about ε = η = 1 here.
    """

    weights: dict[str, float] = field(default_factory=dict)
    epsilon: float = 1e-2
    step_size: float = 1e-2
    noise_var: float = 1e-5
    steps: int = 1

    def __post_init__(self):
        self.weights = {str(k): float(v) for k, v in dict(self.weights or {}).items()}
        bad = {k: v for k, v in self.weights.items() if v < 0}
        if bad:
            raise ValueError(f"smart.weights must be >= 0, got {bad}")
        for name in ("epsilon", "step_size", "noise_var"):
            if getattr(self, name) < 0:
                raise ValueError(f"smart.{name} must be >= 0, got {getattr(self, name)}")
        if int(self.steps) != self.steps or self.steps < 0:
            raise ValueError(f"smart.steps must be an integer >= 0, got {self.steps}")
        self.steps = int(self.steps)

    def weight(self, task: str) -> float:
        """λ_s of `task` (0 when it has none)."""
        return self.weights.get(task, 0.0)


def symmetric_divergence(kind: str, outputs: torch.Tensor, reference: torch.Tensor, label_max: float = 1.0) -> torch.Tensor:
    """ℓ_s between two outputs of a head, averaged over examples.

    classification: Σ_c (p_c − q_c)(log p_c − log q_c) = KL(p||q) + KL(q||p), p, q the softmax of the logits;
    binary: the same for Bernoulli(sigmoid(logit)), which simplifies to (σ(a) − σ(b))(a − b);
    regression: ((a − b) / label_max)².
    """
    a, b = outputs.float(), reference.float()
    if kind == "classification":
        log_p, log_q = F.log_softmax(a, dim=-1), F.log_softmax(b, dim=-1)
        return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1).mean()
    if kind == "binary":
        return ((torch.sigmoid(a) - torch.sigmoid(b)) * (a - b)).mean()
    if kind == "regression":
        return ((a - b) / label_max).pow(2).mean()
    raise ValueError(f"SMART: unknown task kind {kind!r}")


def smoothness_regularizer(
    forward: Callable[[torch.Tensor], torch.Tensor],
    embeds: torch.Tensor,
    clean_outputs: torch.Tensor,
    kind: str,
    config: SMARTConfig,
    mask: Optional[torch.Tensor] = None,
    label_max: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """R_s for one batch (see the module docstring).

    Args:
        forward: maps (perturbed) word embeddings [batch, length, dim] to the head's outputs.
        embeds: the clean word embeddings x (gradients flow through them into the embedding table).
        clean_outputs: f(x), the outputs of the clean forward pass (gradients flow through them too).
        kind: the task's kind ("classification", "binary", "regression"), which picks ℓ_s.
        mask: [batch, length], 1 for real tokens; padding is not perturbed.
        generator: the source of the random start (for reproducible runs).
    """
    keep = None if mask is None else mask.unsqueeze(-1).to(embeds.dtype)
    noise = torch.randn(embeds.shape, generator=generator, device=embeds.device, dtype=embeds.dtype) * config.noise_var
    noise = _project(noise, config.epsilon, keep)
    anchor = clean_outputs.detach()
    base = embeds.detach()
    for _ in range(config.steps):
        noise.requires_grad_(True)
        divergence = symmetric_divergence(kind, forward(base + noise), anchor, label_max)
        (grad,) = torch.autograd.grad(divergence, noise, allow_unused=True)
        if grad is None:  # the outputs do not depend on the input: no direction to climb
            grad = torch.zeros_like(noise)
        direction = grad / (grad.abs().amax(-1, keepdim=True) + _GRAD_EPS)
        noise = _project(noise.detach() + config.step_size * direction, config.epsilon, keep)
    return symmetric_divergence(kind, forward(embeds + noise.detach()), clean_outputs, label_max)


def _project(noise: torch.Tensor, epsilon: float, keep: Optional[torch.Tensor]) -> torch.Tensor:
    """Π onto the ∞-norm ball of radius ε, zero on padding."""
    noise = noise.clamp(-epsilon, epsilon)
    return noise if keep is None else noise * keep


# ------------------------------------------------------------------------------ MultiTaskModel glue
def capture_rng_state() -> tuple:
    """The CPU (and CUDA) RNG state, taken just before the clean forward pass (see `replay_rng_state`)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


@contextmanager
def replay_rng_state(state: tuple):
    """Run a block with the RNG state `state` (so its dropout masks repeat those drawn from it), then put
    the RNG back as it was before the block."""
    cpu, cuda = state
    devices = list(range(len(cuda))) if cuda is not None else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        yield


def smart_generator(device: torch.device, seed: int, step: int) -> torch.Generator:
    """The generator of SMART's random start at optimizer step `step`: a pure function of (seed, step)."""
    generator = torch.Generator(device=device)
    generator.manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63 - 1))
    return generator


def smart_penalty(
    model,
    inputs: dict,
    clean_logits: torch.Tensor,
    config: SMARTConfig,
    rng_state: Optional[tuple] = None,
    seed: int = 0,
    step: int = 0,
) -> torch.Tensor:
    """R_s of a `MultiTaskModel` batch (`inputs` as the collator makes them, `clean_logits` from
    `model(**inputs)`), perturbing the word embeddings through the model's `inputs_embeds` argument.
    Siamese pairs work as any batch: both sentences of a pair are perturbed. So do `pair_encoding: both`
    pairs: every row of the batch (the packed pair and each sentence alone) gets its own perturbation, and
    ℓ_s compares the averaged head outputs, one per example."""
    task = inputs["task"]
    spec = model.tasks[task]
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
    embeds = model.bert.get_input_embeddings()(input_ids)

    def forward(perturbed: torch.Tensor) -> torch.Tensor:
        kwargs = dict(task=task, attention_mask=attention_mask, token_type_ids=inputs.get("token_type_ids"))
        if rng_state is None:
            return model(inputs_embeds=perturbed, **kwargs)["logits"]
        with replay_rng_state(rng_state):
            return model(inputs_embeds=perturbed, **kwargs)["logits"]

    return smoothness_regularizer(
        forward,
        embeds,
        clean_logits,
        spec.kind,
        config,
        mask=attention_mask,
        label_max=spec.label_max,
        generator=smart_generator(embeds.device, seed, step),
    )


__all__ = [
    "SMARTConfig",
    "symmetric_divergence",
    "smoothness_regularizer",
    "smart_penalty",
    "capture_rng_state",
    "replay_rng_state",
]
