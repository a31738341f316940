"""FedProx must survive DP: a loss-term penalty is lost under Opacus, our separate proximal step is not."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from mshale_fl.training.local import LocalTrainingConfig, train_locally
from mshale_fl.training.losses import LOSSES
from mshale_fl.training.model import initial_model, parameters_of

from .conftest import efficiency_data


def _distance(params: list[np.ndarray], anchor: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.square(a - b).sum() for a, b in zip(params, anchor, strict=True))))


def _naive_fedprox(mu: float, *, dp: bool) -> list[np.ndarray]:
    """The FedProx recipe of Flower's docstring: `loss + mu/2 * |w - w_global|^2`, optionally under Opacus."""
    x, y = efficiency_data(256, seed=11)
    model = initial_model(0)
    anchor = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=32,
                        generator=torch.Generator().manual_seed(1))  # fmt: skip
    if dp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, optimizer, loader = PrivacyEngine(accountant="rdp").make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
                noise_generator=torch.Generator().manual_seed(2), grad_sample_mode="hooks",
            )  # fmt: skip
    for _ in range(2):
        for inputs, targets in loader:
            optimizer.zero_grad()
            proximal = sum((p - a).square().sum() for p, a in zip(model.parameters(), anchor, strict=True))
            loss = LOSSES["mse"](model(inputs), targets).mean() + mu / 2 * proximal
            loss.backward()
            optimizer.step()
    return [p.detach().numpy().copy() for p in model.parameters()]


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_a_loss_term_proximal_penalty_is_silently_lost_under_opacus() -> None:
    # Without DP the penalty works: mu changes the result ...
    plain = [_naive_fedprox(mu, dp=False) for mu in (0.0, 1.0)]
    assert any(not np.array_equal(a, b) for a, b in zip(*plain, strict=True))
    # ... under Opacus the same code gives bit-identical weights for every mu.
    private = [_naive_fedprox(mu, dp=True) for mu in (0.0, 1.0, 1.9)]
    moved = _distance(private[0], [p.detach().numpy() for p in initial_model(0).parameters()])
    assert moved > 0.05  # training did happen
    for other in private[1:]:
        for a, b in zip(private[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_our_proximal_step_changes_the_dp_result_and_pulls_towards_the_global_model() -> None:
    x, y = efficiency_data(256, seed=11)
    anchor = parameters_of(initial_model(0))
    distances = []
    results = []
    for mu in (0.0, 0.1, 1.0):
        config = LocalTrainingConfig(epochs=3, batch_size=32, lr=0.5, mu=mu, noise_multiplier=1.0,
                                     max_grad_norm=1.0, seed=42)  # fmt: skip
        result = train_locally(initial_model(0), x, y, anchor, config)
        assert result.mechanism is not None and result.mechanism.noise_multiplier == 1.0
        results.append(result.params)
        distances.append(_distance(result.params, anchor))
    for other in results[1:]:
        assert any(not np.array_equal(a, b) for a, b in zip(results[0], other, strict=True))
    # same seed, same batches and noise: only mu differs, and more mu stays closer to the global model
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 0.5 * distances[0]


def test_mu_zero_is_plain_dp_sgd() -> None:
    x, y = efficiency_data(128, seed=3)
    anchor = parameters_of(initial_model(0))
    config = LocalTrainingConfig(epochs=1, batch_size=16, lr=0.2, mu=0.0, noise_multiplier=1.0, max_grad_norm=1.0, seed=9)
    a = train_locally(initial_model(0), x, y, anchor, config).params
    b = train_locally(initial_model(5), x, y, anchor, config).params  # the starting model is replaced by global_params
    for left, right in zip(a, b, strict=True):
        np.testing.assert_array_equal(left, right)
