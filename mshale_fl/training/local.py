"""One partner's local round: FedProx local training, with DP-SGD (the default) or without.

FedProx under DP. FedProx asks each client to minimise `loss + mu/2 |w - w_global|^2`. Written
as a loss term, that penalty never survives DP-SGD: Opacus replaces `p.grad` with the clipped,
noised sum of per-sample gradients of the model's output, so the penalty's gradient is silently
discarded (tests/training/test_fedprox_dp.py shows identical results for every mu). Here the
proximal step is applied on its own after every optimizer step:

    w <- w - lr * mu * (w - w_global)

It reads no data, so it costs no privacy, and it is exactly the gradient step of the penalty
(evaluated after the data step rather than before it: a difference of order lr^2 * mu). The same
step is used without DP, so `dp` changes only how the data gradient is computed. `lr * mu` must
be <= 1 (the step then moves w towards w_global, never past it).

Privacy. With `dp=True` every step is one use of the sampled Gaussian mechanism (`dp_sgd.py`):
the round is `Mechanism(noise_multiplier, sample_rate, steps)` for the ledger and the partner's
accountant. What the result holds beyond `params` is not protected: `num_examples` (FedAvg's
weight; it also sets the sample rate) and `train_loss` (a local diagnostic; never send it).

Randomness. `seed` fixes the batches and the noise, for tests and benchmarks. A partner in
production must pass `seed=None`: the noise is then seeded from the OS's entropy, since anyone
who knows the noise seed can subtract the noise.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mshale_fl.ledger.accounting import Mechanism
from mshale_fl.training.dp_sgd import (
    ClippedGradients,
    add_noise,
    poisson_batch,
    poisson_schedule,
)
from mshale_fl.training.linear_chain import LinearChain
from mshale_fl.training.losses import LOSSES, LossName
from mshale_fl.training.model import load_parameters, parameters_of


class TrainingDiverged(RuntimeError):
    """Local training produced NaN or infinite weights (learning rate too high for the data)."""


@dataclass(frozen=True)
class LocalTrainingConfig:
    epochs: int
    batch_size: int
    lr: float
    mu: float
    noise_multiplier: float
    max_grad_norm: float
    seed: int | None
    dp: bool = True
    loss: LossName = "mse"

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (math.isfinite(self.mu) and self.mu >= 0):
            raise ValueError(f"mu must be a finite number >= 0, got {self.mu!r}")
        if self.lr * self.mu > 1:
            raise ValueError(f"lr * mu must be <= 1 (the proximal step would overshoot the global model), got {self.lr * self.mu}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        if self.dp:
            if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
                raise ValueError(f"noise_multiplier must be a finite number > 0 with dp, got {self.noise_multiplier!r}")
            if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
                raise ValueError(f"max_grad_norm must be a finite number > 0 with dp, got {self.max_grad_norm!r}")


@dataclass(frozen=True)
class TrainResult:
    """The trained weights (`parameters_of` order) and what the round cost; `sample_rate` and `noise_multiplier` are None without DP."""

    params: list[np.ndarray] = field(repr=False)
    num_examples: int
    train_loss: float
    steps: int
    sample_rate: float | None
    noise_multiplier: float | None

    @property
    def mechanism(self) -> Mechanism | None:
        """The privacy mechanism this round used (None without DP): what the ledger and accountant record."""
        if self.sample_rate is None or self.noise_multiplier is None:
            return None
        return Mechanism(self.noise_multiplier, self.sample_rate, self.steps)


def dp_round_shape(num_examples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """(sample_rate, steps) of a DP round on `num_examples`: what to plan noise and check budgets with before training."""
    schedule = poisson_schedule(num_examples, batch_size)
    return schedule.sample_rate, epochs * schedule.steps_per_epoch


def generators(seed: int | None) -> tuple[torch.Generator, torch.Generator]:
    """(sampling, noise) generators: seeds `seed` and `seed + 1`, or fresh OS entropy for None."""
    if seed is None:
        return torch.Generator().manual_seed(secrets.randbits(63)), torch.Generator().manual_seed(secrets.randbits(63))
    return torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)


def train_locally(
    model: nn.Module,
    features: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    global_params: Sequence[np.ndarray],
    config: LocalTrainingConfig,
) -> TrainResult:
    """Set `model` to `global_params`, train it in place on (features, targets) and return the new weights."""
    inputs = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if inputs.ndim != 2 or inputs.shape[0] < 1:
        raise ValueError(f"features must be a non-empty [n, d] array, got shape {tuple(inputs.shape)}")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("features must be finite numbers")
    labels = _targets(targets, config.loss, inputs.shape[0])
    load_parameters(model, global_params)
    params = list(model.parameters())
    anchors = [p.detach().clone() for p in params]  # w_global for the proximal step
    sampling, noise = generators(config.seed)
    loss = LOSSES[config.loss]
    with torch.no_grad():  # updates are in place; gradients come from linear_chain, torch.func or enable_grad blocks
        if config.dp:
            steps, sample_rate, loss_sum, seen = _dp_sgd(model, params, anchors, inputs, labels, loss, config, sampling, noise)
        else:
            steps, loss_sum, seen = _sgd(model, params, anchors, inputs, labels, loss, config, sampling)
            sample_rate = None
    trained = parameters_of(model)
    if not all(np.all(np.isfinite(array)) for array in trained):
        raise TrainingDiverged("local training produced NaN or infinite weights; lower lr or max_grad_norm")
    return TrainResult(
        params=trained,
        num_examples=int(inputs.shape[0]),
        train_loss=float(loss_sum / seen) if seen else float("nan"),
        steps=steps,
        sample_rate=sample_rate,
        noise_multiplier=config.noise_multiplier if config.dp else None,
    )


def _targets(targets: np.ndarray | torch.Tensor, loss: LossName, n: int) -> torch.Tensor:
    if loss == "cross_entropy":
        labels = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    else:
        labels = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    if labels.shape != (n,):
        raise ValueError(f"targets must have shape ({n},), got {tuple(labels.shape)}")
    if labels.is_floating_point() and not bool(torch.isfinite(labels).all()):
        raise ValueError("targets must be finite numbers")
    return labels


def _proximal_step(params: list[nn.Parameter], anchors: list[torch.Tensor], weight: float) -> None:
    """w <- w - weight * (w - w_global), with weight = lr * mu (a lerp towards the global model)."""
    if weight > 0:
        torch._foreach_lerp_(params, anchors, weight)


def _sgd(model, params, anchors, inputs, labels, loss, config, generator) -> tuple[int, float, int]:
    """Plain minibatch SGD: a fresh permutation per epoch, batches of `batch_size` (the last may be smaller).

    Gradients by hand for Linear chains (`linear_chain.py`; the same numbers as autograd, without its
    per-step overhead), by autograd otherwise.
    """
    n = inputs.shape[0]
    prox = config.lr * config.mu
    chain = LinearChain.of(model)
    batch_losses: list[torch.Tensor] = []
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        shuffled_inputs, shuffled_labels = inputs[order], labels[order]  # then every batch is a cheap slice
        for start in range(0, n, config.batch_size):
            batch_inputs = shuffled_inputs[start : start + config.batch_size]
            batch_labels = shuffled_labels[start : start + config.batch_size]
            if chain is not None:
                grads, losses = chain.summed_gradients(batch_inputs, batch_labels, loss)
                step = config.lr / batch_inputs.shape[0]  # the mean over the batch, folded into the step
            else:
                with torch.enable_grad():
                    losses = loss(model(batch_inputs), batch_labels)
                    grads = torch.autograd.grad(losses.mean(), params)
                step = config.lr
            # torch._foreach_*: one call for all tensors (what torch.optim.SGD uses); the model is tiny
            # and per-call overhead is most of a step
            torch._foreach_add_(params, grads, alpha=-step)
            _proximal_step(params, anchors, prox)
            batch_losses.append(losses)
    return len(batch_losses), float(torch.cat(batch_losses).sum()), config.epochs * n


def _dp_sgd(model, params, anchors, inputs, labels, loss, config, sampling, noise) -> tuple[int, float, float, int]:
    """DP-SGD with Poisson sampling (`dp_sgd.py`), then the proximal step after every update."""
    n = inputs.shape[0]
    schedule = poisson_schedule(n, config.batch_size)
    steps = config.epochs * schedule.steps_per_epoch
    clipped = ClippedGradients(model, loss, config.max_grad_norm)
    scale = config.lr / schedule.expected_batch_size
    prox = config.lr * config.mu
    batch_losses: list[torch.Tensor] = []
    seen = 0
    for _ in range(steps):
        batch = poisson_batch(n, schedule.sample_rate, sampling)
        sums, losses = clipped(inputs[batch], labels[batch])
        noisy = add_noise(sums, config.noise_multiplier, config.max_grad_norm, noise)
        torch._foreach_add_(params, noisy, alpha=-scale)
        _proximal_step(params, anchors, prox)
        batch_losses.append(losses)
        seen += int(batch.shape[0])
    return steps, schedule.sample_rate, float(torch.cat(batch_losses).sum()), seen
