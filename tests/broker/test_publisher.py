"""The confirmed publisher: properties, returns raised, unknown types kept, identity enforced."""

from __future__ import annotations

import asyncio
import json

import pytest
from pamqp.commands import Basic

from mshale_fl.broker import (
    EVENTS_EXCHANGE,
    UNROUTABLE_QUEUE,
    Publisher,
    PublishForbiddenError,
    UnroutableError,
)
from mshale_fl.testing.samples import sample_event

from .helpers import ready_count, take

pytestmark = pytest.mark.rabbitmq


async def test_published_event_carries_the_contract_properties(connection, publisher) -> None:
    event = sample_event("submission.accepted", partner_id="lab-b")
    await publisher.publish(event)
    (message,) = await take(connection, "mshale.ledger", 1)
    assert message.routing_key == "lab-b.submission.accepted"
    assert message.exchange == EVENTS_EXCHANGE
    assert message.message_id == str(event.event_id)
    assert message.correlation_id == str(event.correlation_id)
    assert message.type == "submission.accepted"
    assert message.content_type == "application/json"
    assert message.delivery_mode == 2
    assert message.user_id == "guest"
    assert message.timestamp is not None
    assert json.loads(message.body) == event.model_dump(mode="json")


async def test_unroutable_publish_raises_with_the_routing_key(publisher) -> None:
    # The default exchange has no alternate exchange: a key naming no queue is returned
    # (this is what a reply to a vanished RPC reply queue does).
    event = sample_event("prediction.ready")
    properties = Basic.Properties(message_id=str(event.event_id), delivery_mode=2)
    with pytest.raises(UnroutableError) as caught:
        await publisher.publish_raw(b"{}", exchange="", routing_key="amq.gen-gone-reply-queue", properties=properties)
    assert caught.value.routing_key == "amq.gen-gone-reply-queue"
    assert caught.value.reply_code == 312
    assert caught.value.message_id == str(event.event_id)
    # The publisher stays usable after a return.
    await publisher.publish(sample_event("budget.low"))


async def test_unknown_event_type_on_the_events_exchange_lands_in_the_unroutable_queue(connection, publisher) -> None:
    properties = Basic.Properties(message_id="unknown-1", content_type="application/json", delivery_mode=2)
    body = b'{"type": "budget.gone"}'
    await publisher.publish_raw(body, exchange=EVENTS_EXCHANGE, routing_key="lab-a.budget.gone", properties=properties)
    (message,) = await take(connection, UNROUTABLE_QUEUE, 1)
    assert message.routing_key == "lab-a.budget.gone"
    assert message.message_id == "unknown-1"
    # ...and reached no worker queue (the publish was confirmed, so routing is done).
    assert await ready_count(connection, "mshale.audit") == 0


async def test_publish_many_pipelines_and_reports_progress(connection, topology) -> None:
    publisher = await Publisher.open(connection, window=16)
    events = [sample_event("budget.low", seed=i) for i in range(300)]
    seen: list[int] = []
    peak = 0
    original_send = publisher._send

    async def tracking_send(*args, **kwargs):  # measures how many confirms are awaited at once
        nonlocal peak
        peak = max(peak, publisher._in_flight)
        return await original_send(*args, **kwargs)

    publisher._send = tracking_send  # type: ignore[method-assign]
    confirmed = await publisher.publish_many(events, progress=lambda done, total: seen.append(done))
    assert confirmed == 300
    assert seen == list(range(1, 301))
    assert 1 < peak <= 16, "confirms must be pipelined, within the window"
    received = await take(connection, "mshale.ledger", 300)
    assert [m.message_id for m in received] == [str(e.event_id) for e in events]
    await publisher.close()


async def test_a_forged_user_id_is_refused_by_the_broker(connection, topology) -> None:
    forger = await Publisher.open(connection, window=4, user_id="lab-b")
    with pytest.raises(PublishForbiddenError, match="user_id"):
        await asyncio.wait_for(forger.publish(sample_event("spec.submitted", partner_id="lab-b")), timeout=10)
    await forger.close()
