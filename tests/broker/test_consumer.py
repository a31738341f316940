"""The consumer runtime: round trips, dead-lettering with reasons, retries, exactly-once effects."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from pamqp.commands import Basic

from mshale_fl.broker import (
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    ROLES,
    ConsumerRuntime,
    InboxProcessor,
    PermanentError,
    Publisher,
    current_delivery,
    declare_topology,
)
from mshale_fl.schemas import EVENT_TYPES
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.payloads import SubmissionAccepted
from mshale_fl.testing.samples import sample_event

from .helpers import CountingHandler, RecordingProcessor, effect_counts, eventually, make_engine, ready_count, take

pytestmark = pytest.mark.rabbitmq

def _accepted(event: EventEnvelope[Any]) -> list[EventEnvelope[Any]]:
    payload = SubmissionAccepted(submission_id=event.event_id, kind="spec", items=1)
    return [new_event("submission.accepted", payload, partner_id=event.partner_id, causation=event)]

async def _runtime(connection, publisher, queue, processor, **kwargs) -> ConsumerRuntime:
    runtime = ConsumerRuntime(connection, queue, processor, publisher=publisher, prefetch=16, retry_delay=0, **kwargs)
    await runtime.start()
    return runtime

async def test_every_event_type_round_trips_to_the_queues_that_bind_it(connection, publisher) -> None:
    sent = {t: sample_event(t, partner_id="lab-c") for t in EVENT_TYPES}
    await publisher.publish_many(list(sent.values()))
    for role in ROLES:
        await eventually(lambda role=role: _count_is(connection, role.queue, len(role.event_types)))

    recorder = RecordingProcessor()
    runtime = await _runtime(connection, publisher, "mshale.audit", recorder)
    await eventually(lambda: len(recorder.events) == len(EVENT_TYPES))
    await runtime.stop(grace=2)
    received = {event.type: event for event in recorder.events}
    assert received == sent  # equal models: every field survived, and each parsed to its own class
    assert {type(e) for e in received.values()} == {type(e) for e in sent.values()}
    assert runtime.stats.acked == len(EVENT_TYPES)
    assert await ready_count(connection, "mshale.audit") == 0

async def _count_is(connection, queue: str, expected: int) -> bool:
    return await ready_count(connection, queue) == expected

async def test_an_invalid_event_is_dead_lettered_with_its_reason_and_the_consumer_goes_on(
    connection, publisher, tmp_path
) -> None:
    engine = make_engine(tmp_path / "ledger.sqlite3")
    runtime = await _runtime(connection, publisher, "mshale.ledger", InboxProcessor(CountingHandler(), engine))
    bad = sample_event("budget.low").model_dump(mode="json")
    bad["payload"]["fraction_remaining"] = 7.5  # out of bounds
    properties = Basic.Properties(message_id="bad-1", content_type="application/json", delivery_mode=2, user_id="guest")

    for body in (json.dumps(bad).encode(), b"not json at all"):
        await publisher.publish_raw(body, exchange=EVENTS_EXCHANGE, routing_key="lab-a.budget.low", properties=properties)
    good = sample_event("budget.low")
    await publisher.publish(good)

    await eventually(lambda: effect_counts(engine) == (1, 1))
    dead = await take(connection, DEAD_LETTER_QUEUE, 2)
    await runtime.stop(grace=2)
    assert [m.headers["x-mshale-reason"] for m in dead] == ["invalid_event", "invalid_event"]
    assert "fraction_remaining" in dead[0].headers["x-mshale-detail"]
    for message in dead:
        assert message.headers["x-mshale-queue"] == "mshale.ledger"
        assert message.headers["x-mshale-consumer"] == "test-consumer"
        assert message.headers["x-mshale-routing-key"] == "lab-a.budget.low"
        assert message.message_id == "bad-1"
    assert dead[1].body == b"not json at all"  # the copy is the original, byte for byte
    assert runtime.stats.dead_lettered == 2 and runtime.stats.acked == 1
    assert await ready_count(connection, "mshale.ledger") == 0  # the originals were acked, not requeued

async def test_a_permanent_error_from_the_handler_dead_letters_at_once_with_its_code(connection, publisher, tmp_path) -> None:
    engine = make_engine(tmp_path / "ledger.sqlite3")

    class Refusing(CountingHandler):
        def handle(self, event, connection):
            super().handle(event, connection)  # written, then rolled back with the transaction
            raise PermanentError("partner.unknown", "no such partner in the ledger")

    handler = Refusing()
    runtime = await _runtime(connection, publisher, "mshale.ledger", InboxProcessor(handler, engine))
    await publisher.publish(sample_event("partner.paused"))
    (dead,) = await take(connection, DEAD_LETTER_QUEUE, 1)
    await runtime.stop(grace=2)
    assert dead.headers["x-mshale-reason"] == "partner.unknown"
    assert dead.headers["x-mshale-detail"] == "no such partner in the ledger"
    assert handler.calls == 1  # not retried
    assert effect_counts(engine) == (0, 0)  # the effect rolled back with the inbox row

async def test_a_handler_that_always_fails_transiently_is_dead_lettered_after_the_delivery_limit(
    broker_url, vhost, connection, settings
) -> None:
    limit = 2
    await declare_topology(connection, delivery_limit=limit)
    publisher = await Publisher.open(connection, window=8)
    seen_counts: list[int] = []

    class Flaky:
        consumer_name = "flaky"

        async def process(self, event):
            delivery = current_delivery()
            assert delivery is not None
            seen_counts.append(delivery.delivery_count)
            raise ConnectionError("database is down")

    runtime = await _runtime(connection, publisher, "mshale.predict", Flaky())
    event = sample_event("prediction.requested")
    await publisher.publish(event)
    (dead,) = await take(connection, DEAD_LETTER_QUEUE, 1)
    await runtime.stop(grace=2)
    assert dead.message_id == str(event.event_id)
    death = dead.headers["x-death"][0]
    assert death["reason"] == "delivery_limit"
    assert death["queue"] == "mshale.predict"
    assert seen_counts == list(range(limit + 1))  # the first delivery plus `limit` redeliveries
    assert "x-mshale-reason" not in dead.headers  # the broker dead-lettered it, not the runtime
    await publisher.close()

async def test_a_redelivered_event_has_one_effect_and_its_outputs_keep_their_ids(connection, publisher, tmp_path) -> None:
    engine = make_engine(tmp_path / "ledger.sqlite3")
    handler = CountingHandler(outputs=_accepted)
    inbox = InboxProcessor(handler, engine)
    failures = {"left": 1}

    class LosesTheFirstAck:
        """Applies the effect, then fails as if the worker died before publishing and acking."""

        consumer_name = inbox.consumer_name

        async def process(self, event):
            outputs = await inbox.process(event)
            if failures["left"]:
                failures["left"] -= 1
                raise TimeoutError("lost the broker after the commit")
            return outputs

    runtime = await _runtime(connection, publisher, "mshale.validate", LosesTheFirstAck())
    submitted = sample_event("spec.submitted")
    await publisher.publish(submitted)
    await publisher.publish(submitted)  # and a duplicate publish, as after a lost confirm
    outputs = await take(connection, "mshale.ledger", 2)
    await eventually(lambda: runtime.stats.acked == 2)
    await runtime.stop(grace=2)

    assert effect_counts(engine) == (1, 1)
    assert handler.calls == 1
    assert inbox.replayed == 2
    ids = {m.message_id for m in outputs}
    assert len(ids) == 1, "a re-published output keeps the event id recorded with the effect"
    assert all(m.correlation_id == str(submitted.correlation_id) for m in outputs)

async def test_outputs_are_published_before_the_ack(connection, publisher, tmp_path) -> None:
    engine = make_engine(tmp_path / "ledger.sqlite3")
    runtime = await _runtime(connection, publisher, "mshale.validate", InboxProcessor(CountingHandler(outputs=_accepted), engine))
    events = [sample_event("spec.submitted", seed=i) for i in range(20)]
    await publisher.publish_many(events)
    await eventually(lambda: runtime.stats.acked == 20)
    # Every ack was preceded by a confirmed output: all 20 are routed already.
    assert await ready_count(connection, "mshale.ledger") == 20
    await runtime.stop(grace=2)
    await asyncio.sleep(0)


async def test_coalesced_acks_never_cover_a_delivery_that_is_still_being_processed(connection, publisher) -> None:
    # Deliveries finish out of order; an ack covering an unfinished one would lose it (acked,
    # never processed). Every event must be processed, once, and the queue left empty.
    class Jittery:
        consumer_name = "jittery"

        def __init__(self) -> None:
            self.seen: list[str] = []

        async def process(self, event):
            await asyncio.sleep(random.choice((0, 0, 0.001, 0.004)))
            self.seen.append(str(event.event_id))
            return []

    events = [sample_event("budget.low", seed=i) for i in range(400)]
    await publisher.publish_many(events)
    jittery = Jittery()
    runtime = await _runtime(connection, publisher, "mshale.ledger", jittery)
    await eventually(lambda: runtime.stats.acked == len(events))
    frames = sum(batcher.frames for batcher in runtime._ack_batchers.values())
    await runtime.stop(grace=2)
    assert sorted(jittery.seen) == sorted(str(e.event_id) for e in events)
    assert await ready_count(connection, "mshale.ledger") == 0
    assert frames < len(events), "finished runs of deliveries are acked together"


async def test_sql_handlers_see_the_verified_sender_of_the_delivery(connection, publisher, tmp_path) -> None:
    engine = make_engine(tmp_path / "ledger.sqlite3")
    seen = []

    class Identifying(CountingHandler):
        def handle(self, event, connection):
            seen.append(current_delivery())
            return super().handle(event, connection)

    runtime = await _runtime(connection, publisher, "mshale.ledger", InboxProcessor(Identifying(), engine))
    await publisher.publish(sample_event("budget.low", partner_id="lab-e"))
    await eventually(lambda: runtime.stats.acked == 1)
    await runtime.stop(grace=2)
    (delivery,) = seen
    assert delivery.user_id == "guest"  # checked by RabbitMQ against the publishing connection
    assert delivery.routing_key == "lab-e.budget.low"
    assert delivery.queue == "mshale.ledger"
    assert (delivery.redelivered, delivery.delivery_count) == (False, 0)
