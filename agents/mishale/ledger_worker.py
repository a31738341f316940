"""The ledger worker: applies events to the ledger through the inbox, exactly once each.

Every event the ledger consumes is Mishale's own (receipts of the validator, rounds and updates of
the training server, its own budget alerts), never a partner's. A partner's broker user may publish
any routing key under its own prefix, so `<partner>.submission.accepted` or
`<partner>.update.masked` would reach this queue; the broker-checked sender (`user_id`) is what
tells them apart: an event with no `user_id`, or sent by a partner's broker user, is dead-lettered
(`ledger.forged_sender`) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from mshale_fl.agents.mishale.senders import refuse_partner_senders
from mshale_fl.broker import InboxProcessor, PermanentError
from mshale_fl.config import Settings
from mshale_fl.ledger import LedgerHandler, open_ledger
from mshale_fl.ledger.errors import PermanentLedgerError
from mshale_fl.schemas.events import EventEnvelope

FORGED_SENDER = "ledger.forged_sender"


class LedgerWorkerHandler:
    """`LedgerHandler` whose never-applicable events are dead-lettered by the consumer runtime."""

    def __init__(self, handler: LedgerHandler | None = None) -> None:
        self.handler = handler or LedgerHandler()
        self.consumer_name = self.handler.consumer_name

    def handle(self, event: EventEnvelope[Any], connection: Connection) -> Sequence[EventEnvelope[Any]]:
        refuse_partner_senders(event, connection, FORGED_SENDER)
        try:
            return self.handler.handle(event, connection)
        except PermanentLedgerError as error:
            raise PermanentError(f"ledger.{type(error).__name__.lower()}", str(error)) from error


def ledger_processor(settings: Settings) -> InboxProcessor:
    # Opacus (and torch under it) takes seconds to import; doing it inside the first budget
    # transaction would hold the ledger's write lock that long, so import it before consuming.
    import opacus.accountants.analysis.rdp  # noqa: F401

    return InboxProcessor(LedgerWorkerHandler(), open_ledger(settings=settings))
