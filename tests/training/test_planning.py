from __future__ import annotations

import json
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from mshale_fl.config import get_settings
from mshale_fl.ledger.accounting import Mechanism, epsilon
from mshale_fl.training.planning import (
    PartnerAccountant,
    PrivacyBudgetError,
    effective_epsilon,
    plan_noise_multiplier,
)

DELTA = 1e-5


def test_planned_noise_fits_the_whole_schedule_tightly() -> None:
    sample_rate, steps, rounds = 1 / 20, 200, 10
    sigma = plan_noise_multiplier(1.0, DELTA, sample_rate, steps, rounds)
    schedule = [Mechanism(sigma, sample_rate, steps)] * rounds  # one history entry per round, as recorded
    assert 0.99 - 1e-9 <= epsilon(schedule, DELTA) <= 1.0
    assert epsilon([Mechanism(sigma * 0.98, sample_rate, steps)] * rounds, DELTA) > 1.0  # not wastefully noisy
    assert sigma == pytest.approx(
        get_noise_multiplier(target_epsilon=1.0, target_delta=DELTA, sample_rate=sample_rate, steps=steps * rounds,
                             accountant="rdp"), rel=1e-5)  # fmt: skip


def test_planning_after_a_restart_fits_the_rest_into_what_remains() -> None:
    first = Mechanism(plan_noise_multiplier(2.0, DELTA, 0.05, 100, 10), 0.05, 100)
    spent = [first] * 4  # four of ten rounds ran
    sigma = plan_noise_multiplier(2.0, DELTA, 0.05, 100, 6, already_spent=spent)
    total = epsilon(spent + [Mechanism(sigma, 0.05, 100)] * 6, DELTA)
    assert 1.99 - 1e-9 <= total <= 2.0
    with pytest.raises(PrivacyBudgetError, match="already spent"):
        plan_noise_multiplier(epsilon(spent, DELTA) * 0.99, DELTA, 0.05, 100, 1, already_spent=spent)


def test_a_budget_too_small_for_any_noise_is_a_clear_error() -> None:
    with pytest.raises(PrivacyBudgetError, match="too small"):
        plan_noise_multiplier(1e-7, DELTA, 1.0, 1_000_000, 100)
    with pytest.raises(PrivacyBudgetError, match="delta"):
        plan_noise_multiplier(1.0, 0.0, 0.1, 10, 1)


def test_effective_budget_is_the_smaller_epsilon() -> None:
    assert effective_epsilon(1.0, 0.5) == 0.5
    assert effective_epsilon(0.3, 0.5) == 0.3
    with pytest.raises(PrivacyBudgetError):
        effective_epsilon(0.0, 1.0)


def test_accountant_epsilon_is_the_ledgers_and_opacus_rdp(tmp_path: Path) -> None:
    accountant = PartnerAccountant("lab-a", 0, delta=DELTA, home=tmp_path)
    assert accountant.epsilon_spent == 0.0
    history = [Mechanism(1.1, 0.05, 200), Mechanism(0.9, 0.02, 350), Mechanism(1.1, 0.05, 200)]
    for index, mechanism in enumerate(history):
        accountant.record(mechanism, round_id=f"run/{index + 1}")
    opacus = RDPAccountant()
    opacus.history = [m.as_history_entry() for m in history]
    assert accountant.epsilon_spent == epsilon(history, DELTA)
    assert accountant.epsilon_spent == pytest.approx(opacus.get_epsilon(DELTA), rel=1e-12)


def test_accountant_persists_per_partner_and_model_version(tmp_path: Path) -> None:
    accountant = PartnerAccountant("lab-a", 3, delta=DELTA, home=tmp_path)
    assert accountant.record(Mechanism(1.0, 0.1, 50), round_id="run-1/1")
    assert not accountant.record(Mechanism(1.0, 0.1, 50), round_id="run-1/1")  # a retried round counts once
    accountant.record(Mechanism(1.2, 0.1, 50))
    path = tmp_path / "privacy" / "lab-a" / "model-3.json"
    assert accountant.path == path and json.loads(path.read_text())["history"][0]["round_id"] == "run-1/1"
    reopened = PartnerAccountant("lab-a", 3, delta=DELTA, home=tmp_path)
    assert reopened.history == accountant.history and reopened.has_recorded("run-1/1")
    assert reopened.epsilon_spent == accountant.epsilon_spent
    assert PartnerAccountant("lab-a", 4, delta=DELTA, home=tmp_path).history == []  # a new version starts afresh
    assert PartnerAccountant("lab-b", 3, delta=DELTA, home=tmp_path).history == []


def test_accountant_lives_under_mshale_home_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSHALE_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        accountant = PartnerAccountant("lab-a", 0, delta=DELTA)
        accountant.record(Mechanism(1.0, 0.1, 10))
        assert (tmp_path / "home" / "privacy" / "lab-a" / "model-0.json").is_file()
    finally:
        get_settings.cache_clear()


def test_would_exceed_is_checked_against_the_composed_history(tmp_path: Path) -> None:
    accountant = PartnerAccountant("lab-a", 0, delta=DELTA, home=tmp_path)
    round_ = Mechanism(plan_noise_multiplier(1.0, DELTA, 0.05, 100, 3), 0.05, 100)
    for _ in range(3):
        assert not accountant.would_exceed(round_, 1.0)
        accountant.record(round_)
    assert accountant.would_exceed(round_, 1.0)  # a fourth round does not fit
    assert not accountant.would_exceed(round_, 2.0)
    assert accountant.epsilon_after(round_) > accountant.epsilon_spent


def test_unusable_accountant_files_stop_training_rather_than_reset(tmp_path: Path) -> None:
    accountant = PartnerAccountant("lab-a", 0, delta=DELTA, home=tmp_path)
    accountant.record(Mechanism(1.0, 0.1, 10))
    with pytest.raises(PrivacyBudgetError, match="delta"):
        PartnerAccountant("lab-a", 0, delta=1e-6, home=tmp_path)
    accountant.path.write_text("{not json")
    with pytest.raises(PrivacyBudgetError, match="restore it"):
        PartnerAccountant("lab-a", 0, delta=DELTA, home=tmp_path)
    with pytest.raises(PrivacyBudgetError, match="partner id"):
        PartnerAccountant("../etc", 0, delta=DELTA, home=tmp_path)
