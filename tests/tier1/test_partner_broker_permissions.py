"""What a partner's broker user may do about receipts: bind its own reply queue to its own keys, nothing else."""

from __future__ import annotations

import aio_pika
import aiormq.exceptions
import pytest

from mshale_fl.agents.partner.submit import receipt_binding_key, reply_queue_name
from mshale_fl.broker import EVENT_LOG_STREAM, EVENTS_EXCHANGE

from .conftest import Register, partner_url
from .support import unique_partner_id

pytestmark = pytest.mark.rabbitmq


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    return None


async def test_a_partner_binds_its_reply_queue_to_its_own_receipts_only(
    vhost: str, register: Register, mishale: aio_pika.abc.AbstractConnection
) -> None:
    alice = register(tier=1)
    other = unique_partner_id()
    connection = await aio_pika.connect(partner_url(vhost, alice))
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(reply_queue_name(alice.partner.id), exclusive=True, auto_delete=True)
        await queue.bind(EVENTS_EXCHANGE, routing_key=receipt_binding_key(alice.partner.id))
        await queue.consume(ignore)

        refusals = [
            ("topic '#'", lambda ch: ch.declare_queue(reply_queue_name(alice.partner.id), exclusive=True),
             lambda q: q.bind(EVENTS_EXCHANGE, routing_key="#")),
            ("topic '*.submission.*'", lambda ch: ch.declare_queue(reply_queue_name(alice.partner.id), exclusive=True),
             lambda q: q.bind(EVENTS_EXCHANGE, routing_key="*.submission.*")),
            (f"topic '{other}.submission.*'", lambda ch: ch.declare_queue(reply_queue_name(alice.partner.id), exclusive=True),
             lambda q: q.bind(EVENTS_EXCHANGE, routing_key=f"{other}.submission.*")),
            (f"mshale.reply.{other}.", lambda ch: ch.declare_queue(reply_queue_name(other), exclusive=True), None),
            ("queue 'mshale.validate'", lambda ch: ch.get_queue("mshale.validate", ensure=False),
             lambda q: q.consume(ignore)),
            (f"queue '{EVENT_LOG_STREAM}'", lambda ch: ch.get_queue(EVENT_LOG_STREAM, ensure=False),
             lambda q: q.consume(ignore, arguments={"x-stream-offset": "first"})),
        ]  # fmt: skip
        for refused_name, open_queue, use in refusals:
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as refused:
                target = await open_queue(channel)
                if use is not None:
                    await use(target)
            # The refusal names what was refused, so it is this step and not the one before it.
            assert refused_name in str(refused.value), str(refused.value)
            assert not connection.is_closed
    finally:
        await connection.close()
