from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mshale_fl.ledger.accounting import Mechanism
from mshale_fl.training.local import (
    LocalTrainingConfig,
    TrainingDiverged,
    dp_round_shape,
    train_locally,
)
from mshale_fl.training.model import initial_model, parameters_of

from .conftest import efficiency_data


def _config(**overrides) -> LocalTrainingConfig:
    values = {"epochs": 2, "batch_size": 32, "lr": 0.5, "mu": 0.01, "noise_multiplier": 1.0, "max_grad_norm": 1.0, "seed": 0}
    values.update(overrides)
    return LocalTrainingConfig(**values)


def _mse(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    model = initial_model(0)
    from mshale_fl.training.model import load_parameters

    load_parameters(model, params)
    return float(np.mean((model.predict(x) - y) ** 2))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"mu": -1.0}, "mu"),
        ({"lr": 0.5, "mu": 3.0}, "lr \\* mu"),
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"max_grad_norm": float("inf")}, "max_grad_norm"),
        ({"loss": "hinge"}, "loss"),
    ],
)
def test_config_rejects_values_that_cannot_train(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_without_dp_noise_settings_are_not_needed() -> None:
    assert _config(dp=False, noise_multiplier=0.0, max_grad_norm=0.0).dp is False


def test_plain_training_learns_and_reports_no_mechanism() -> None:
    x, y = efficiency_data(600, seed=1)
    held_x, held_y = x[500:], y[500:]
    start = parameters_of(initial_model(0))
    result = train_locally(initial_model(0), x[:500], y[:500], start, _config(dp=False, epochs=20, mu=0.0))
    assert result.mechanism is None and result.sample_rate is None and result.noise_multiplier is None
    assert result.num_examples == 500 and result.steps == 20 * 16
    assert _mse(result.params, held_x, held_y) < 0.6 * _mse(start, held_x, held_y)


def test_dp_training_learns_and_reports_its_mechanism() -> None:
    x, y = efficiency_data(2200, seed=2)
    start = parameters_of(initial_model(0))
    # little noise: this checks that clipped, averaged, Poisson-sampled steps learn (privacy is elsewhere)
    config = _config(epochs=10, batch_size=100, lr=5.0, mu=0.0, noise_multiplier=0.1, max_grad_norm=0.1)
    result = train_locally(initial_model(0), x[:2000], y[:2000], start, config)
    sample_rate, steps = dp_round_shape(2000, 100, 10)
    assert (result.sample_rate, result.steps) == (sample_rate, steps) == (1 / 20, 200)
    assert result.mechanism == Mechanism(0.1, 1 / 20, 200)
    assert _mse(result.params, x[2000:], y[2000:]) < 0.8 * _mse(start, x[2000:], y[2000:])
    assert 0 < result.train_loss < 1


def test_same_seed_same_update_and_no_seed_fresh_noise() -> None:
    x, y = efficiency_data(100, seed=3)
    start = parameters_of(initial_model(0))
    a = train_locally(initial_model(0), x, y, start, _config())
    b = train_locally(initial_model(0), x, y, start, _config())
    c = train_locally(initial_model(0), x, y, start, _config(seed=None))
    d = train_locally(initial_model(0), x, y, start, _config(seed=None))
    assert all(np.array_equal(p, q) for p, q in zip(a.params, b.params, strict=True))
    assert not np.array_equal(c.params[0], d.params[0])
    assert not np.array_equal(a.params[0], c.params[0])


def test_cross_entropy_trains_a_softmax_regression() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(5, 3)), axis=1)
    model = nn.Sequential(nn.Linear(5, 3))
    nn.init.zeros_(model[0].weight)
    nn.init.zeros_(model[0].bias)
    start = parameters_of(model)
    for dp in (False, True):
        result = train_locally(model, x, y, start, _config(loss="cross_entropy", epochs=10, dp=dp, noise_multiplier=0.5))
        with torch.no_grad():
            model[0].weight.copy_(torch.from_numpy(result.params[0]))
            model[0].bias.copy_(torch.from_numpy(result.params[1]))
            accuracy = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
        assert accuracy > 0.8, (dp, accuracy)


def test_bad_inputs_and_divergence_are_reported() -> None:
    x, y = efficiency_data(50)
    start = parameters_of(initial_model(0))
    with pytest.raises(ValueError, match="targets must have shape"):
        train_locally(initial_model(0), x, y[:-1], start, _config())
    with pytest.raises(ValueError, match="non-empty"):
        train_locally(initial_model(0), x[:0], y[:0], start, _config())
    with pytest.raises(ValueError, match="finite"):
        train_locally(initial_model(0), np.full_like(x, np.inf), y, start, _config())
    linear = nn.Sequential(nn.Linear(223, 1))
    with pytest.raises(TrainingDiverged):
        train_locally(linear, x, y, parameters_of(linear), _config(dp=False, lr=1e3, mu=0.0, epochs=20))


class _Wrapped(nn.Module):
    """mshale1 behind its own forward: not a Linear chain, so training takes the autograd / torch.func paths."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = initial_model(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


@pytest.mark.parametrize("dp", [False, True])
def test_linear_chain_fast_path_trains_exactly_like_the_generic_path(dp: bool) -> None:
    x, y = efficiency_data(300, seed=6)
    start = parameters_of(initial_model(0))
    config = _config(epochs=2, batch_size=25, lr=0.3, mu=0.5, dp=dp)
    fast = train_locally(initial_model(0), x, y, start, config)
    generic = train_locally(_Wrapped(), x, y, start, config)
    for a, b in zip(fast.params, generic.params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert fast.train_loss == pytest.approx(generic.train_loss, rel=1e-5)
