"""The partner side of the grid: receive Flower instructions, run the ClientApp, reply.

One `PartnerNode` per partner process. It owns the partner's instruction queue
`mshale.reply.<partner>.grid` (durable, so instructions survive a partner restart; each carries an
AMQP expiration equal to its Flower TTL, so stale ones die in the queue), bound to `mshale.grid`
with `<partner>.grid.instruction`. The broker pushes instructions to it one at a time (prefetch 1):

    decode (Flower serde) -> check it is for this node and still alive -> ClientApp(message, context)
    in a worker thread -> publish the reply (confirmed, mandatory, user_id = the partner) -> ack

The instruction is acked only after the reply is confirmed, so a crash in between means the
instruction comes back; the ClientApp answers a repeated instruction from its reply cache
(agents/partner/client_app.py) instead of training, and so spending privacy, twice.

Presence: a hello on joining and every `heartbeat_seconds` (also while training: the loop is free,
training runs in a thread), a bye on a clean stop. After a broker restart aio-pika's robust
connection reconnects and restores the queue, binding and consumer; the server needs nothing from
us to notice we are back but the next hello. If the grid exchange does not exist yet (the server
has never run on this broker), the node waits for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import ChannelAccessRefused, ChannelNotFoundEntity
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity

from mshale_fl.broker import Publisher, UnroutableError, connect
from mshale_fl.broker.errors import BrokerError
from mshale_fl.crashpoints import crash_point
from mshale_fl.federation import wire
from mshale_fl.federation.nodes import node_id_for
from mshale_fl.logging import get_logger

log = get_logger(__name__)

DEFAULT_HEARTBEAT_SECONDS = 5.0
WAIT_FOR_SERVER_SECONDS = 2.0


class PartnerNode:
    """Runs `app` for `partner_id` on the grid at `broker_url` until `stop` is set (see `run`)."""

    def __init__(
        self,
        broker_url: str,
        partner_id: str,
        app: ClientApp,
        *,
        node_config: Mapping[str, Any] | None = None,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        shutdown_grace: float = 30.0,
    ) -> None:
        self.broker_url = broker_url
        self.partner_id = partner_id
        self.node_id = node_id_for(partner_id)
        self.app = app
        self.node_config = dict(node_config or {})
        self.heartbeat_seconds = heartbeat_seconds
        self.shutdown_grace = shutdown_grace
        self.queue_name = wire.partner_queue(partner_id)
        self.handled = 0
        self.ready = asyncio.Event()
        """Set once the queue is bound and consumed and the first hello is out."""
        self._contexts: dict[int, Context] = {}
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._publisher: Publisher | None = None
        self._consumer_tag: str | None = None
        self._in_flight: asyncio.Task[None] | None = None
        self._stopping = False

    async def run(self, stop: asyncio.Event) -> None:
        """Join, serve instructions until `stop` is set, then leave cleanly.

        Raises `BrokerUnavailableError` if RabbitMQ cannot be reached at start.
        """
        self._connection = await connect(self.broker_url, name=f"mshale-fl join {self.partner_id}")
        heartbeat: asyncio.Task[None] | None = None
        try:
            self._publisher = await Publisher.open(self._connection, window=8)
            if not await self._bind(stop):
                return
            self._consumer_tag = await self._queue.consume(self._on_instruction, no_ack=False)  # type: ignore[union-attr]
            heartbeat = asyncio.create_task(self._heartbeat_forever())
            await self._say("hello")
            self.ready.set()
            log.info("node.joined", partner_id=self.partner_id, node_id=self.node_id, queue=self.queue_name)
            await stop.wait()
            await self._leave()
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            await self._connection.close()
            log.info("node.stopped", partner_id=self.partner_id, handled=self.handled)

    # -- joining and leaving -----------------------------------------------------------------------

    async def _bind(self, stop: asyncio.Event) -> bool:
        """Declare and bind our queue, waiting for the server's exchange if needed; False if stopped first."""
        assert self._connection is not None
        waited = False
        while not stop.is_set():
            channel = await self._connection.channel(publisher_confirms=False)
            try:
                await channel.set_qos(prefetch_count=1)
                queue = await channel.declare_queue(
                    self.queue_name, durable=True, arguments=wire.PARTNER_QUEUE_ARGUMENTS
                )
                await queue.bind(wire.GRID_EXCHANGE, routing_key=wire.instruction_key(self.partner_id))
            except ChannelAccessRefused as error:
                raise BrokerError(
                    f"the broker refused partner {self.partner_id!r} the grid ({_first_line(error)}); its broker user "
                    "needs the grid permissions on mshale.grid (mshale_fl/federation/README.md): ask Mishale to "
                    "re-apply them"
                ) from None
            except ChannelNotFoundEntity:
                if not waited:
                    log.info("node.waiting_for_server", exchange=wire.GRID_EXCHANGE)
                    waited = True
                try:
                    await asyncio.wait_for(stop.wait(), timeout=WAIT_FOR_SERVER_SECONDS)
                except TimeoutError:
                    pass
                continue
            self._channel, self._queue = channel, queue
            return True
        return False

    async def _leave(self) -> None:
        self._stopping = True
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await asyncio.wait_for(self._queue.cancel(self._consumer_tag), timeout=5)
            except Exception as error:  # the channel may be gone; the broker requeues anyway
                log.debug("node.cancel_failed", error=repr(error))
        if self._in_flight is not None and not self._in_flight.done():
            log.info("node.finishing_instruction", grace_s=self.shutdown_grace)
            done, _ = await asyncio.wait({self._in_flight}, timeout=self.shutdown_grace)
            if not done:
                log.warning("node.instruction_abandoned", detail="requeued by the broker when we disconnect")
        try:
            await asyncio.wait_for(self._say("bye"), timeout=5)
        except Exception as error:  # leaving without a bye only delays the server by a few heartbeats
            log.info("node.bye_failed", error=repr(error))

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self._say("hello")
            except asyncio.CancelledError:
                raise
            except Exception as error:  # keep beating: the broker or the server may come back
                log.info("node.hello_failed", error=f"{type(error).__name__}: {error}"[:200])

    async def _say(self, kind: str) -> None:
        assert self._publisher is not None
        hello = wire.NodeHello(
            kind=kind,  # type: ignore[arg-type]
            partner_id=self.partner_id,
            node_id=self.node_id,
            sent_at=datetime.now(UTC),
            heartbeat_seconds=self.heartbeat_seconds,
            flwr_version=version("flwr"),
        )
        key = wire.hello_key(self.partner_id) if kind == "hello" else wire.bye_key(self.partner_id)
        try:
            await self._publisher.publish_raw(
                wire.encode_hello(hello),
                exchange=wire.GRID_EXCHANGE,
                routing_key=key,
                properties=wire.hello_properties(hello, user_id=self._publisher.user_id, message_id=uuid.uuid4().hex),
            )
        except UnroutableError:
            # The server's presence queue does not exist yet: it has never started on this broker.
            log.debug("node.no_server_yet")

    # -- instructions ------------------------------------------------------------------------------

    async def _on_instruction(self, delivery: AbstractIncomingMessage) -> None:
        if self._stopping:
            await delivery.nack(requeue=True)
            return
        self._in_flight = asyncio.current_task()
        try:
            await self._handle(delivery)
        except asyncio.CancelledError:
            raise
        except BrokerError as error:
            # The reply could not be published (and will not be): leave the instruction to the
            # broker, which redelivers it when this channel or connection is gone.
            log.warning("node.reply_not_published", error=str(error)[:300])
            await _settle(delivery, requeue=True)
        except Exception as error:  # a bug here must not stop the node
            log.exception("node.unexpected_error", error=repr(error))
            await _settle(delivery, requeue=True)
        finally:
            self._in_flight = None

    async def _handle(self, delivery: AbstractIncomingMessage) -> None:
        try:
            message = await asyncio.to_thread(wire.decode_message, delivery.body)
        except wire.WireFormatError as error:
            log.warning("node.bad_instruction", error=str(error)[:200], user_id=delivery.user_id)
            await delivery.reject(requeue=False)
            return
        metadata = message.metadata
        if metadata.dst_node_id != self.node_id or metadata.reply_to_message_id:
            log.warning("node.instruction_not_for_us", dst_node_id=metadata.dst_node_id, node_id=self.node_id)
            await delivery.reject(requeue=False)
            return
        if metadata.created_at + metadata.ttl < time.time():
            log.info("node.instruction_expired", message_id=metadata.message_id, group_id=metadata.group_id)
            await delivery.ack()
            return
        if not metadata.message_id:  # the wire carries it; a Message without one cannot be answered
            metadata.__dict__["_message_id"] = delivery.message_id or ""
        log.info("node.instruction", message_type=metadata.message_type, group_id=metadata.group_id)
        crash_point(f"node.{metadata.message_type}")
        reply = await _in_thread(self._call_app, message)
        reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        assert self._publisher is not None
        await self._publisher.publish_raw(
            await asyncio.to_thread(wire.encode_message, reply),
            exchange=wire.GRID_EXCHANGE,
            routing_key=wire.reply_key(self.partner_id),
            properties=wire.message_properties(reply, user_id=self._publisher.user_id),
        )
        await delivery.ack()
        self.handled += 1
        log.info(
            "node.replied",
            message_type=metadata.message_type,
            group_id=metadata.group_id,
            error=reply.error.reason[:200] if reply.has_error() else None,
        )

    def _call_app(self, message: Message) -> Message:
        """ClientApp(message, context), with an exception turned into an error reply as Flower does."""
        metadata = message.metadata
        TaskIdentity.run_id = metadata.run_id
        TaskIdentity.node_id = self.node_id
        TaskIdentity.task_id = metadata.dst_task_id or 0
        context = self._contexts.get(metadata.run_id)
        if context is None:
            context = self._contexts[metadata.run_id] = Context(
                run_id=metadata.run_id,
                node_id=self.node_id,
                node_config=dict(self.node_config),
                state=RecordDict(),
                run_config={},
            )
        try:
            reply = self.app(message, context)
        except Exception as error:
            log.warning("node.clientapp_raised", error=f"{type(error).__name__}: {error}"[:500])
            log.debug("node.clientapp_traceback", traceback=traceback.format_exc())
            return Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(error).__name__}: {error}"),
                reply_to=message,
            )
        if not isinstance(reply, Message) or reply.metadata.reply_to_message_id != metadata.message_id:
            return Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="the ClientApp did not reply to the message"),
                reply_to=message,
            )
        return reply


async def _in_thread(function: Any, *args: Any) -> Any:
    """Run a blocking call in a daemon thread: a stuck training step must not block interpreter exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def target() -> None:
        try:
            result = function(*args)
        except BaseException as error:  # handed to the awaiting coroutine
            _hand_over(loop, _set_exception, future, error)
        else:
            _hand_over(loop, _set_result, future, result)

    threading.Thread(target=target, name="mshale-fl clientapp", daemon=True).start()
    return await future


def _hand_over(loop: asyncio.AbstractEventLoop, setter: Any, future: asyncio.Future[Any], value: Any) -> None:
    try:
        loop.call_soon_threadsafe(setter, future, value)
    except RuntimeError:  # the loop is closed: the node stopped and nobody waits for this result any more
        log.info("node.result_after_stop")


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _first_line(error: BaseException) -> str:
    text = str(error.args[0]) if error.args else str(error)
    return text.splitlines()[0] if text else type(error).__name__


async def _settle(delivery: AbstractIncomingMessage, *, requeue: bool) -> None:
    if delivery.processed:
        return
    try:
        await delivery.nack(requeue=requeue)
    except Exception as error:  # the channel is gone: the broker has requeued it already
        log.debug("node.nack_lost", error=repr(error))


__all__ = ["DEFAULT_HEARTBEAT_SECONDS", "PartnerNode"]
