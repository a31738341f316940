"""Our DP-SGD step has Opacus' semantics: same sampling, clipping, noise and averaging."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from mshale_fl.training.dp_sgd import (
    ClippedGradients,
    add_noise,
    clipped_gradient_sum_functorch,
    poisson_batch,
    poisson_schedule,
)
from mshale_fl.training.linear_chain import LinearChain
from mshale_fl.training.local import LocalTrainingConfig, generators, train_locally
from mshale_fl.training.losses import LOSSES
from mshale_fl.training.model import initial_model, parameters_of

from .conftest import efficiency_data


def test_poisson_batches_are_opacus_batches_for_the_same_seed() -> None:
    schedule = poisson_schedule(500, 32)
    assert schedule.sample_rate == 1 / 16 and schedule.steps_per_epoch == 16
    ours = torch.Generator().manual_seed(7)
    theirs = torch.Generator().manual_seed(7)
    sampler = UniformWithReplacementSampler(num_samples=500, sample_rate=schedule.sample_rate, generator=theirs, steps=40)
    sizes = []
    for expected in sampler:
        batch = poisson_batch(500, schedule.sample_rate, ours)
        assert batch.tolist() == expected
        sizes.append(len(expected))
    assert len(set(sizes)) > 1  # batch sizes vary: Poisson sampling, not fixed batches


def test_schedule_uses_exact_counts_where_opacus_rounds_down() -> None:
    # Opacus: int(1 / (1/93)) == 92 steps and int(392 * (1/49)) == 7; we keep 93 and 8.0.
    assert poisson_schedule(93 * 10, 10).steps_per_epoch == 93
    assert poisson_schedule(392, 8).expected_batch_size == pytest.approx(8.0)


def _opacus_round(model: nn.Module, x: np.ndarray, y: np.ndarray, config: LocalTrainingConfig) -> list[np.ndarray]:
    """The same round with Opacus' own GradSampleModule (hooks) and DPOptimizer, fed the same batches."""
    sampling, noise = generators(config.seed)
    schedule = poisson_schedule(len(x), config.batch_size)
    assert schedule.expected_batch_size == int(schedule.expected_batch_size)  # Opacus' int() is exact here
    sampler = UniformWithReplacementSampler(
        num_samples=len(x), sample_rate=schedule.sample_rate, generator=sampling, steps=schedule.steps_per_epoch
    )
    module = GradSampleModule(model, loss_reduction="mean")
    optimizer = DPOptimizer(
        torch.optim.SGD(module.parameters(), lr=config.lr),
        noise_multiplier=config.noise_multiplier,
        max_grad_norm=config.max_grad_norm,
        expected_batch_size=int(schedule.expected_batch_size),
        generator=noise,
    )
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(config.epochs):
        for indices in sampler:
            batch = torch.tensor(indices, dtype=torch.long)
            optimizer.zero_grad()
            LOSSES["mse"](module(inputs[batch]), targets[batch]).mean().backward()
            optimizer.step()
    return parameters_of(model)


def test_a_dp_round_equals_opacus_hooks_with_the_same_batches_and_noise() -> None:
    x, y = efficiency_data(200, seed=1)
    # clipping active for most examples (C small) and noise comparable to the signal
    config = LocalTrainingConfig(epochs=2, batch_size=50, lr=2.0, mu=0.0, noise_multiplier=0.7,
                                 max_grad_norm=0.05, seed=3)  # fmt: skip
    start = parameters_of(initial_model(0))
    ours = train_locally(initial_model(0), x, y, start, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _opacus_round(initial_model(0), x, y, config)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(ours.params, start, strict=True))
    assert moved > 0.01
    for a, b in zip(ours.params, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_clipping_bounds_every_example_and_matches_explicit_per_sample_gradients() -> None:
    x, y = efficiency_data(64, seed=2)
    model = initial_model(0)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    # explicit per-example gradients, one backward each
    per_example = []
    for i in range(len(x)):
        model.zero_grad()
        LOSSES["mse"](model(inputs[i : i + 1]), targets[i : i + 1]).sum().backward()
        per_example.append([p.grad.detach().clone() for p in model.parameters()])
    norms = torch.stack([torch.sqrt(sum(g.square().sum() for g in grads)) for grads in per_example])
    max_norm = float(norms.median())  # half the examples get clipped
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for grads, norm in zip(per_example, norms, strict=True):
        factor = min(1.0, max_norm / (float(norm) + 1e-6))
        for total, grad in zip(expected, grads, strict=True):
            total += factor * grad
    linear, _ = LinearChain.of(model).clipped_gradient_sum(inputs, targets, LOSSES["mse"], max_norm)
    functorch, _ = clipped_gradient_sum_functorch(model, inputs, targets, LOSSES["mse"], max_norm)
    for want, a, b in zip(expected, linear, functorch, strict=True):
        torch.testing.assert_close(a, want, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(b, want, rtol=1e-4, atol=1e-6)
    # a single example's clipped contribution never exceeds the bound
    one, _ = LinearChain.of(model).clipped_gradient_sum(inputs[:1] * 50, targets[:1], LOSSES["mse"], 0.01)
    assert float(torch.sqrt(sum(g.square().sum() for g in one))) <= 0.01 + 1e-6


class _NotAChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = initial_model(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_models_that_are_not_linear_chains_use_the_functorch_path() -> None:
    assert ClippedGradients(initial_model(0), LOSSES["mse"], 1.0).method == "linear_chain"
    wrapped = _NotAChain()
    clipped = ClippedGradients(wrapped, LOSSES["mse"], 1.0)
    assert clipped.method == "functorch"
    x, y = efficiency_data(16)
    a, _ = clipped(torch.from_numpy(x), torch.from_numpy(y))
    b, _ = ClippedGradients(wrapped.inner, LOSSES["mse"], 1.0)(torch.from_numpy(x), torch.from_numpy(y))
    for left, right in zip(a, b, strict=True):
        torch.testing.assert_close(left, right, rtol=1e-4, atol=1e-6)


def test_noise_std_is_noise_multiplier_times_max_grad_norm_and_empty_batches_still_get_noise() -> None:
    generator = torch.Generator().manual_seed(0)
    zeros = [torch.zeros(200, 100), torch.zeros(100)]
    noisy = add_noise(zeros, noise_multiplier=1.3, max_grad_norm=0.5, generator=generator)
    values = torch.cat([t.reshape(-1) for t in noisy])
    assert float(values.std()) == pytest.approx(0.65, rel=0.02)
    assert abs(float(values.mean())) < 0.01
    empty, _ = LinearChain.of(initial_model(0)).clipped_gradient_sum(torch.zeros(0, 223), torch.zeros(0), LOSSES["mse"], 1.0)
    assert all(float(t.abs().sum()) == 0 for t in empty)


def test_update_is_averaged_by_the_expected_not_the_realised_batch_size() -> None:
    # With zero data gradient (targets equal predictions) one step moves w by exactly lr * noise / (n * q).
    x, _ = efficiency_data(100, seed=4)
    model = initial_model(0)
    start = parameters_of(model)
    y = model.predict(x)
    config = LocalTrainingConfig(epochs=1, batch_size=100, lr=0.1, mu=0.0, noise_multiplier=2.0, max_grad_norm=1.0, seed=5)
    result = train_locally(model, x, y, start, config)
    assert result.steps == 1 and result.sample_rate == 1.0
    _, noise = generators(5)
    expected_noise = add_noise([torch.zeros(p.shape) for p in initial_model(0).parameters()], 2.0, 1.0, noise)
    for after, before, drawn in zip(result.params, start, expected_noise, strict=True):
        np.testing.assert_allclose(before - after, 0.1 * drawn.numpy() / 100.0, rtol=1e-4, atol=1e-7)
