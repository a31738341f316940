"""The hand-written backward of Linear chains equals autograd, for every supported activation and loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mshale_fl.training.linear_chain import LinearChain
from mshale_fl.training.losses import LOSSES
from mshale_fl.training.model import initial_model


def _autograd_mean_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_name: str) -> list[torch.Tensor]:
    loss = LOSSES[loss_name](model(x), y).mean()
    return list(torch.autograd.grad(loss, list(model.parameters())))


REGRESSION_CHAINS = {
    "mshale1": lambda: initial_model(0),
    "tanh-leaky-nobias": lambda: nn.Sequential(nn.Linear(7, 5, bias=False), nn.Tanh(), nn.Linear(5, 4),
                                               nn.LeakyReLU(0.1), nn.Identity(), nn.Linear(4, 1), nn.Sigmoid()),
    "activation-first": lambda: nn.Sequential(nn.ReLU(), nn.Linear(7, 1)),
}
CLASSIFICATION_CHAINS = {
    "softmax-regression": lambda: nn.Sequential(nn.Linear(7, 4)),
    "relu-mlp": lambda: nn.Sequential(nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 4)),
}
CASES = [(name, "mse") for name in REGRESSION_CHAINS] + [(name, "cross_entropy") for name in CLASSIFICATION_CHAINS]


@pytest.mark.parametrize(("name", "loss_name"), CASES)
def test_summed_gradients_equal_autograd(name: str, loss_name: str) -> None:
    torch.manual_seed(0)
    model = {**REGRESSION_CHAINS, **CLASSIFICATION_CHAINS}[name]()
    linears = [m for m in model if isinstance(m, nn.Linear)]
    x = torch.randn(33, linears[0].in_features) * 2
    y = torch.randint(0, linears[-1].out_features, (33,)) if loss_name == "cross_entropy" else torch.rand(33)
    chain = LinearChain.of(model)
    assert chain is not None and chain.parameters() == list(model.parameters())
    sums, losses = chain.summed_gradients(x, y, LOSSES[loss_name])
    expected = _autograd_mean_gradients(model, x, y, loss_name)
    assert len(sums) == len(expected)
    for total, mean in zip(sums, expected, strict=True):
        torch.testing.assert_close(total / 33, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses, LOSSES[loss_name](model(x), y).detach())


class _OwnForward(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Linear(3, 3), nn.GELU(), nn.Linear(3, 1)),  # no hand-written derivative
        nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)),  # has parameters, mixes features
        nn.Sequential(nn.Linear(3, 3), nn.LeakyReLU(-0.5)),  # slope sign breaks the output-sign rule
        _OwnForward(nn.Linear(3, 1)),
        nn.Sequential(nn.ReLU()),
    ],
)
def test_anything_else_is_not_treated_as_a_chain(model: nn.Module) -> None:
    assert LinearChain.of(model) is None
