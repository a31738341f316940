"""Replay of the stream `mshale.events.log`: the bus's history, in publish order, from any point.

Streams are read over AMQP 0.9.1 as a consumer with `x-stream-offset` (`first`, an integer
offset, or a timestamp), a prefetch (the broker requires one) and manual acks (an ack is credit
for the next messages, it removes nothing). Each delivery carries its offset in the
`x-stream-offset` header.

"Caught up" is decided against the tail as it was when the replay started: a short probe consumer
attached at `last` reads the final chunk, whose highest offset is the tail. The replay stops once
it has yielded that offset. If nothing is found after `start` (an empty stream, or a start past
the tail), it stops after `idle_timeout` without deliveries. With `follow=True` it never stops.

A timestamp start has the broker's granularity: RabbitMQ attaches at the first chunk written at or
after that second, so a few events published in the same second just before it may be included.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.exceptions import ChannelNotFoundEntity
from pydantic import ValidationError

from mshale_fl.broker.connection import connect
from mshale_fl.broker.errors import BrokerError, redact_url
from mshale_fl.broker.topology import EVENT_LOG_STREAM
from mshale_fl.logging import get_logger
from mshale_fl.schemas.events import EventEnvelope, parse_event

log = get_logger(__name__)

StartFrom = Literal["first", "last", "next"] | int | datetime

REPLAY_PREFETCH = 500
PROBE_WAIT = 1.0
PROBE_SETTLE = 0.15


@dataclass(frozen=True)
class StreamRecord:
    """One message of the stream as stored: parse `body` with `event()`."""

    offset: int
    routing_key: str
    timestamp: datetime | None
    message_id: str | None
    body: bytes

    def event(self) -> EventEnvelope[Any]:
        return parse_event(self.body)


def parse_start(text: str) -> StartFrom:
    """Read a `--from` value: `first`, `last`, `next`, an integer offset, or an ISO-8601 time."""
    value = text.strip()
    if value in ("first", "last", "next"):
        return value  # type: ignore[return-value]
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--from must be first, last, next, an offset or an ISO-8601 time, not {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"the time {text!r} needs a UTC offset, e.g. {value}Z or {value}+00:00")
    return moment


async def tail_offset(connection: AbstractConnection, stream: str = EVENT_LOG_STREAM) -> int | None:
    """The offset of the newest message in the stream right now, or None if it is empty."""
    records = _Collector()
    channel = await connection.channel(publisher_confirms=False)
    try:
        await channel.set_qos(prefetch_count=REPLAY_PREFETCH)
        queue = await _stream(channel, stream)
        tag = await queue.consume(records.on_message, arguments={"x-stream-offset": "last"})
        await records.settle(first_wait=PROBE_WAIT, settle=PROBE_SETTLE)
        await queue.cancel(tag)
    finally:
        await channel.close()
    return records.highest


async def replay_records(
    connection: AbstractConnection,
    start: StartFrom = "first",
    *,
    follow: bool = False,
    idle_timeout: float = 2.0,
    stream: str = EVENT_LOG_STREAM,
    prefetch: int = REPLAY_PREFETCH,
) -> AsyncIterator[StreamRecord]:
    """Every message from `start` on, in stream order, as `StreamRecord`s (valid or not)."""
    until = None if follow else await tail_offset(connection, stream)
    if not follow and until is None:
        return
    if not follow and isinstance(start, int) and until is not None and start > until:
        return
    inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    channel = await connection.channel(publisher_confirms=False)
    try:
        await channel.set_qos(prefetch_count=prefetch)
        queue = await _stream(channel, stream)
        argument: Any = start
        tag = await queue.consume(inbox.put, arguments={"x-stream-offset": argument})
        while True:
            try:
                message = await (inbox.get() if follow else asyncio.wait_for(inbox.get(), timeout=idle_timeout))
            except TimeoutError:
                log.info("replay.idle_stop", stream=stream, idle_timeout=idle_timeout)
                break
            record = _record(message)
            await message.ack()
            yield record
            if until is not None and record.offset >= until:
                break
        await queue.cancel(tag)
    finally:
        if not channel.is_closed:
            await channel.close()


async def replay(
    connection: AbstractConnection,
    start: StartFrom = "first",
    *,
    follow: bool = False,
    idle_timeout: float = 2.0,
    stream: str = EVENT_LOG_STREAM,
) -> AsyncIterator[tuple[int, EventEnvelope[Any]]]:
    """(offset, event) for every valid event from `start` on; invalid records are logged and skipped."""
    async for record in replay_records(connection, start, follow=follow, idle_timeout=idle_timeout, stream=stream):
        try:
            event = record.event()
        except (ValidationError, ValueError) as error:
            log.warning("replay.invalid_record", offset=record.offset, routing_key=record.routing_key, error=str(error)[:200])
            continue
        yield record.offset, event


async def replay_url(url: str, start: StartFrom = "first", **kwargs: Any) -> AsyncIterator[StreamRecord]:
    """`replay_records` on a connection of its own (for the CLI and scripts)."""
    connection = await connect(url, robust=False, name="mshale-fl events tail")
    try:
        async for record in replay_records(connection, start, **kwargs):
            yield record
    except CONNECTION_EXCEPTIONS as error:
        raise BrokerError(f"lost the connection to RabbitMQ at {redact_url(url)} while reading the stream ({error})") from None
    finally:
        await connection.close()


async def _stream(channel: AbstractChannel, stream: str) -> AbstractQueue:
    try:
        return await channel.get_queue(stream, ensure=True)
    except ChannelNotFoundEntity:
        raise BrokerError(f"the stream {stream} does not exist here; run `mshale-fl broker declare` first") from None


def _record(message: AbstractIncomingMessage) -> StreamRecord:
    offset = (message.headers or {}).get("x-stream-offset")
    return StreamRecord(
        offset=int(offset) if offset is not None else -1,  # type: ignore[arg-type]
        routing_key=message.routing_key or "",
        timestamp=message.timestamp,
        message_id=message.message_id,
        body=message.body,
    )


class _Collector:
    """Acks and remembers the highest offset seen, for the tail probe."""

    def __init__(self) -> None:
        self.highest: int | None = None
        self._arrived = asyncio.Event()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        offset = (message.headers or {}).get("x-stream-offset")
        if offset is not None:
            value = int(offset)  # type: ignore[arg-type]
            self.highest = value if self.highest is None else max(self.highest, value)
        self._arrived.set()
        await message.ack()

    async def settle(self, *, first_wait: float, settle: float) -> None:
        """Wait for the first delivery (up to first_wait), then until none came for `settle` s."""
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout=first_wait)
        except TimeoutError:
            return
        while True:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=settle)
            except TimeoutError:
                return
