"""Fixtures of the agent tests: the Tier 1 fixtures (ledger, partners on a throw-away vhost), and an observer on `#`.

Imported rather than copied, so the agent's partners are registered as in Tiers 1 and 2. The
observer here is a durable queue read with fresh connections at the end: the agent tests drop
every connection of the vhost on purpose, and run synchronously around real processes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest
from tier1.conftest import (  # noqa: F401  (pytest finds fixtures by name in this module)
    admin,
    broker_users,
    engine,
    ledger_url,
    register,
    settings,
)

from mshale_fl.broker import EVENTS_EXCHANGE, declare_topology
from mshale_fl.schemas.events import EventEnvelope, parse_event

BUS_QUEUE = "test.agent.observer"


async def _declare(broker_url: str) -> None:
    connection = await aio_pika.connect(broker_url)
    try:
        await declare_topology(connection, delivery_limit=5)
        channel = await connection.channel()
        queue = await channel.declare_queue(BUS_QUEUE, durable=True)
        await queue.bind(EVENTS_EXCHANGE, routing_key="#")
    finally:
        await connection.close()


async def _drain(broker_url: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(broker_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(BUS_QUEUE)
        messages = []
        while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
            messages.append(message)
        return messages
    finally:
        await connection.close()


class Bus:
    """Everything published on `mshale.events` since the fixture was set up (the topology is declared first)."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.seen: list[aio_pika.abc.AbstractIncomingMessage] = []

    def messages(self) -> list[aio_pika.abc.AbstractIncomingMessage]:
        self.seen.extend(asyncio.run(_drain(self.broker_url)))
        return list(self.seen)

    def events(self, event_type: str) -> list[EventEnvelope[Any]]:
        """The events of one type seen so far (receipt requests, RPCs on the same exchange, are not events)."""
        messages = self.messages()
        return [parse_event(m.body) for m in messages if m.routing_key and m.routing_key.endswith(f".{event_type}")]


@pytest.fixture
def bus(broker_url: str) -> Bus:
    asyncio.run(_declare(broker_url))
    return Bus(broker_url)
