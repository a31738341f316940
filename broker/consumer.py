"""The consumer runtime: manual acks, prefetch, at-most-once effects through an inbox, dead-lettering.

For each delivery, in this order:

1. Parse with `parse_event`. A body that does not parse is *permanent* failure.
2. `processor.process(event)` applies the effect and returns the events it caused. With
   `InboxProcessor` (broker/inbox.py) the effect and the inbox row commit in one SQL transaction,
   so a redelivered event has no second effect and gets the outputs recorded the first time
   (same event ids).
3. The outputs are published with confirms; only then is the delivery acked. A crash anywhere
   before the ack means redelivery, never loss; the inbox makes the redelivery harmless.

Failures:
- permanent (unparseable body, routing key that disagrees with the body, `PermanentError` from the
  handler): a copy goes to `mshale.dlx` with `x-mshale-reason` and related headers (confirmed),
  then the original is acked. A nack cannot carry a reason, hence the copy.
- an unparseable body is first offered to the processor's optional `reject_invalid(body, delivery,
  error)` hook (see `InvalidMessageHook`), so a role that owes its sender an answer (the validator
  owes a receipt) can publish one; its outputs are published with confirms, then the body is
  dead-lettered as above. The hook fails like `process`: `PermanentError` means "no answer" (the
  body is still dead-lettered), any other exception requeues the delivery with back-off.
- anything else is transient: the delivery is nacked with requeue after a short back-off. The
  quorum queue counts deliveries and dead-letters the message itself past `x-delivery-limit`.

The worker never stops on bad input. After a connection loss aio-pika's robust connection
re-opens the channel and re-registers the consumer; acks for deliveries of the lost channel are
impossible (the broker already requeued them) and are skipped.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import signal
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import ChannelNotFoundEntity
from pamqp.commands import Basic
from pydantic import ValidationError

from mshale_fl.broker.acks import AckBatcher
from mshale_fl.broker.connection import connect
from mshale_fl.broker.errors import BrokerError, PermanentError
from mshale_fl.broker.inbox import InboxProcessor, SqlHandler
from mshale_fl.broker.publisher import PERSISTENT, Publisher
from mshale_fl.broker.topology import DEAD_LETTER_EXCHANGE, Role, declare_configured_topology, get_role
from mshale_fl.config import Settings, get_settings
from mshale_fl.crashpoints import crash_point
from mshale_fl.logging import get_logger
from mshale_fl.schemas.events import EventEnvelope, parse_event

log = get_logger(__name__)

__all__ = [
    "ConsumerRuntime",
    "ConsumerStats",
    "Delivery",
    "InboxProcessor",
    "InvalidMessageHook",
    "Processor",
    "SqlHandler",
    "current_delivery",
    "run_worker",
]

REASON_HEADER = "x-mshale-reason"
DETAIL_HEADER = "x-mshale-detail"
QUEUE_HEADER = "x-mshale-queue"
CONSUMER_HEADER = "x-mshale-consumer"
ROUTING_KEY_HEADER = "x-mshale-routing-key"
EXCHANGE_HEADER = "x-mshale-exchange"
USER_HEADER = "x-mshale-user-id"
DEAD_LETTERED_AT_HEADER = "x-mshale-dead-lettered-at"
MAX_DETAIL = 1000


# -- what a handler sees -------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """Transport facts about the delivery being processed, for handlers that need them.

    `user_id` is the broker user that published the message, checked by RabbitMQ: the sender's
    identity. Read it with `current_delivery()` (it is carried into the handler's worker thread).
    """

    queue: str
    routing_key: str
    user_id: str | None
    redelivered: bool
    delivery_count: int
    reply_to: str | None = None
    """Where an RPC caller waits for the answer (direct reply-to), if it asked for one."""
    correlation_id: str | None = None
    """The AMQP correlation id to answer `reply_to` with."""


_current_delivery: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar("mshale_delivery", default=None)


def current_delivery() -> Delivery | None:
    return _current_delivery.get()


@runtime_checkable
class Processor(Protocol):
    """What the runtime calls for each parsed event; returns the events to publish afterwards."""

    consumer_name: str

    async def process(self, event: EventEnvelope[Any]) -> Sequence[EventEnvelope[Any]]: ...


@runtime_checkable
class InvalidMessageHook(Protocol):
    """Optional, on a `Processor`: answer a message whose body does not parse before it is dead-lettered.

    `reject_invalid(body, delivery, error)` gets the raw body, the transport facts of the delivery
    (`Delivery`: routing key and the broker-verified `user_id` of the sender; also available as
    `current_delivery()`), and the `ValidationError` / `ValueError` from `parse_event`. It returns
    the events to publish (may be empty), synchronously or as an awaitable. Whatever it returns,
    the body is dead-lettered afterwards with its reason. Trust nothing in `body`: it failed
    validation; the sender is `delivery.user_id`, not whatever the body claims.
    """

    def reject_invalid(
        self, body: bytes, delivery: Delivery, error: ValueError
    ) -> Sequence[EventEnvelope[Any]] | Awaitable[Sequence[EventEnvelope[Any]]]: ...


# -- the runtime ---------------------------------------------------------------------------------


@dataclass
class ConsumerStats:
    acked: int = 0
    dead_lettered: int = 0
    requeued: int = 0
    outputs_published: int = 0


class ConsumerRuntime:
    """Consumes one queue with a `Processor`; `start()`, then `stop()` for a clean shutdown."""

    def __init__(
        self,
        connection: AbstractConnection,
        queue: str,
        processor: Processor,
        *,
        publisher: Publisher,
        prefetch: int,
        retry_delay: float = 0.2,
        retry_delay_max: float = 5.0,
    ) -> None:
        self.connection = connection
        self.queue_name = queue
        self.processor = processor
        self.publisher = publisher
        self.prefetch = prefetch
        self.retry_delay = retry_delay
        self.retry_delay_max = retry_delay_max
        self.stats = ConsumerStats()
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._stopping = False
        self._in_flight: dict[asyncio.Task[Any], AbstractIncomingMessage] = {}
        self._ack_batchers: dict[int, AckBatcher] = {}

    async def start(self) -> None:
        # Keep strong references to the channel and queue: a robust connection restores only
        # the objects still alive (it holds them weakly).
        self._channel = await self.connection.channel(publisher_confirms=False)
        await self._channel.set_qos(prefetch_count=self.prefetch)
        try:
            self._queue = await self._channel.get_queue(self.queue_name, ensure=True)
        except ChannelNotFoundEntity:
            raise BrokerError(f"queue {self.queue_name} does not exist; run `mshale-fl broker declare` first") from None
        self._consumer_tag = await self._queue.consume(self._on_message, no_ack=False)
        log.info("consumer.started", queue=self.queue_name, consumer=self.processor.consumer_name, prefetch=self.prefetch)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop consuming, let in-flight deliveries finish for `grace` seconds, requeue the rest."""
        self._stopping = True
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await asyncio.wait_for(self._queue.cancel(self._consumer_tag), timeout=5)
            except Exception as error:  # the channel may be gone; the broker requeues anyway
                log.debug("consumer.cancel_failed", error=repr(error))
        if self._in_flight:
            _, unfinished = await asyncio.wait(set(self._in_flight), timeout=grace)
            for task in unfinished:
                message = self._in_flight.get(task)
                if message is not None:
                    # The effect may still commit in its thread; the redelivery then finds the
                    # inbox row and only re-publishes. Returning it is safe, dropping it is not.
                    await self._settle(message, requeue=True)
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished, timeout=1)
                log.warning("consumer.requeued_on_shutdown", queue=self.queue_name, count=len(unfinished))
        for batcher in list(self._ack_batchers.values()):
            await batcher.wait_sent()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        log.info("consumer.stopped", queue=self.queue_name, **self.stats.__dict__)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # -- one delivery --------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            await self._settle(message, requeue=True)
            return
        task = asyncio.current_task()
        assert task is not None
        self._in_flight[task] = message
        try:
            await self._handle(message)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug in the runtime itself must not stop the worker
            log.exception("consumer.unexpected_error", error=repr(error))
            await self._settle(message, requeue=True)
        finally:
            self._in_flight.pop(task, None)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            event = parse_event(message.body)
        except ValidationError as error:
            await self._reject_invalid(message, error, _summarise(error))
            return
        except ValueError as error:
            await self._reject_invalid(message, error, str(error))
            return
        if message.routing_key and message.routing_key != event.routing_key and message.exchange != "":
            await self._dead_letter(
                message,
                "routing_key_mismatch",
                f"routing key {message.routing_key!r} does not match the event's {event.routing_key!r}",
            )
            return

        delivery = self._delivery(message)
        token = _current_delivery.set(delivery)
        try:
            outputs = await self.processor.process(event)
        except PermanentError as error:
            await self._dead_letter(message, error.reason_code, error.message)
            return
        except Exception as error:
            await self._retry_later(message, error, delivery.delivery_count)
            return
        finally:
            _current_delivery.reset(token)

        crash_point("consumer.after_process")
        if outputs:
            try:
                await self._publish_outputs(outputs)
            except Exception as error:
                # Not acked: the redelivery re-publishes the recorded outputs (same ids).
                log.warning("consumer.outputs_unpublished", event_id=str(event.event_id), error=str(error))
                await self._settle(message, requeue=True)
                return
        crash_point("consumer.before_ack")
        self._ack(message)

    def _delivery(self, message: AbstractIncomingMessage) -> Delivery:
        return Delivery(
            queue=self.queue_name,
            routing_key=message.routing_key or "",
            user_id=message.user_id,
            redelivered=bool(message.redelivered),
            delivery_count=_delivery_count(message),
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
        )

    async def _reject_invalid(self, message: AbstractIncomingMessage, error: ValueError, detail: str) -> None:
        """Offer an unparseable body to the processor's `reject_invalid` hook, publish its answer, dead-letter the body."""
        hook = getattr(self.processor, "reject_invalid", None)
        if hook is not None:
            delivery = self._delivery(message)
            token = _current_delivery.set(delivery)
            try:
                answer = hook(message.body, delivery, error)
                outputs = list(await answer if inspect.isawaitable(answer) else answer)
            except PermanentError as refusal:
                log.info("consumer.invalid_not_answered", queue=self.queue_name, reason=refusal.reason_code,
                         message_id=message.message_id)  # fmt: skip
                outputs = []
            except Exception as failure:
                await self._retry_later(message, failure, delivery.delivery_count)
                return
            finally:
                _current_delivery.reset(token)
            if outputs:
                try:
                    await self._publish_outputs(outputs)
                except Exception as failure:
                    # Not dead-lettered yet: the redelivery asks the hook again (it should answer the same).
                    log.warning("consumer.outputs_unpublished", message_id=message.message_id, error=str(failure))
                    await self._settle(message, requeue=True)
                    return
        await self._dead_letter(message, "invalid_event", detail)

    async def _publish_outputs(self, outputs: Sequence[EventEnvelope[Any]]) -> None:
        if len(outputs) == 1:
            await self.publisher.publish(outputs[0])
        else:
            await asyncio.gather(*(self.publisher.publish(output) for output in outputs))
        self.stats.outputs_published += len(outputs)

    async def _dead_letter(self, message: AbstractIncomingMessage, reason: str, detail: str) -> None:
        log.warning(
            "consumer.dead_letter", queue=self.queue_name, reason=reason, detail=detail[:200], message_id=message.message_id
        )
        headers = {
            key: value for key, value in (message.headers or {}).items() if not key.startswith("x-mshale-")
        }
        headers.update(
            {
                REASON_HEADER: reason,
                DETAIL_HEADER: detail[:MAX_DETAIL],
                QUEUE_HEADER: self.queue_name,
                CONSUMER_HEADER: self.processor.consumer_name,
                ROUTING_KEY_HEADER: message.routing_key or "",
                EXCHANGE_HEADER: message.exchange or "",
                DEAD_LETTERED_AT_HEADER: datetime.now(UTC).isoformat(),
            }
        )
        if message.user_id:
            headers[USER_HEADER] = message.user_id
        properties = Basic.Properties(
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=PERSISTENT,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            message_type=message.type,
            timestamp=message.timestamp,
            # The copy is published by this worker: RabbitMQ would refuse the original sender's id.
            user_id=self.publisher.user_id,
            app_id=message.app_id,
            headers=headers,
        )
        try:
            await self.publisher.publish_raw(
                message.body, exchange=DEAD_LETTER_EXCHANGE, routing_key=message.routing_key or "", properties=properties
            )
        except Exception as error:
            # Without a confirmed copy the original must stay: requeue it. The delivery limit
            # dead-letters it eventually (without our reason headers, but not lost).
            log.error("consumer.dead_letter_failed", error=str(error), message_id=message.message_id)
            await self._settle(message, requeue=True)
            return
        self.stats.dead_lettered += 1
        self._ack(message, count=False)

    async def _retry_later(self, message: AbstractIncomingMessage, error: Exception, delivery_count: int) -> None:
        delay = min(self.retry_delay * (2**delivery_count), self.retry_delay_max) if self.retry_delay else 0.0
        log.warning(
            "consumer.transient_failure",
            queue=self.queue_name,
            message_id=message.message_id,
            delivery_count=delivery_count,
            error=f"{type(error).__name__}: {error}",
            retry_in_s=delay,
        )
        if delay and not self._stopping:
            await asyncio.sleep(delay)
        await self._settle(message, requeue=True)

    def _batcher(self, message: AbstractIncomingMessage) -> AckBatcher:
        channel = message.channel  # the AMQP channel that delivered it; raises if it is closed
        batcher = self._ack_batchers.get(id(channel))
        if batcher is None or batcher.channel is not channel:
            for key in [key for key, old in self._ack_batchers.items() if old.channel.is_closed]:
                del self._ack_batchers[key]
            batcher = self._ack_batchers[id(channel)] = AckBatcher(channel)
            batcher.on_lost = self._acks_lost
        return batcher

    def _acks_lost(self, error: BaseException) -> None:
        # The channel went away before the acks were written: the broker requeues those deliveries
        # and the inbox answers their redelivery without a second effect.
        log.info("consumer.acks_lost", queue=self.queue_name, error=type(error).__name__)

    def _ack(self, message: AbstractIncomingMessage, *, count: bool = True) -> None:
        """Ack soon (coalesced, see acks.py); nothing waits for the frame but `stop()`."""
        try:
            batcher = self._batcher(message)
        except Exception as error:
            # The channel that delivered it is gone, so the broker has requeued it already.
            log.info("consumer.ack_lost", message_id=message.message_id, error=type(error).__name__)
            return
        assert message.delivery_tag is not None
        batcher.ack(message.delivery_tag)
        if count:
            self.stats.acked += 1

    async def _settle(self, message: AbstractIncomingMessage, *, requeue: bool) -> None:
        if message.processed:
            return
        try:
            batcher = self._batcher(message)
            await message.nack(requeue=requeue)
            self.stats.requeued += 1
            if message.delivery_tag is not None:
                batcher.settled_elsewhere(message.delivery_tag)
        except Exception as error:
            log.info("consumer.nack_lost", message_id=message.message_id, error=type(error).__name__)


def _delivery_count(message: AbstractIncomingMessage) -> int:
    # Quorum queues put the number of earlier deliveries in x-delivery-count (absent on the first).
    value = (message.headers or {}).get("x-delivery-count", 0)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def _summarise(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:10]:
        location = ".".join(str(part) for part in item.get("loc", ()))
        parts.append(f"{location}: {item.get('msg', '')}" if location else str(item.get("msg", "")))
    more = error.error_count() - len(parts)
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


# -- the worker entry point ----------------------------------------------------------------------


async def run_worker(
    role: str | Role,
    processor: Processor,
    settings: Settings | None = None,
    *,
    stop: asyncio.Event | None = None,
    shutdown_grace: float = 10.0,
    retry_delay: float = 0.2,
    install_signal_handlers: bool = True,
    declare: bool = True,
) -> ConsumerStats:
    """Run one worker of `role` until SIGTERM/SIGINT (or `stop` is set), then shut down cleanly.

    Declares the topology (idempotent), consumes the role's queue with `processor`, publishes the
    outputs with confirms. On a signal: stop consuming, finish in-flight deliveries for up to
    `shutdown_grace` seconds, requeue what is left, close. Raises `BrokerUnavailableError` if
    RabbitMQ cannot be reached at start. The caller owns `processor` (close an `InboxProcessor`
    after this returns). Returns the runtime's counters.
    """
    settings = settings or get_settings()
    role = get_role(role) if isinstance(role, str) else role
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    connection = await connect(settings.broker_url, name=f"mshale-fl worker {role.name}")
    installed: list[signal.Signals] = []
    try:
        if declare:
            await declare_configured_topology(connection, settings)
        publisher = await Publisher.open(connection, window=settings.publish_window)
        runtime = ConsumerRuntime(
            connection, role.queue, processor, publisher=publisher, prefetch=settings.prefetch, retry_delay=retry_delay
        )
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(signum, stop.set)
                    installed.append(signum)
                except (NotImplementedError, RuntimeError):  # not the main thread / platform
                    pass
        await runtime.start()
        await stop.wait()
        log.info("worker.stopping", role=role.name, in_flight=runtime.in_flight)
        await runtime.stop(grace=shutdown_grace)
        try:
            await asyncio.wait_for(publisher.wait_idle(), timeout=shutdown_grace)
        except TimeoutError:  # their deliveries were requeued unacked: the outputs go out again
            log.warning("worker.outputs_unconfirmed_at_exit", role=role.name)
        await publisher.close()
        return runtime.stats
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        await connection.close()
