"""Per-example losses and their gradients with respect to the model output.

`loss(output, targets)` gives one loss per example (shape [batch]); `loss.output_gradient(output,
targets)` gives d loss_i / d output_i, which the Linear-chain fast path (`linear_chain.py`)
propagates by hand instead of running autograd.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F

LossName = Literal["mse", "cross_entropy"]


class SquaredError:
    """(output - target)^2 for a single output per example: mshale1's efficiency in [0, 1]."""

    name = "mse"

    def __call__(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (output.reshape(-1) - targets).square()

    def output_gradient(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (2.0 * (output.reshape(-1) - targets)).reshape(output.shape)


class CrossEntropy:
    """Softmax cross-entropy of logits [batch, classes] against class ids [batch]."""

    name = "cross_entropy"

    def __call__(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, targets, reduction="none")

    def output_gradient(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.softmax(output, dim=1).sub_(F.one_hot(targets, output.shape[1]))


Loss = SquaredError | CrossEntropy
LOSSES: dict[str, Loss] = {"mse": SquaredError(), "cross_entropy": CrossEntropy()}
