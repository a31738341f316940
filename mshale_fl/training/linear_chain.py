"""Exact gradients for a chain of Linear layers and element-wise activations, without autograd.

`mshale1` (and the multinomial logistic regression of the FedProx benchmark) is an nn.Sequential
of Linear layers and ReLU / Sigmoid-like activations. For such a chain the backward pass is a few
matrix products, and writing it out removes autograd's per-step cost, which dominates for models
this small (a graph, an engine run and hooks per step for microseconds of arithmetic).

Per-example structure. With `a_l` the input of Linear l and `delta_l = d loss_i / d z_l` its
output gradient for example i, the per-example weight gradient is the outer product
`delta_l,i a_l,i^T`. So

- the batch gradient of the mean loss is `delta_l^T a_l / batch` (what autograd computes), and
- for DP-SGD the per-example gradient norm is `sum_l |delta_l,i|^2 (|a_l,i|^2 + 1)` (the 1 for
  the bias) and the sum of clipped gradients is `(c * delta_l)^T a_l` — one matrix product,
  with no [batch, out, in] tensor (Opacus' hooks build one per layer).

Activation derivatives are taken from the activation's output (ReLU: out > 0, which is
autograd's convention of 0 at 0; Sigmoid: out (1 - out); Tanh: 1 - out^2). Tests hold every
result equal to autograd's and to Opacus'.
"""

from __future__ import annotations

import torch
from torch import nn

from mshale_fl.training.losses import Loss

CLIP_EPSILON = 1e-6  # Opacus' guard in max_grad_norm / (norm + 1e-6)


def _relu(output: torch.Tensor, _layer: nn.Module) -> torch.Tensor:
    return (output > 0).to(output.dtype)


def _leaky_relu(output: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    slope = layer.negative_slope  # type: ignore[attr-defined]
    return torch.where(output > 0, 1.0, slope).to(output.dtype)


def _sigmoid(output: torch.Tensor, _layer: nn.Module) -> torch.Tensor:
    return output * (1.0 - output)


def _tanh(output: torch.Tensor, _layer: nn.Module) -> torch.Tensor:
    return 1.0 - output.square()


_DERIVATIVES = {nn.ReLU: _relu, nn.LeakyReLU: _leaky_relu, nn.Sigmoid: _sigmoid, nn.Tanh: _tanh}


def clip_factors(squared_norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """Opacus' flat clipping factor per example: min(1, C / (norm + 1e-6))."""
    return (max_grad_norm / (squared_norms.sqrt() + CLIP_EPSILON)).clamp(max=1.0)


class LinearChain:
    """Forward and hand-written backward for an nn.Sequential of Linear layers and supported activations."""

    def __init__(self, layers: list[nn.Module]) -> None:
        self.layers = layers
        self.linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
        self._first_linear = next(i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear))
        # Detached views share storage with the parameters, so in-place updates (the optimizer step,
        # load_state_dict) show through, while nothing computed here ever builds an autograd graph,
        # whatever the grad mode: no torch.no_grad() context per call (a measurable cost per step).
        self._weights = {id(layer): layer.weight.detach() for layer in self.linears}
        self._biases = {id(layer): None if layer.bias is None else layer.bias.detach() for layer in self.linears}

    @classmethod
    def of(cls, model: nn.Module) -> LinearChain | None:
        """The chain view of `model`, or None when it is not such a chain (then autograd / torch.func is used)."""
        if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
            return None  # a subclass with its own forward may do anything
        layers = list(model)
        if not any(isinstance(layer, nn.Linear) for layer in layers):
            return None
        for layer in layers:
            if type(layer) is nn.Linear or type(layer) is nn.Identity:
                continue
            if type(layer) not in _DERIVATIVES:
                return None
            if isinstance(layer, nn.LeakyReLU) and layer.negative_slope <= 0:
                return None  # the derivative is read from the output's sign, which needs a positive slope
        return cls(layers)

    def parameters(self) -> list[nn.Parameter]:
        """In `model.parameters()` order: weight, then bias, per Linear."""
        return [p for layer in self.linears for p in ((layer.weight,) if layer.bias is None else (layer.weight, layer.bias))]

    def _forward(self, inputs: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(input of each layer, output of each layer)."""
        layer_inputs: list[torch.Tensor] = []
        layer_outputs: list[torch.Tensor] = []
        hidden = inputs
        for layer in self.layers:
            layer_inputs.append(hidden)
            if isinstance(layer, nn.Linear):
                weight, bias = self._weights[id(layer)], self._biases[id(layer)]
                hidden = hidden.mm(weight.t()) if bias is None else torch.addmm(bias, hidden, weight.t())
            elif not isinstance(layer, nn.Identity):
                hidden = layer(hidden)
            layer_outputs.append(hidden)
        return layer_inputs, layer_outputs

    def _losses_and_deltas(
        self, inputs: torch.Tensor, targets: torch.Tensor, loss: Loss
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Per-example losses, each Linear's input and each Linear's output gradient (in Linear order)."""
        layer_inputs, layer_outputs = self._forward(inputs)
        output = layer_outputs[-1]
        losses = loss(output, targets)
        gradient = loss.output_gradient(output, targets)
        deltas: list[torch.Tensor] = []
        activations: list[torch.Tensor] = []
        for index in range(len(self.layers) - 1, self._first_linear - 1, -1):
            layer = self.layers[index]
            if isinstance(layer, nn.Linear):
                deltas.append(gradient)
                activations.append(layer_inputs[index])
                if index > self._first_linear:
                    gradient = gradient.mm(self._weights[id(layer)])
            elif not isinstance(layer, nn.Identity):
                gradient = gradient * _DERIVATIVES[type(layer)](layer_outputs[index], layer)
        deltas.reverse()
        activations.reverse()
        return losses, activations, deltas

    def summed_gradients(self, inputs: torch.Tensor, targets: torch.Tensor, loss: Loss) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Sum over the batch of per-example gradients (batch size x autograd's mean-loss gradient), and the losses.

        Sums in `parameters()` order; the caller divides (folded into the step size: one operation fewer per tensor).
        """
        losses, activations, deltas = self._losses_and_deltas(inputs, targets, loss)
        sums: list[torch.Tensor] = []
        for layer, activation, delta in zip(self.linears, activations, deltas, strict=True):
            sums.append(delta.t().mm(activation))
            if layer.bias is not None:
                sums.append(delta.sum(dim=0))
        return sums, losses

    def clipped_gradient_sum(
        self, inputs: torch.Tensor, targets: torch.Tensor, loss: Loss, max_grad_norm: float
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Sum over the batch of per-example gradients, each clipped to L2 norm `max_grad_norm` (Opacus' flat clipping)."""
        losses, activations, deltas = self._losses_and_deltas(inputs, targets, loss)
        squared = torch.zeros(inputs.shape[0], dtype=inputs.dtype)
        for layer, activation, delta in zip(self.linears, activations, deltas, strict=True):
            input_sq = activation.square().sum(dim=1)
            if layer.bias is not None:
                input_sq += 1.0
            squared += delta.square().sum(dim=1) * input_sq
        factors = clip_factors(squared, max_grad_norm).unsqueeze(1)
        sums: list[torch.Tensor] = []
        for layer, activation, delta in zip(self.linears, activations, deltas, strict=True):
            scaled = delta * factors
            sums.append(scaled.t().mm(activation))
            if layer.bias is not None:
                sums.append(scaled.sum(dim=0))
        return sums, losses
