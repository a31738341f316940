"""Connection loss in the middle of publishing and of consuming: nothing lost, no effect twice."""

from __future__ import annotations

import asyncio

import pytest

from mshale_fl.broker import ConsumerRuntime, InboxProcessor, Publisher, connect, declare_topology
from mshale_fl.testing.samples import sample_event

from .helpers import CountingHandler, close_vhost_connections, effect_counts, effect_ids, eventually, make_engine, ready_count

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

BATCH = 500
AT_LEAST = 3000


async def test_close_all_connections_while_publishing_and_while_consuming(broker_url, vhost, settings, tmp_path) -> None:
    connection = await connect(broker_url, name="resilience")
    reconnects = 0

    def count_reconnect(*_: object) -> None:
        nonlocal reconnects
        reconnects += 1

    connection.reconnect_callbacks.add(count_reconnect)
    try:
        await declare_topology(connection, delivery_limit=settings.delivery_limit)
        publisher = await Publisher.open(connection, window=settings.publish_window)

        # -- publishing: drop the connection once a few batches are through, keep publishing.
        published: list[str] = []
        kill: asyncio.Task[None] | None = None
        while len(published) < AT_LEAST or kill is None or not kill.done():
            if kill is None and len(published) >= BATCH:
                kill = asyncio.create_task(close_vhost_connections(vhost))
            batch = [sample_event("budget.low", seed=len(published) + i) for i in range(BATCH)]
            await publisher.publish_many(batch)
            published.extend(str(e.event_id) for e in batch)
        assert kill is not None
        await kill
        await eventually(lambda: reconnects >= 1)
        assert publisher.retried > 0, "the connection must have dropped with publishes in flight"
        # At least once: a publish whose confirm was lost with the connection is sent again.
        assert await ready_count(connection, "mshale.ledger") >= len(published)

        # -- consuming: drop it again mid-way.
        engine = make_engine(tmp_path / "ledger.sqlite3")
        handler = CountingHandler(delay=0.0005)
        runtime = ConsumerRuntime(
            connection, "mshale.ledger", InboxProcessor(handler, engine), publisher=publisher, prefetch=settings.prefetch
        )
        await runtime.start()
        await eventually(lambda: effect_counts(engine)[0] >= len(published) // 4, timeout=30)
        await close_vhost_connections(vhost)
        await eventually(lambda: reconnects >= 2)
        await eventually(lambda: effect_counts(engine)[1] == len(published), timeout=60)
        await eventually(lambda: _drained(connection), timeout=30)
        await runtime.stop(grace=5)
        rows, distinct = effect_counts(engine)
        lost = len(set(published) - effect_ids(engine))
        duplicates = rows - distinct
        assert (lost, duplicates) == (0, 0)
        # Duplicates from the broker and redeliveries after the drop were answered by the inbox,
        # without running the handler again.
        assert handler.calls == len(published)
        await publisher.close()
    finally:
        await connection.close()


async def _drained(connection) -> bool:
    return await ready_count(connection, "mshale.ledger") == 0
