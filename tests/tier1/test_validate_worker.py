"""`worker validate` on the real broker: receipts with reasons, dead-lettering, identity from the broker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from pamqp.commands import Basic

from mshale_fl.agents.mishale.validate import validate_processor
from mshale_fl.broker import DEAD_LETTER_QUEUE, EVENTS_EXCHANGE, Publisher
from mshale_fl.broker.publisher import encode_event, event_properties
from mshale_fl.config import Settings
from mshale_fl.schemas.events import EventEnvelope, new_event, parse_event
from mshale_fl.schemas.payloads import SpecSubmitted, VectorsSubmitted
from mshale_fl.schemas.vocabulary import Sensitivity
from mshale_fl.testing.broker import eventually, take
from mshale_fl.testing.samples import sample_spec

from .conftest import Register, partner_url
from .support import layout_vector, worker_in_process, worker_process

pytestmark = pytest.mark.rabbitmq


async def receipt_queue(connection: aio_pika.abc.AbstractConnection, partner_id: str) -> aio_pika.abc.AbstractQueue:
    channel = await connection.channel()
    queue = await channel.declare_queue(f"test.receipts.{partner_id}", exclusive=True)
    await queue.bind(EVENTS_EXCHANGE, routing_key=f"{partner_id}.submission.*")
    return queue


async def receipts(queue: aio_pika.abc.AbstractQueue, expected: int) -> dict[uuid.UUID, EventEnvelope[Any]]:
    found: dict[uuid.UUID, EventEnvelope[Any]] = {}

    async def arrived() -> bool:
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            event = parse_event(message.body)
            found[event.payload.submission_id] = event
        return len(found) >= expected

    await eventually(arrived, timeout=30)
    return found


def spec(partner_id: str, label: Sensitivity, seed: int = 0) -> EventEnvelope[Any]:
    return new_event("spec.submitted", SpecSubmitted(sensitivity=label, spec=sample_spec(seed)), partner_id=partner_id)


def reason_codes(receipt: EventEnvelope[Any]) -> list[str]:
    return [reason.code for reason in receipt.payload.reasons] if receipt.type == "submission.rejected" else []


async def test_a_partner_sending_what_it_may_not_gets_its_reasons_back(
    vhost: str, settings: Settings, register: Register, mishale: aio_pika.abc.AbstractConnection
) -> None:
    alice = register(tier=1)
    partner_id = alice.partner.id
    queue = await receipt_queue(mishale, partner_id)
    # Published directly as the partner (its own broker user, user_id set): the agent's checks bypassed.
    partner = await aio_pika.connect(partner_url(vhost, alice))
    publisher = await Publisher.open(partner, window=16)
    sent = {
        "published": spec(partner_id, Sensitivity.PUBLISHED, 1),
        "internal": spec(partner_id, Sensitivity.INTERNAL, 2),
        "full-ip": spec(partner_id, Sensitivity.FULL_IP, 3),
        "vectors": new_event("vectors.submitted", VectorsSubmitted(sensitivity=Sensitivity.PUBLISHED, vectors=[layout_vector()]),
                             partner_id=partner_id),  # fmt: skip
    }
    async with worker_in_process("validate", validate_processor(settings), settings):
        await publisher.publish_many(list(sent.values()))
        found = await receipts(queue, len(sent))
    await partner.close()
    by_name = {name: found[event.event_id] for name, event in sent.items()}
    assert by_name["published"].type == "submission.accepted"
    assert reason_codes(by_name["internal"]) == ["sensitivity.not_transmittable"]
    assert reason_codes(by_name["full-ip"]) == ["sensitivity.not_transmittable"]
    assert reason_codes(by_name["vectors"]) == ["tier.not_granted"]
    assert {receipt.partner_id for receipt in found.values()} == {partner_id}


async def test_the_sender_must_be_the_partner_the_event_names(
    settings: Settings, register: Register, mishale: aio_pika.abc.AbstractConnection
) -> None:
    bob = register(tier=1, on_broker=False)
    queue = await receipt_queue(mishale, bob.partner.id)
    guest = await Publisher.open(mishale, window=16)  # Mishale's own user, not bob's
    as_guest = spec(bob.partner.id, Sensitivity.PUBLISHED, 1)
    unsigned = spec(bob.partner.id, Sensitivity.PUBLISHED, 2)
    async with worker_in_process("validate", validate_processor(settings), settings):
        await guest.publish(as_guest)
        await guest.publish_raw(encode_event(unsigned), exchange=EVENTS_EXCHANGE, routing_key=unsigned.routing_key,
                                properties=event_properties(unsigned, user_id=None))  # fmt: skip
        found = await receipts(queue, 2)
    assert reason_codes(found[as_guest.event_id]) == ["sender.mismatch"]
    assert "guest" in found[as_guest.event_id].payload.reasons[0].message
    assert reason_codes(found[unsigned.event_id]) == ["sender.unverified"]


async def test_unparseable_messages_are_dead_lettered_and_the_worker_process_keeps_going(
    tmp_path: Path, broker_url: str, ledger_url: str, register: Register, mishale: aio_pika.abc.AbstractConnection
) -> None:
    carol = register(tier=1, on_broker=False)
    queue = await receipt_queue(mishale, carol.partner.id)
    guest = await Publisher.open(mishale, window=16)
    good = spec(carol.partner.id, Sensitivity.PUBLISHED, 5)
    free_text = encode_event(spec(carol.partner.id, Sensitivity.PUBLISHED, 6)).replace(
        b'"operation":"add"', b'"operation":"add","note":"Kestrelwood buffer"')  # fmt: skip
    assert free_text != encode_event(spec(carol.partner.id, Sensitivity.PUBLISHED, 6))
    with worker_process("validate", broker_url, ledger_url, tmp_path / "mishale") as worker:
        for body in (b"{not json", free_text):
            await guest.publish_raw(body, exchange=EVENTS_EXCHANGE, routing_key=f"{carol.partner.id}.spec.submitted",
                                    properties=Basic.Properties(content_type="application/json", user_id="guest"))  # fmt: skip
        await guest.publish(good)
        found = await receipts(queue, 1)
        assert found[good.event_id].type == "submission.rejected"  # sent by guest: sender.mismatch, but answered
        dead = await take(mishale, DEAD_LETTER_QUEUE, expected=2, timeout=30)
        assert worker.poll() is None, "the worker must keep running after bad input"
    assert sorted(message.body for message in dead) == sorted([b"{not json", free_text])
    assert {message.headers["x-mshale-reason"] for message in dead} == {"invalid_event"}
    assert {message.headers["x-mshale-consumer"] for message in dead} == {"validate"}
    assert any("note" in str(message.headers["x-mshale-detail"]) for message in dead)
