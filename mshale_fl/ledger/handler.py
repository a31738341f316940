"""The ledger worker's event handler: contributions and the spend side of privacy budgets.

The consumer runtime opens the SQL transaction, inserts the inbox row and calls `handle` inside
it, so everything written here commits (or rolls back) together with "this event was applied".
The handler therefore never opens a transaction of its own and never touches the inbox.

| event | effect |
|---|---|
| submission.accepted | one contribution row (spec or vectors, with the item count) |
| round.started | the cohort's reservations for the round are marked started (no release any more) |
| update.masked | the partner's reservation for the round is committed; an `update` contribution row |
| round.completed | reservations of the round: participants' and started ones committed, never-started ones released |

After budget changes it returns `budget.low` + `partner.paused` for each pause not yet announced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from sqlalchemy import Connection, select

from mshale_fl.ledger import budgets
from mshale_fl.ledger.contributions import record_contribution
from mshale_fl.ledger.partners import get_partner
from mshale_fl.ledger.tables import privacy_spends
from mshale_fl.logging import get_logger
from mshale_fl.schemas.events import EventEnvelope

log = get_logger(__name__)


class LedgerHandler:
    """Applies one event to the ledger inside the runtime's transaction; returns events to publish.

    Raises `PermanentLedgerError` (`UnknownPartner`, `ReservationNotFound`) for events that can
    never apply, so the runtime dead-letters them instead of retrying.
    """

    consumer_name: ClassVar[str] = "ledger"

    def handle(self, event: EventEnvelope[Any], connection: Connection) -> Sequence[EventEnvelope[Any]]:
        method = getattr(self, "_on_" + event.type.replace(".", "_"), None)
        if method is None:
            return []
        return method(event, connection)

    def _on_submission_accepted(self, event: EventEnvelope[Any], connection: Connection) -> list[EventEnvelope[Any]]:
        payload = event.payload
        inserted = record_contribution(
            connection,
            event_id=event.event_id,
            partner_id=event.partner_id,
            kind=payload.kind,
            items=payload.items,
            occurred_at=event.occurred_at,
            submission_id=payload.submission_id,
        )
        log.info(
            "contribution_recorded", partner_id=event.partner_id, kind=payload.kind, items=payload.items, new=inserted
        )
        return []

    def _on_round_started(self, event: EventEnvelope[Any], connection: Connection) -> list[EventEnvelope[Any]]:
        payload = event.payload
        round_id = budgets.round_id_for(payload.run_id, payload.round)
        started = budgets.mark_started(connection, round_id=round_id, partner_ids=payload.cohort)
        reserved = set(
            connection.execute(
                select(privacy_spends.c.partner_id).where(
                    privacy_spends.c.round_id == round_id, privacy_spends.c.partner_id.in_(list(payload.cohort))
                )
            ).scalars()
        )
        for partner_id in sorted(set(payload.cohort) - reserved):
            # Dead-lettering the event would lose the started marks of everyone else in the cohort,
            # so a cohort member without a reservation is reported, not raised.
            known = get_partner(connection, partner_id, required=False) is not None
            log.error("training_without_reservation", partner_id=partner_id, round_id=round_id, known_partner=known)
        log.info("round_started", round_id=round_id, marked=len(started))
        return budgets.take_budget_alerts(connection, causation=event)

    def _on_update_masked(self, event: EventEnvelope[Any], connection: Connection) -> list[EventEnvelope[Any]]:
        payload = event.payload
        get_partner(connection, event.partner_id)  # UnknownPartner: permanent
        round_id = budgets.round_id_for(payload.run_id, payload.round)
        spend = budgets.commit(connection, partner_id=event.partner_id, round_id=round_id)
        if spend.model_version != payload.model_version:
            log.warning(
                "update_model_version_mismatch",
                partner_id=event.partner_id,
                round_id=round_id,
                reserved_for=spend.model_version,
                update_for=payload.model_version,
            )
        record_contribution(
            connection,
            event_id=event.event_id,
            partner_id=event.partner_id,
            kind="update",
            items=1,
            occurred_at=event.occurred_at,
            model_version=spend.model_version,
            round_id=round_id,
        )
        return budgets.take_budget_alerts(connection, causation=event)

    def _on_round_completed(self, event: EventEnvelope[Any], connection: Connection) -> list[EventEnvelope[Any]]:
        payload = event.payload
        round_id = budgets.round_id_for(payload.run_id, payload.round)
        # Participants certainly trained, even if this event overtook round.started on another worker.
        budgets.mark_started(connection, round_id=round_id, partner_ids=payload.participants)
        rows = connection.execute(
            select(privacy_spends.c.partner_id, privacy_spends.c.training_started)
            .where(privacy_spends.c.round_id == round_id, privacy_spends.c.status == "reserved")
            .order_by(privacy_spends.c.partner_id)
        ).all()
        for partner_id, training_started in rows:
            if training_started:
                # The partner trained (even if its update never arrived): the cost is real.
                budgets.commit(connection, partner_id=partner_id, round_id=round_id)
            else:
                budgets.release(connection, partner_id=partner_id, round_id=round_id)
        log.info("round_closed", round_id=round_id, settled=len(rows), failed=payload.failed)
        return budgets.take_budget_alerts(connection, causation=event)
