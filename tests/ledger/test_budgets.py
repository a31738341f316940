"""Privacy budgets on SQLite and PostgreSQL: composition, refusal before overspend, idempotency,
release rules, pause below 10 % and resume, and the per-dataset cap across model versions."""

from __future__ import annotations

import pytest
from opacus.accountants import RDPAccountant
from sqlalchemy import Engine, func, select

from mshale_fl.ledger import budgets
from mshale_fl.ledger.access import may_train
from mshale_fl.ledger.accounting import Mechanism, epsilon
from mshale_fl.ledger.errors import (
    BudgetExceeded,
    BudgetPaused,
    PartnerNotActive,
    ReleaseRefused,
    ReservationConflict,
    ReservationNotFound,
    UnknownPartner,
)
from mshale_fl.ledger.partners import mark_revoked
from mshale_fl.ledger.tables import privacy_spends

from .helpers import MakePartner

# Epsilon at delta 1e-5 of k copies: 1 -> 3.18, 2 -> 4.04, 3 -> 4.75, 4 -> 5.37.
ROUND = Mechanism(noise_multiplier=1.0, sample_rate=0.05, steps=50)


def spend_rows(engine: Engine, partner_id: str) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).select_from(privacy_spends).where(privacy_spends.c.partner_id == partner_id)
        ).scalar_one()


def test_ledger_epsilon_equals_opacus_for_the_stored_history(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner(epsilon=50.0)
    ledger = budgets.PrivacyBudgets(engine)
    history = [Mechanism(1.1, 0.01, 100), Mechanism(0.9, 0.02, 60), Mechanism(1.1, 0.01, 100), Mechanism(2.0, 0.1, 5)]
    for number, mechanism in enumerate(history, start=1):
        ledger.reserve(partner_id=partner.id, model_version=1, round_id=f"run/{number}", mechanism=mechanism)
    ledger.commit(partner_id=partner.id, round_id="run/1")
    accountant = RDPAccountant()
    for mechanism in history:
        for _ in range(mechanism.steps):
            accountant.step(noise_multiplier=mechanism.noise_multiplier, sample_rate=mechanism.sample_rate)
    status = ledger.status(partner.id, 1)
    assert status.epsilon_spent == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-9)
    assert status.epsilon_committed == pytest.approx(epsilon(history[:1], 1e-5), rel=1e-12)
    assert [spend.mechanism for spend in status.spends] == history
    assert {spend.accountant for spend in status.spends} == {"rdp"}


def test_a_spend_that_would_exceed_is_refused_before_anything_is_spent(
    engine: Engine, make_partner: MakePartner
) -> None:
    partner = make_partner(epsilon=4.5)
    ledger = budgets.PrivacyBudgets(engine)
    ledger.reserve(partner_id=partner.id, model_version=1, round_id="r/1", mechanism=ROUND)
    ledger.reserve(partner_id=partner.id, model_version=1, round_id="r/2", mechanism=ROUND)  # 4.04 of 4.5, open
    before = ledger.status(partner.id, 1)
    with pytest.raises(BudgetExceeded) as refused:
        ledger.reserve(partner_id=partner.id, model_version=1, round_id="r/3", mechanism=ROUND)
    assert refused.value.scope == "model_version"
    assert refused.value.epsilon_requested == pytest.approx(epsilon([ROUND] * 3, 1e-5))
    assert refused.value.epsilon_requested > 4.5
    assert spend_rows(engine, partner.id) == 2
    after = ledger.status(partner.id, 1)
    assert after.epsilon_spent == before.epsilon_spent
    assert after.state == "active"


def test_reserving_the_same_round_twice_returns_the_first_reservation(
    engine: Engine, make_partner: MakePartner
) -> None:
    partner = make_partner()
    ledger = budgets.PrivacyBudgets(engine)
    first = ledger.reserve(partner_id=partner.id, model_version=1, round_id="run-a/1", mechanism=ROUND)
    again = ledger.reserve(partner_id=partner.id, model_version=1, round_id="run-a/1", mechanism=ROUND)
    assert again == first
    assert spend_rows(engine, partner.id) == 1
    assert ledger.status(partner.id, 1).epsilon_spent == pytest.approx(epsilon([ROUND], 1e-5))
    with pytest.raises(ReservationConflict):
        ledger.reserve(partner_id=partner.id, model_version=1, round_id="run-a/1", mechanism=Mechanism(2.0, 0.05, 50))
    with pytest.raises(ReservationConflict):
        ledger.reserve(partner_id=partner.id, model_version=2, round_id="run-a/1", mechanism=ROUND)
    committed = ledger.commit(partner_id=partner.id, round_id="run-a/1")
    assert ledger.commit(partner_id=partner.id, round_id="run-a/1") == committed


def test_release_only_before_training_started(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner()
    ledger = budgets.PrivacyBudgets(engine)
    ledger.reserve(partner_id=partner.id, model_version=1, round_id="r/1", mechanism=ROUND)
    ledger.reserve(partner_id=partner.id, model_version=1, round_id="r/2", mechanism=ROUND)

    released = ledger.release(partner_id=partner.id, round_id="r/1")
    assert released.status == "released"
    assert ledger.release(partner_id=partner.id, round_id="r/1").status == "released"
    assert ledger.status(partner.id, 1).epsilon_spent == pytest.approx(epsilon([ROUND], 1e-5))

    started = ledger.mark_started(round_id="r/2")
    assert [spend.partner_id for spend in started] == [partner.id]
    with pytest.raises(ReleaseRefused):
        ledger.release(partner_id=partner.id, round_id="r/2")
    assert ledger.commit(partner_id=partner.id, round_id="r/2").status == "committed"
    with pytest.raises(ReleaseRefused):
        ledger.release(partner_id=partner.id, round_id="r/2")
    with pytest.raises(ReservationNotFound):
        ledger.release(partner_id=partner.id, round_id="r/unknown")


def test_pause_below_ten_percent_then_resume_when_raised(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner(epsilon=5.0)
    ledger = budgets.PrivacyBudgets(engine)
    for number in (1, 2):
        ledger.reserve(partner_id=partner.id, model_version=1, round_id=f"r/{number}", mechanism=ROUND)
    with engine.begin() as connection:
        assert budgets.take_budget_alerts(connection) == []
    ledger.reserve(partner_id=partner.id, model_version=1, round_id="r/3", mechanism=ROUND)  # 4.75 of 5: 5 % left

    status = ledger.status(partner.id, 1)
    assert status.state == "paused"
    assert status.fraction_remaining < 0.10
    assert ledger.is_paused(partner.id, 1)
    with engine.begin() as connection:
        assert may_train(connection, partner.id, 1).code == "budget.paused"
        alerts = budgets.take_budget_alerts(connection)
        assert budgets.take_budget_alerts(connection) == []  # once per pause
    assert [event.type for event in alerts] == ["budget.low", "partner.paused"]
    assert {event.partner_id for event in alerts} == {partner.id}
    low = alerts[0].payload
    assert low.model_version == 1
    assert low.epsilon_total == 5.0
    assert low.epsilon_spent == pytest.approx(epsilon([ROUND] * 3, 1e-5))
    assert low.fraction_remaining == pytest.approx((5.0 - low.epsilon_spent) / 5.0)
    assert alerts[1].payload.reason == "budget_low"

    # Paused: even a tiny round is refused, although it would fit.
    with pytest.raises(BudgetPaused):
        ledger.reserve(partner_id=partner.id, model_version=1, round_id="r/4", mechanism=Mechanism(50.0, 0.001, 1))
    assert spend_rows(engine, partner.id) == 3

    ledger.set_budget_total(partner.id, 1, 5.2)  # still under 10 % left: stays paused
    assert ledger.is_paused(partner.id, 1)
    resumed = ledger.set_budget_total(partner.id, 1, 7.0)
    assert resumed.state == "active"
    with engine.begin() as connection:
        assert may_train(connection, partner.id, 1).allowed
    ledger.reserve(partner_id=partner.id, model_version=1, round_id="r/4", mechanism=ROUND)  # 5.37 of 7
    assert ledger.status(partner.id, 1).state == "active"


def test_a_new_model_version_starts_active(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner(epsilon=5.0, dataset_epsilon=100.0)
    ledger = budgets.PrivacyBudgets(engine)
    for number in (1, 2, 3):
        ledger.reserve(partner_id=partner.id, model_version=1, round_id=f"v1/{number}", mechanism=ROUND)
    assert ledger.is_paused(partner.id, 1)
    spend = ledger.reserve(partner_id=partner.id, model_version=2, round_id="v2/1", mechanism=ROUND)
    assert spend.model_version == 2
    status = ledger.status(partner.id, 2)
    assert status.state == "active"
    assert status.epsilon_total == 5.0
    assert ledger.is_paused(partner.id, 1)


def test_dataset_cap_composes_across_model_versions(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner(epsilon=8.0, dataset_epsilon=5.0)
    ledger = budgets.PrivacyBudgets(engine)
    ledger.reserve(partner_id=partner.id, model_version=1, round_id="v1/1", mechanism=ROUND)
    ledger.reserve(partner_id=partner.id, model_version=1, round_id="v1/2", mechanism=ROUND)
    ledger.reserve(partner_id=partner.id, model_version=2, round_id="v2/1", mechanism=ROUND)  # dataset: 3 -> 4.75
    with pytest.raises(BudgetExceeded) as refused:
        # Version 2 alone would be at 4.04 of 8, but the dataset composes to 5.37 > 5.
        ledger.reserve(partner_id=partner.id, model_version=2, round_id="v2/2", mechanism=ROUND)
    assert refused.value.scope == "dataset"
    assert refused.value.code == "budget.dataset_exceeded"
    with engine.begin() as connection:
        dataset = budgets.dataset_status(connection, partner.id)
    assert dataset.epsilon_spent == pytest.approx(epsilon([ROUND] * 3, 1e-5))
    ledger.set_dataset_cap(partner.id, 6.0)
    ledger.reserve(partner_id=partner.id, model_version=2, round_id="v2/2", mechanism=ROUND)


def test_separate_datasets_have_separate_caps(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner(epsilon=8.0, dataset_epsilon=4.1)
    ledger = budgets.PrivacyBudgets(engine)
    ledger.reserve(partner_id=partner.id, model_version=1, round_id="a/1", mechanism=ROUND, dataset_id="cohort-a")
    ledger.reserve(partner_id=partner.id, model_version=1, round_id="a/2", mechanism=ROUND, dataset_id="cohort-a")
    ledger.reserve(partner_id=partner.id, model_version=2, round_id="b/1", mechanism=ROUND, dataset_id="cohort-b")
    with pytest.raises(ReservationConflict):
        ledger.reserve(partner_id=partner.id, model_version=1, round_id="a/3", mechanism=ROUND, dataset_id="cohort-b")


def test_revoked_and_unknown_partners_cannot_reserve(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner()
    ledger = budgets.PrivacyBudgets(engine)
    with engine.begin() as connection:
        mark_revoked(connection, partner.id)
    with pytest.raises(PartnerNotActive):
        ledger.reserve(partner_id=partner.id, model_version=1, round_id="r/1", mechanism=ROUND)
    with pytest.raises(UnknownPartner):
        ledger.reserve(partner_id="lab-never-registered", model_version=1, round_id="r/1", mechanism=ROUND)
    assert spend_rows(engine, partner.id) == 0
