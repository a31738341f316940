"""Shared pieces of the broker tests: a counting SQL handler, queue inspection, polling."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from sqlalchemy import Connection, Engine, text

from mshale_fl.schemas.events import EventEnvelope
from mshale_fl.store import create_store_engine, migrate

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


async def ready_count(connection: AbstractConnection, queue: str) -> int:
    """Messages ready in a queue (not counting unacked ones)."""
    channel = await connection.channel(publisher_confirms=False)
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def take(connection: AbstractConnection, queue: str, expected: int, timeout: float = 10.0) -> list[AbstractIncomingMessage]:
    """Get (and ack) `expected` messages from a queue with basic.get, waiting up to `timeout`."""
    channel = await connection.channel(publisher_confirms=False)
    messages: list[AbstractIncomingMessage] = []
    deadline = time.monotonic() + timeout
    try:
        q = await channel.get_queue(queue)
        while len(messages) < expected and time.monotonic() < deadline:
            message = await q.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            messages.append(message)
    finally:
        await channel.close()
    return messages


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def close_vhost_connections(vhost: str) -> None:
    """What an operator (or a broker restart) does to us: drop every connection of the vhost."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "close_all_connections", "--vhost", vhost, "test",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
