"""The confirmed publisher: every event is confirmed by the broker, or the caller gets an exception.

- Publisher confirms are on and every publish is `mandatory`, so a message no queue accepts comes
  back as a basic.return and is raised to the caller of that publish as `UnroutableError`.
- At most `window` messages are unconfirmed at once (one `asyncio.Semaphore` shared by every
  caller of this publisher). Confirms are awaited concurrently, never one at a time.
- `message_id` is the event id and never changes, so a publish retried after a connection loss is
  recognisable downstream: consumers deduplicate through their inbox. A publish that was not
  confirmed when the connection dropped is sent again once aio-pika has reconnected and reopened
  the channel; the caller only sees the confirm (or a permanent error).
- `user_id` is set to the connection's user. RabbitMQ checks it against the authenticated user
  and closes the channel on a mismatch, which makes it a trustworthy sender identity.

About `mandatory` and the alternate exchange: `mshale.events` has an alternate exchange, so the
broker never returns a publish to it; an event of an unknown type is routed to
`mshale.unroutable` and confirmed. `UnroutableError` therefore comes from publishes to exchanges
without one: the default exchange ("") with a routing key that names no queue (for instance an RPC
reply whose reply queue is gone), or a fanout exchange with nothing bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustChannel
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.abc import AbstractChannel as UnderlayChannel
from aiormq.exceptions import (
    ChannelAccessRefused,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)
from pamqp.commands import Basic

from mshale_fl.broker.connection import broker_user
from mshale_fl.broker.errors import (
    BrokerError,
    PublishForbiddenError,
    PublishRejectedError,
    UnroutableError,
)
from mshale_fl.broker.topology import EVENTS_EXCHANGE
from mshale_fl.logging import get_logger
from mshale_fl.schemas.events import EventEnvelope

log = get_logger(__name__)

PERSISTENT = 2
CONTENT_TYPE = "application/json"
RETRY_DELAY_MAX = 1.0

Progress = Callable[[int, int | None], None]
"""progress(confirmed_so_far, total or None when the events are an iterator of unknown length)."""


def encode_event(event: EventEnvelope[Any]) -> bytes:
    return event.__pydantic_serializer__.to_json(event)


def event_properties(
    event: EventEnvelope[Any], *, user_id: str | None, headers: Mapping[str, Any] | None = None
) -> Basic.Properties:
    return Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=str(event.event_id),
        correlation_id=str(event.correlation_id),
        message_type=event.type,
        timestamp=event.occurred_at,
        user_id=user_id,
        app_id="mshale-fl",
        headers=dict(headers) if headers else None,
    )


class Publisher:
    """Publishes events to `mshale.events` (or raw messages anywhere) with confirms and a window.

    Create with `await Publisher.open(connection, window=...)`; one publisher per connection is
    plenty (its window is shared by every concurrent caller).
    """

    def __init__(self, channel: AbstractChannel, *, window: int, user_id: str | None) -> None:
        if window < 1:
            raise ValueError("the publish window must be at least 1")
        self._channel = channel
        self._window = asyncio.Semaphore(window)
        self.window = window
        self.user_id = user_id
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self.retried = 0
        self._last_retry_log = float("-inf")
        """How many sends were repeated after a connection loss (for tests and metrics)."""

    @classmethod
    async def open(cls, connection: AbstractConnection, *, window: int, user_id: str | None = None) -> Publisher:
        """Open a confirming channel on `connection`; `user_id` defaults to the connection's user."""
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        if user_id is None:
            user_id = broker_user(str(connection.url))
        return cls(channel, window=window, user_id=user_id)

    async def publish(self, event: EventEnvelope[Any], *, headers: Mapping[str, Any] | None = None) -> None:
        """Publish one event to `mshale.events` with its routing key; returns once confirmed."""
        properties = event_properties(event, user_id=self.user_id, headers=headers)
        async with self._slot():
            await self._send(EVENTS_EXCHANGE, event.routing_key, encode_event(event), properties)

    async def publish_many(self, events: Iterable[EventEnvelope[Any]], *, progress: Progress | None = None) -> int:
        """Publish events pipelined through the window; returns how many were confirmed.

        Stops sending at the first permanent failure, waits for what is in flight, then raises it.
        """
        total = len(events) if isinstance(events, (list, tuple)) else None
        confirmed = 0
        failures: list[BaseException] = []
        pending: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            nonlocal confirmed
            pending.discard(task)
            self._release()
            if task.cancelled():
                return
            error = task.exception()
            if error is not None:
                failures.append(error)
                return
            confirmed += 1
            if progress is not None:
                progress(confirmed, total)

        try:
            for event in events:
                await self._acquire()
                if failures:
                    self._release()
                    break
                properties = event_properties(event, user_id=self.user_id)
                task = asyncio.ensure_future(
                    self._send(EVENTS_EXCHANGE, event.routing_key, encode_event(event), properties)
                )
                pending.add(task)
                task.add_done_callback(finished)
            if pending:
                await asyncio.wait(set(pending))
        except BaseException:
            for task in pending:
                task.cancel()
            raise
        if failures:
            raise failures[0]
        return confirmed

    async def publish_raw(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        properties: Basic.Properties,
    ) -> None:
        """Publish bytes as they are (a dead-letter copy, a reply, a test's malformed message)."""
        async with self._slot():
            await self._send(exchange, routing_key, body, properties)

    async def wait_idle(self) -> None:
        """Wait until nothing is in flight."""
        await self._idle.wait()

    async def close(self) -> None:
        self._closed = True
        if not self._channel.is_closed:
            await self._channel.close()

    # -- internals -------------------------------------------------------------------------

    def _slot(self) -> _WindowSlot:
        return _WindowSlot(self)

    async def _acquire(self) -> None:
        await self._window.acquire()
        self._in_flight += 1
        self._idle.clear()

    def _release(self) -> None:
        self._window.release()
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def _underlay(self) -> UnderlayChannel:
        return await self._channel.get_underlay_channel()

    async def _send(self, exchange: str, routing_key: str, body: bytes, properties: Basic.Properties) -> None:
        delay = 0.05
        while True:
            if self._closed:
                raise BrokerError("the publisher is closed")
            try:
                channel = await self._underlay()
                await channel.basic_publish(
                    body, exchange=exchange, routing_key=routing_key, properties=properties, mandatory=True
                )
                return
            except PublishError as error:
                frame = error.args[1] if len(error.args) > 1 else None
                raise UnroutableError(
                    exchange,
                    routing_key,
                    getattr(frame, "reply_code", 312),
                    getattr(frame, "reply_text", "NO_ROUTE"),
                    properties.message_id,
                ) from None
            except DeliveryError:
                raise PublishRejectedError(exchange, routing_key, properties.message_id) from None
            except (ChannelAccessRefused, ChannelNotFoundEntity, ChannelPreconditionFailed) as error:
                code = {ChannelAccessRefused: 403, ChannelNotFoundEntity: 404}.get(type(error), 406)
                text = str(error.args[0]) if error.args else str(error)
                raise PublishForbiddenError(exchange, routing_key, code, text) from None
            except CONNECTION_EXCEPTIONS as error:  # connection or channel lost: send again once restored
                if self._closed:
                    raise BrokerError("the publisher was closed while a publish was unconfirmed") from error
                self.retried += 1
                self._log_retry(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_MAX)
                await self._wait_channel_ready()

    def _log_retry(self, error: BaseException) -> None:
        # One line per outage, not one per unconfirmed message.
        now = asyncio.get_running_loop().time()
        if now - self._last_retry_log > 5:
            self._last_retry_log = now
            log.warning("publish.connection_lost_resending", error=f"{type(error).__name__}: {error}"[:200])

    async def _wait_channel_ready(self) -> None:
        if not isinstance(self._channel, AbstractRobustChannel):  # a plain channel will not come back
            raise BrokerError("the connection was lost and this publisher's connection is not robust")
        try:
            await asyncio.wait_for(self._channel.ready(), timeout=RETRY_DELAY_MAX * 5)
        except TimeoutError:
            pass  # still reconnecting; the next attempt waits again


class _WindowSlot:
    __slots__ = ("_publisher",)

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def __aenter__(self) -> None:
        await self._publisher._acquire()

    async def __aexit__(self, *_: object) -> None:
        self._publisher._release()
