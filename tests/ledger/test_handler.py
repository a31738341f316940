"""The ledger handler, driven the way the consumer runtime drives it: inside `SqlInbox.apply_once`."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.payloads import RoundCompleted, RoundStarted, SubmissionAccepted, UpdateMasked
from sqlalchemy import Engine, func, select

from mshale_fl.ledger import budgets
from mshale_fl.ledger.accounting import Mechanism
from mshale_fl.ledger.contributions import contribution_totals, list_contributions, trained_model_versions
from mshale_fl.ledger.errors import PermanentLedgerError, ReservationNotFound, UnknownPartner
from mshale_fl.ledger.handler import LedgerHandler
from mshale_fl.store.inbox import SqlInbox
from mshale_fl.store.schema import inbox

from .helpers import MakePartner

ROUND = Mechanism(noise_multiplier=1.0, sample_rate=0.05, steps=50)
RUN = "run-7"


def apply(engine: Engine, event: EventEnvelope[Any]) -> tuple[bool, list[EventEnvelope[Any]]]:
    handler = LedgerHandler()
    return SqlInbox(engine, handler.consumer_name).apply_once(
        event.event_id, lambda connection: handler.handle(event, connection)
    )


def accepted(partner_id: str, kind: str = "vectors", items: int = 12) -> EventEnvelope[Any]:
    return new_event(
        "submission.accepted",
        SubmissionAccepted(submission_id=uuid.uuid4(), kind=kind, items=items),
        partner_id=partner_id,
    )


def update(partner_id: str, round_number: int, model_version: int = 1) -> EventEnvelope[Any]:
    return new_event(
        "update.masked",
        UpdateMasked(
            run_id=RUN, round=round_number, model_version=model_version, digest="ab" * 32, epsilon_spent=0.5, delta=1e-5
        ),
        partner_id=partner_id,
    )


def round_started(cohort: list[str], round_number: int) -> EventEnvelope[Any]:
    return new_event(
        "round.started",
        RoundStarted(run_id=RUN, round=round_number, model_version=1, cohort=cohort),
        partner_id="mishale",
    )


def round_completed(participants: list[str], round_number: int) -> EventEnvelope[Any]:
    return new_event(
        "round.completed",
        RoundCompleted(run_id=RUN, round=round_number, model_version=1, participants=participants),
        partner_id="mishale",
    )


def test_consumer_name() -> None:
    assert LedgerHandler.consumer_name == "ledger"


def test_submission_accepted_records_one_contribution_per_event(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner(tier=1, agreements=[])
    event = accepted(partner.id, "spec", 1)
    assert apply(engine, event) == (True, [])
    assert apply(engine, event) == (False, [])  # redelivery
    apply(engine, accepted(partner.id, "vectors", 40))
    with engine.begin() as connection:
        totals = contribution_totals(connection, partner.id)
        rows = list_contributions(connection, partner.id)
    assert totals["spec"] == {"events": 1, "items": 1}
    assert totals["vectors"] == {"events": 1, "items": 40}
    assert str(event.event_id) in {row.event_id for row in rows}


def test_recording_is_idempotent_even_without_the_inbox(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner(tier=1, agreements=[])
    event = accepted(partner.id)
    for _ in range(2):
        with engine.begin() as connection:
            LedgerHandler().handle(event, connection)
    with engine.begin() as connection:
        assert contribution_totals(connection, partner.id)["vectors"] == {"events": 1, "items": 12}


def test_unknown_partner_is_a_permanent_error_and_nothing_is_applied(engine: Engine) -> None:
    event = accepted("lab-never-registered")
    with pytest.raises(UnknownPartner) as error:
        apply(engine, event)
    assert isinstance(error.value, PermanentLedgerError)
    with engine.begin() as connection:
        assert connection.execute(select(func.count()).select_from(inbox)).scalar_one() == 0


def test_update_without_a_reservation_is_a_permanent_error(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner()
    with pytest.raises(ReservationNotFound):
        apply(engine, update(partner.id, 1))


def test_round_lifecycle_commits_trained_and_releases_untrained_reservations(
    engine: Engine, make_partner: MakePartner
) -> None:
    alice, bob, carol = make_partner(), make_partner(), make_partner()
    ledger = budgets.PrivacyBudgets(engine)
    round_id = budgets.round_id_for(RUN, 1)
    for partner in (alice, bob, carol):
        ledger.reserve(partner_id=partner.id, model_version=1, round_id=round_id, mechanism=ROUND)

    apply(engine, round_started([alice.id, bob.id], 1))  # carol was reserved but not selected
    with pytest.raises(Exception, match="cannot be released"):
        ledger.release(partner_id=bob.id, round_id=round_id)
    apply(engine, update(alice.id, 1))
    apply(engine, round_completed([alice.id], 1))  # bob trained but his update never arrived

    with engine.begin() as connection:
        spends = {
            partner.id: budgets.budget_status(connection, partner.id, 1).spends[0] for partner in (alice, bob, carol)
        }
        assert trained_model_versions(connection, alice.id) == [1]
        assert trained_model_versions(connection, bob.id) == []
    assert spends[alice.id].status == "committed"
    assert spends[bob.id].status == "committed"  # training started: the cost is real
    assert spends[carol.id].status == "released"


def test_round_completed_overtaking_round_started_still_commits_participants(
    engine: Engine, make_partner: MakePartner
) -> None:
    partner = make_partner()
    ledger = budgets.PrivacyBudgets(engine)
    ledger.reserve(partner_id=partner.id, model_version=1, round_id=budgets.round_id_for(RUN, 2), mechanism=ROUND)
    apply(engine, round_completed([partner.id], 2))
    assert ledger.status(partner.id, 1).spends[0].status == "committed"


def test_budget_low_and_partner_paused_are_returned_once(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner(epsilon=5.0)
    ledger = budgets.PrivacyBudgets(engine)
    for number in (1, 2, 3):  # the third reservation leaves 5 %: paused at reservation time
        ledger.reserve(
            partner_id=partner.id, model_version=1, round_id=budgets.round_id_for(RUN, number), mechanism=ROUND
        )
    first_update = update(partner.id, 1)
    applied, outputs = apply(engine, first_update)
    assert applied
    assert [event.type for event in outputs] == ["budget.low", "partner.paused"]
    for event in outputs:
        assert event.partner_id == partner.id
        assert event.causation_id == first_update.event_id
        assert event.correlation_id == first_update.correlation_id
        assert event.payload.model_version == 1
    assert outputs[0].payload.fraction_remaining < 0.10

    # Redelivery returns the recorded outputs (same event ids), and no new alert is produced.
    applied, again = apply(engine, first_update)
    assert not applied
    assert [event.event_id for event in again] == [event.event_id for event in outputs]
    _, later = apply(engine, update(partner.id, 2))
    assert later == []
