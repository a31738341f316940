"""The consumer runtime's optional `reject_invalid` hook, on the real broker: an unparseable body can be answered.

Generic (no validator here): a processor that owes its sender an answer gets the raw body, the
delivery (with the broker-verified user_id) and the parse error; what it returns is published with
confirms; the body is dead-lettered with its reason whatever the hook did.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aio_pika
import pytest
from pamqp.commands import Basic
from pydantic import ValidationError

from mshale_fl.broker import (
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    ConsumerRuntime,
    Delivery,
    PermanentError,
    Publisher,
    current_delivery,
    declare_topology,
)
from mshale_fl.broker.consumer import InvalidMessageHook, Processor
from mshale_fl.schemas.events import EventEnvelope, new_event, parse_event
from mshale_fl.schemas.payloads import Reason, SubmissionRejected
from mshale_fl.testing.broker import eventually, take

pytestmark = pytest.mark.rabbitmq

QUEUE = "mshale.validate"
BAD_BODY = b'{"event_id": "0b0e7f5a-91c4-5e2d-8a6b-4c1d9e2f7a31", "type": "vectors.submitted", "payload": {}}'


class Answering:
    """A processor whose hook answers every unparseable body with a rejection to the broker-verified sender."""

    consumer_name = "hook-test"

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls: list[tuple[bytes, Delivery, type[BaseException], Delivery | None]] = []
        self.processed: list[EventEnvelope[Any]] = []

    async def process(self, event: EventEnvelope[Any]) -> Sequence[EventEnvelope[Any]]:
        self.processed.append(event)
        return []

    def _answer(self, body: bytes, delivery: Delivery, error: ValueError) -> list[EventEnvelope[Any]]:
        self.calls.append((body, delivery, type(error), current_delivery()))
        if self.mode == "refuse":
            raise PermanentError("hook.not_answered", "no answer for this one")
        if self.mode == "flaky" and len(self.calls) == 1:
            raise RuntimeError("the database went away for a moment")
        payload = SubmissionRejected(submission_id=uuid.UUID(int=1), kind="unknown",
                                     reasons=[Reason(code="event.invalid", message=str(error)[:200])])  # fmt: skip
        return [new_event("submission.rejected", payload, partner_id=delivery.user_id or "mishale", event_id=uuid.UUID(int=2))]

    def reject_invalid(self, body: bytes, delivery: Delivery, error: ValueError) -> Any:
        if self.mode == "async":
            return self._answer_later(body, delivery, error)
        return self._answer(body, delivery, error)

    async def _answer_later(self, body: bytes, delivery: Delivery, error: ValueError) -> list[EventEnvelope[Any]]:
        await asyncio.sleep(0)
        return self._answer(body, delivery, error)


@pytest.fixture
async def connection(broker_url: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    connection = await aio_pika.connect(broker_url)
    await declare_topology(connection, delivery_limit=5)
    yield connection
    await connection.close()


@pytest.mark.parametrize("mode", ["sync", "async", "refuse", "flaky"])
async def test_an_unparseable_body_is_offered_to_the_hook_then_dead_lettered(
    connection: aio_pika.abc.AbstractConnection, mode: str
) -> None:
    processor = Answering(mode)
    assert isinstance(processor, Processor) and isinstance(processor, InvalidMessageHook)
    channel = await connection.channel()
    answers = await channel.declare_queue("test.answers", exclusive=True)
    await answers.bind(EVENTS_EXCHANGE, routing_key="guest.submission.rejected")
    publisher = await Publisher.open(connection, window=8)
    runtime = ConsumerRuntime(connection, QUEUE, processor, publisher=publisher, prefetch=4, retry_delay=0)
    await runtime.start()
    try:
        await publisher.publish_raw(BAD_BODY, exchange=EVENTS_EXCHANGE, routing_key="lab-a.vectors.submitted",
                                    properties=Basic.Properties(content_type="application/json", user_id="guest"))  # fmt: skip
        (dead,) = await take(connection, DEAD_LETTER_QUEUE, expected=1, timeout=15)
        answered = [parse_event(m.body) async for m in _drain(answers)] if mode != "refuse" else []
        if mode != "refuse":
            await eventually(lambda: runtime.stats.outputs_published == 1, timeout=10)
    finally:
        await runtime.stop(grace=2)
        await publisher.close()

    assert dead.body == BAD_BODY and dead.headers["x-mshale-reason"] == "invalid_event"
    assert "payload" in str(dead.headers["x-mshale-detail"])
    assert processor.processed == []
    body, delivery, error_type, seen_in_context = processor.calls[-1]
    assert body == BAD_BODY and error_type is ValidationError
    assert (delivery.user_id, delivery.routing_key, delivery.queue) == ("guest", "lab-a.vectors.submitted", QUEUE)
    assert seen_in_context == delivery  # current_delivery() works inside the hook too
    if mode == "refuse":
        assert len(processor.calls) == 1 and runtime.stats.outputs_published == 0
    else:
        assert len(processor.calls) == (2 if mode == "flaky" else 1)  # a transient failure is retried, not dropped
        assert [event.partner_id for event in answered] == ["guest"]
    assert runtime.stats.dead_lettered == 1


async def _drain(queue: aio_pika.abc.AbstractQueue) -> AsyncIterator[aio_pika.abc.AbstractIncomingMessage]:
    found = []

    async def arrived() -> bool:
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            found.append(message)
        return bool(found)

    await eventually(arrived, timeout=10)
    for message in found:
        yield message
