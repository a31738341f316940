"""The ledger worker: applies events to the ledger through the inbox, exactly once each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from mshale_fl.broker import InboxProcessor, PermanentError
from mshale_fl.config import Settings
from mshale_fl.ledger import LedgerHandler, open_ledger
from mshale_fl.ledger.errors import PermanentLedgerError
from mshale_fl.schemas.events import EventEnvelope


class LedgerWorkerHandler:
    """`LedgerHandler` whose never-applicable events are dead-lettered by the consumer runtime."""

    def __init__(self, handler: LedgerHandler | None = None) -> None:
        self.handler = handler or LedgerHandler()
        self.consumer_name = self.handler.consumer_name

    def handle(self, event: EventEnvelope[Any], connection: Connection) -> Sequence[EventEnvelope[Any]]:
        try:
            return self.handler.handle(event, connection)
        except PermanentLedgerError as error:
            raise PermanentError(f"ledger.{type(error).__name__.lower()}", str(error)) from error


def ledger_processor(settings: Settings) -> InboxProcessor:
    # Opacus (and torch under it) takes seconds to import; doing it inside the first budget
    # transaction would hold the ledger's write lock that long, so import it before consuming.
    import opacus.accountants.analysis.rdp  # noqa: F401

    return InboxProcessor(LedgerWorkerHandler(), open_ledger(settings=settings))
