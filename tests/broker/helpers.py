"""Shared pieces of the broker tests: a counting SQL handler, queue inspection, polling."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mshale_fl.schemas.events import EventEnvelope
from sqlalchemy import Connection, Engine, text

from mshale_fl.store import create_store_engine, migrate
from mshale_fl.testing.broker import (  # noqa: F401  (re-exported for the broker tests)
    close_vhost_connections,
    eventually,
    ready_count,
    take,
)

EFFECTS_DDL = "CREATE TABLE IF NOT EXISTS effects (event_id TEXT NOT NULL, type TEXT NOT NULL)"


def make_engine(path: Path) -> Engine:
    """A migrated SQLite ledger with an `effects` table that has NO uniqueness: duplicates would show."""
    engine = create_store_engine(f"sqlite:///{path}")
    migrate(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql(EFFECTS_DDL)
    return engine


class CountingHandler:
    """A SqlHandler whose effect is one row in `effects`, written inside the inbox transaction."""

    def __init__(
        self,
        consumer_name: str = "test-consumer",
        outputs: Callable[[EventEnvelope[Any]], Sequence[EventEnvelope[Any]]] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.consumer_name = consumer_name
        self._outputs = outputs
        self._delay = delay
        self.calls = 0

    def handle(self, event: EventEnvelope[Any], connection: Connection) -> Sequence[EventEnvelope[Any]]:
        self.calls += 1
        if self._delay:
            time.sleep(self._delay)
        connection.execute(
            text("INSERT INTO effects (event_id, type) VALUES (:id, :type)"), {"id": str(event.event_id), "type": event.type}
        )
        return list(self._outputs(event)) if self._outputs else []


def _read(engine: Engine, query: str) -> list[tuple[Any, ...]]:
    # A plain read transaction: the store's engine begins every transaction IMMEDIATE (write
    # lock), which would make the test's polling compete with the worker it is watching.
    connection = sqlite3.connect(str(engine.url.database), timeout=30)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def effect_counts(engine: Engine) -> tuple[int, int]:
    """(rows, distinct event ids) in `effects`."""
    ((rows, distinct),) = _read(engine, "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM effects")
    return int(rows), int(distinct)


def effect_ids(engine: Engine) -> set[str]:
    return {row[0] for row in _read(engine, "SELECT event_id FROM effects")}


class RecordingProcessor:
    """A Processor without SQL: remembers every event it was given."""

    def __init__(self, consumer_name: str = "recorder") -> None:
        self.consumer_name = consumer_name
        self.events: list[EventEnvelope[Any]] = []

    async def process(self, event: EventEnvelope[Any]) -> Sequence[EventEnvelope[Any]]:
        self.events.append(event)
        return []

