"""The ledger's epsilon is Opacus' RDPAccountant epsilon for the same mechanism history."""

from __future__ import annotations

import math

import pytest
from opacus.accountants import RDPAccountant

from mshale_fl.ledger.accounting import RDP_ORDERS, Mechanism, epsilon


def opacus_epsilon(history: list[Mechanism], delta: float) -> float:
    accountant = RDPAccountant()
    for mechanism in history:
        for _ in range(mechanism.steps):
            accountant.step(noise_multiplier=mechanism.noise_multiplier, sample_rate=mechanism.sample_rate)
    return accountant.get_epsilon(delta=delta)


HISTORIES = [
    [Mechanism(1.1, 0.01, 100)],
    [Mechanism(1.1, 0.01, 100), Mechanism(1.1, 0.01, 100), Mechanism(1.1, 0.01, 100)],
    [Mechanism(0.8, 0.02, 50), Mechanism(1.5, 0.005, 400), Mechanism(1.0, 0.1, 10), Mechanism(0.8, 0.02, 50)],
    [Mechanism(2.0, 1.0, 3)],
]


@pytest.mark.parametrize("history", HISTORIES)
@pytest.mark.parametrize("delta", [1e-5, 1e-6])
def test_epsilon_equals_opacus_rdp_accountant(history: list[Mechanism], delta: float) -> None:
    ours = epsilon(history, delta)
    assert ours > 0
    assert ours == pytest.approx(opacus_epsilon(history, delta), rel=1e-9)


def test_orders_are_opacus_defaults() -> None:
    assert list(RDP_ORDERS) == [float(order) for order in RDPAccountant.DEFAULT_ALPHAS]


def test_composition_is_tighter_than_summing_round_epsilons() -> None:
    rounds = [Mechanism(1.1, 0.01, 100)] * 10
    composed = epsilon(rounds, 1e-5)
    summed = sum(epsilon([round_], 1e-5) for round_ in rounds)
    assert composed < summed / 2


def test_empty_history_spends_nothing() -> None:
    assert epsilon([], 1e-5) == 0.0


@pytest.mark.parametrize(
    ("noise", "rate", "steps"),
    [(0.0, 0.1, 1), (-1.0, 0.1, 1), (math.nan, 0.1, 1), (1.0, 0.0, 1), (1.0, 1.5, 1), (1.0, 0.1, 0), (1.0, 0.1, 1.5)],
)
def test_invalid_mechanisms_are_refused(noise: float, rate: float, steps: int) -> None:
    with pytest.raises(ValueError):
        Mechanism(noise, rate, steps)  # type: ignore[arg-type]
