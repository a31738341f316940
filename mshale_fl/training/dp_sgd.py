"""DP-SGD, one step at a time, with the semantics of Opacus' PrivacyEngine and a cheaper gradient path.

What a step does (the same as `make_private(poisson_sampling=True, clipping="flat",
loss_reduction="mean")` followed by `optimizer.step()`; tests hold the two equal):

1. Poisson sampling: every example joins the batch independently with probability `sample_rate`,
   drawn as `torch.rand(n, generator) < sample_rate` (Opacus' `UniformWithReplacementSampler`,
   same generator calls, so the same seed gives the same batches). Batches may be empty.
2. Per-sample gradients of the per-example loss, each clipped as a whole (all parameters
   together) to L2 norm `max_grad_norm` with Opacus' factor `min(1, C / (norm + 1e-6))`, then summed.
3. Gaussian noise with std `noise_multiplier * max_grad_norm` added to the sum, per parameter
   tensor in `model.parameters()` order, drawn with `torch.normal(..., generator=noise_generator)`
   (Opacus' `_generate_noise` outside secure mode).
4. Division by the expected batch size `n * sample_rate` (not by the realised batch size, which
   would leak it), then the caller's SGD update.

Why not Opacus' engine: its hooks (`grad_sample_mode="hooks"`) materialise a [batch, out, in]
tensor per layer and cost about 6x a plain step on `mshale1`; ghost clipping about 4.5x. For a
chain of Linear layers the per-example gradient of a weight is an outer product, so norms and the
clipped sum come from the layer inputs and output gradients alone (`linear_chain.py`): one
forward, one backward, the matrix products a plain step computes anyway. Models that are not such
a chain fall back to `torch.func` (`vmap(grad(...))`), exact but slower.

Schedule differences from Opacus (deliberate): Opacus derives `steps = int(1 / sample_rate)` and
`expected_batch_size = int(n * sample_rate)`, and float rounding makes both one too small for
some sizes (93 batches -> 92 steps; n = 392, batch 8 -> expected batch 7). We use the exact values
(`ceil(n / batch_size)` steps per epoch, `n * sample_rate` as a real number); where Opacus' ints are
exact the two agree bit for bit in the sampling and to float rounding in the update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mshale_fl.training.linear_chain import LinearChain, clip_factors
from mshale_fl.training.losses import Loss


@dataclass(frozen=True)
class PoissonSchedule:
    """Sampling of one local round: Opacus' rate for a DataLoader with this batch size, exact counts."""

    num_examples: int
    sample_rate: float
    steps_per_epoch: int

    @property
    def expected_batch_size(self) -> float:
        return self.num_examples * self.sample_rate


def poisson_schedule(num_examples: int, batch_size: int) -> PoissonSchedule:
    """`sample_rate = 1 / ceil(n / batch_size)` (Opacus: `1 / len(data_loader)`), `ceil(n / batch_size)` steps per epoch."""
    if num_examples < 1:
        raise ValueError(f"need at least one example, got {num_examples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = math.ceil(num_examples / batch_size)
    return PoissonSchedule(num_examples=num_examples, sample_rate=1.0 / batches, steps_per_epoch=batches)


def poisson_batch(num_examples: int, sample_rate: float, generator: torch.Generator) -> torch.Tensor:
    """Indices of one Poisson-sampled batch (possibly empty); consumes the generator exactly as Opacus' sampler."""
    mask = torch.rand(num_examples, generator=generator) < sample_rate
    return mask.nonzero(as_tuple=False).reshape(-1)


# ---------------------------------------------------------------- per-sample clipping


def clipped_gradient_sum_functorch(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss: Loss, max_grad_norm: float
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The same sum for any model, from per-example gradients computed with torch.func (vmap of grad)."""
    from torch.func import functional_call, grad, vmap

    names = [name for name, _ in model.named_parameters()]
    params = {name: p.detach() for name, p in model.named_parameters()}

    def example_loss(parameters: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        output = functional_call(model, parameters, (x.unsqueeze(0),))
        return loss(output, y.unsqueeze(0)).sum()

    with torch.no_grad():
        losses = loss(functional_call(model, params, (inputs,)), targets)
    if inputs.shape[0] == 0:
        return [torch.zeros_like(params[name]) for name in names], losses
    with torch.enable_grad():
        per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))(params, inputs, targets)
    squared = sum(per_example[name].reshape(inputs.shape[0], -1).square().sum(dim=1) for name in names)
    factors = clip_factors(squared, max_grad_norm)  # type: ignore[arg-type]
    sums = [torch.einsum("i,i...->...", factors, per_example[name]) for name in names]
    return sums, losses


class ClippedGradients:
    """Per-sample clipped gradient sums for one model, by the fastest exact method it allows."""

    def __init__(self, model: nn.Module, loss: Loss, max_grad_norm: float) -> None:
        if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a finite number > 0, got {max_grad_norm!r}")
        self.model = model
        self.loss = loss
        self.max_grad_norm = max_grad_norm
        self.chain = LinearChain.of(model)
        self.method = "linear_chain" if self.chain is not None else "functorch"

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(clipped sums in `model.parameters()` order, per-example losses)."""
        if self.chain is not None:
            return self.chain.clipped_gradient_sum(inputs, targets, self.loss, self.max_grad_norm)
        return clipped_gradient_sum_functorch(self.model, inputs, targets, self.loss, self.max_grad_norm)


def add_noise(
    sums: list[torch.Tensor], noise_multiplier: float, max_grad_norm: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """`sum + N(0, (noise_multiplier * max_grad_norm)^2)` per tensor, in order (as Opacus' `add_noise`)."""
    std = noise_multiplier * max_grad_norm
    return [
        total + torch.normal(mean=0.0, std=std, size=total.shape, generator=generator)
        for total in sums
    ]
