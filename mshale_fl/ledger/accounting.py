"""Privacy accounting: epsilon of a mechanism history, by RDP composition (Opacus' analysis).

The ledger stores what each round *did* (noise multiplier, sample rate, steps) rather than the
epsilon it reported, because epsilons of (epsilon, delta)-DP rounds do not add up tightly and
summing them would both over-state spend and hide the accountant's assumptions. Composition
happens in RDP space, where it is exact (a sum over orders), and only the total is converted to
(epsilon, delta) at the budget's delta. This is exactly what Opacus' `RDPAccountant` does with
its `history`; a test holds the two equal.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version

ACCOUNTANT = "rdp"
"""The only accountant the ledger composes with; stored on every spend so history stays readable."""

# Opacus' RDPAccountant.DEFAULT_ALPHAS, repeated so that reading it does not import torch.
RDP_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(12, 64)])


def accountant_version() -> str:
    """The installed Opacus version, recorded with each spend (its RDP analysis is what we call)."""
    return version("opacus")


@dataclass(frozen=True)
class Mechanism:
    """One DP-SGD run of the sampled Gaussian mechanism: `steps` steps at one noise and rate."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(f"noise_multiplier must be a finite number > 0, got {self.noise_multiplier!r}")
        if not (math.isfinite(self.sample_rate) and 0 < self.sample_rate <= 1):
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")

    def as_history_entry(self) -> tuple[float, float, int]:
        """The (noise_multiplier, sample_rate, steps) triple of Opacus' accountant history."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


@lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    # Imported here: `opacus` imports torch (seconds), which commands that never compose skip.
    from opacus.accountants.analysis import rdp as rdp_analysis

    return tuple(
        float(value)
        for value in rdp_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(RDP_ORDERS)
        )
    )


def compose_rdp(history: Iterable[Mechanism]) -> list[float]:
    """RDP of the whole history at each order of `RDP_ORDERS` (composition is a sum)."""
    total = [0.0] * len(RDP_ORDERS)
    for mechanism in history:
        per_step = _rdp_per_step(mechanism.noise_multiplier, mechanism.sample_rate)
        for index, value in enumerate(per_step):
            total[index] += value * mechanism.steps
    return total


def epsilon(history: Sequence[Mechanism] | Iterable[Mechanism], delta: float) -> float:
    """Epsilon spent by the composed history at `delta` (0.0 for an empty history)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    history = list(history)
    if not history:
        return 0.0
    from opacus.accountants.analysis import rdp as rdp_analysis

    with warnings.catch_warnings():
        # Opacus warns when the best order is at the edge of the grid; the bound stays valid.
        warnings.simplefilter("ignore")
        value, _order = rdp_analysis.get_privacy_spent(orders=list(RDP_ORDERS), rdp=compose_rdp(history), delta=delta)
    value = float(value)
    return value if math.isfinite(value) else math.inf
