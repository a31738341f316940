"""Receipts over the broker: a partner asks for the inclusion proof of its event and checks it.

    partner (user lab-a)                                   audit worker
      publish mshale.events  lab-a.rpc.audit.receipt  -->  mshale.rpc.audit.receipt (bound *.rpc.audit.receipt)
        user_id=lab-a, reply_to=amq.rabbitmq.reply-to         answer from the appender (same thread as appends)
      consume amq.rabbitmq.reply-to (no-ack)          <--  publish "" -> reply_to, same correlation_id

Why this shape: a partner may write only to `mshale.events`, only under its own routing-key
prefix, and read only its own queues (`partner_permissions`). Direct reply-to needs no queue at
all, and the request's `user_id` is checked by the broker, so the responder knows who is asking
without any credential in the body. A partner gets receipts for events *about itself* only
(record partner id = its user); for anything else the answer is `not_found`, the same as for an
unknown event, so the RPC does not reveal other partners' activity.

The partner never trusts the reply: `ReceiptClient.fetch_receipt` verifies the signature, the
inclusion proof and (given the event) the record bytes, then hands the checkpoint with the
consistency proof from the last checkpoint it accepted to its `CheckpointWitness`, which refuses a
rolled-back or forked log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from mshale_fl.audit.checkpoint import Checkpoint
from mshale_fl.audit.note import strict_b64decode
from mshale_fl.audit.receipts import Receipt, ReceiptError, verify_receipt
from mshale_fl.audit.records import AuditRecord, parse_record
from mshale_fl.audit.witness import CheckpointWitness
from mshale_fl.broker.errors import BrokerError
from mshale_fl.broker.topology import EVENTS_EXCHANGE, RECEIPT_RPC, declare_rpc_queue
from mshale_fl.schemas.rpc import (
    RECEIPT_QUEUE,
    ReceiptReply,
    ReceiptRequest,
    receipt_routing_key,
)
from pydantic import ValidationError

from mshale_fl.logging import get_logger

if TYPE_CHECKING:
    from mshale_fl.audit.appender import AuditAppender

log = get_logger(__name__)

__all__ = [
    "DIRECT_REPLY_TO",
    "ReceiptClient",
    "ReceiptResponder",
    "ReceiptUnavailable",
    "VerifiedReceipt",
    "answer_receipt_request",
    "declare_receipt_queue",
    "fetch_receipt",
]

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
CONTENT_TYPE = "application/json"


# -- the answer (runs on the appender's thread) ----------------------------------------------------


def answer_receipt_request(appender: AuditAppender, requester: str | None, body: bytes) -> ReceiptReply:
    """The reply to one request; never raises (a failure is an `unavailable` reply).

    Must run where the appender is used (the audit worker's appender thread): it reads the same
    index and tree that appends extend.
    """
    try:
        request = ReceiptRequest.model_validate_json(body)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:5])
        return ReceiptReply(status="bad_request", detail=problems[:1000])
    if not requester:
        return ReceiptReply(
            status="refused", detail="the request carries no user_id; it identifies the partner (the broker checks it)"
        )
    try:
        return _answer(appender, requester, request)
    except Exception as error:  # the store is unreachable, the log damaged: say so, keep serving
        log.error("audit.receipt_failed", event_id=str(request.event_id), error=f"{type(error).__name__}: {error}"[:300])
        return ReceiptReply(status="unavailable", detail="the audit log could not be read; try again later")


def _answer(appender: AuditAppender, requester: str, request: ReceiptRequest) -> ReceiptReply:
    position = appender.position_of(request.event_id)
    known = request.known_size or 0
    if position is None or position >= appender.checkpoint.size or known > appender.checkpoint.size:
        # This process may not be the writer (a standby worker): the store is the truth.
        appender.refresh()
        position = appender.position_of(request.event_id)
    not_found = ReceiptReply(status="not_found", detail=f"event {request.event_id} is not in the log (yet)")
    if position is None:
        return not_found
    if parse_record(appender.record_at(position)).partner_id != requester:
        return not_found  # the same answer as for an unknown event: nothing about others leaks
    try:
        receipt = appender.receipt(request.event_id)
    except KeyError as error:
        return ReceiptReply(status="pending", detail=str(error.args[0]) if error.args else None)
    proof: list[bytes] = []
    consistency_from = None
    if request.known_size is not None and request.known_size <= receipt.tree_size:
        # Same thread, same state as receipt(): the proof ends at the receipt's checkpoint.
        proof = appender.consistency_proof(request.known_size)
        consistency_from = request.known_size
    return ReceiptReply(
        status="ok",
        receipt=receipt.to_dict(),
        consistency_from=consistency_from,
        consistency_proof=[base64.b64encode(node).decode("ascii") for node in proof],
    )


# -- the responder (Mishale side) -----------------------------------------------------------------

Answer = Callable[[str | None, bytes], Awaitable[ReceiptReply]]


async def declare_receipt_queue(channel: AbstractChannel) -> AbstractQueue:
    """The request queue and its binding, as the broker topology defines them; idempotent."""
    return await declare_rpc_queue(channel, RECEIPT_RPC)


class ReceiptResponder:
    """Consumes receipt requests and replies with `answer(user_id, body)`; `start()`, then `stop()`."""

    def __init__(self, connection: AbstractConnection, answer: Answer, *, prefetch: int = 32) -> None:
        self.connection = connection
        self.answer = answer
        self.prefetch = prefetch
        self.answered = 0
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        self._channel = await self.connection.channel(publisher_confirms=False)
        await self._channel.set_qos(prefetch_count=self.prefetch)
        self._queue = await declare_receipt_queue(self._channel)
        self._tag = await self._queue.consume(self._on_request, no_ack=False)
        log.info("audit.receipts_serving", queue=RECEIPT_QUEUE)

    async def stop(self) -> None:
        if self._queue is not None and self._tag is not None and self._channel is not None and not self._channel.is_closed:
            try:
                await asyncio.wait_for(self._queue.cancel(self._tag), timeout=5)
            except Exception as error:  # the channel may be gone already; the broker requeues anyway
                log.debug("audit.receipts_cancel_failed", error=repr(error))
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        try:
            reply = await self.answer(message.user_id, message.body)
            if message.reply_to:
                await self._reply(message, reply)
            self.answered += 1
        except Exception as error:  # one bad request must not stop the responder; the caller retries
            log.warning("audit.receipt_reply_failed", error=f"{type(error).__name__}: {error}"[:300])
        finally:
            try:
                await message.ack()
            except Exception as error:  # channel gone: the request is requeued and answered again
                log.debug("audit.receipt_ack_lost", error=repr(error))

    async def _reply(self, message: AbstractIncomingMessage, reply: ReceiptReply) -> None:
        # Not mandatory, not confirmed: a reply is best effort (the caller retries), and RabbitMQ
        # before 3.12 returns mandatory publishes to direct reply-to as unroutable although it
        # delivers them.
        assert self._channel is not None
        await self._channel.default_exchange.publish(
            aio_pika.Message(
                reply.model_dump_json().encode(), content_type=CONTENT_TYPE, correlation_id=message.correlation_id
            ),
            routing_key=str(message.reply_to),
            mandatory=False,
        )


# -- the client (partner side) --------------------------------------------------------------------


class ReceiptUnavailable(BrokerError):
    """No receipt could be obtained: no answer in time, or the log does not hold the event."""


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt that verified, its record, and the checkpoint the witness accepted for it."""

    receipt: Receipt
    record: AuditRecord
    checkpoint: Checkpoint


class ReceiptClient:
    """A partner's receipt requests over its own broker connection (it needs no queue of its own)."""

    def __init__(
        self,
        connection: AbstractConnection,
        *,
        partner_id: str,
        witness: CheckpointWitness,
        timeout: float = 5.0,
        retry_interval: float = 0.2,
    ) -> None:
        self.connection = connection
        self.partner_id = partner_id
        self.witness = witness
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._channel: AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._lock = asyncio.Lock()

    async def fetch_receipt(self, event_id: uuid.UUID | str, *, event: Any = None, wait: float = 10.0) -> VerifiedReceipt:
        """The verified receipt of `event_id`; the witness is advanced to its checkpoint.

        Retries `not_found` / `pending` for up to `wait` seconds (the audit worker appends a moment
        after the event is published). With `event` (the partner's own copy of it), the record must
        be exactly that event's. Raises `ReceiptUnavailable`, `ReceiptError` (a receipt that does not
        prove what it claims) or a `WitnessError` (`ForkError`, `RollbackError`: the log was rewritten).
        """
        wanted = event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        async with self._lock:  # one witness update at a time: each proof starts where the last ended
            while True:
                latest = self.witness.latest
                request = ReceiptRequest(event_id=wanted, known_size=latest.size if latest else None)
                reply = await self._call(request, timeout=max(min(self.timeout, deadline - loop.time()), self.retry_interval))
                if reply is None:  # lost (no responder at that moment, a worker restarting) or slow
                    if loop.time() < deadline:
                        continue
                    raise ReceiptUnavailable(
                        f"no answer from the audit worker within {wait:g} s (is `mshale-fl worker audit` running?)"
                    )
                if reply.status == "ok":
                    return self._verify(wanted, reply, event)
                if reply.status in ("not_found", "pending") and loop.time() < deadline:
                    await asyncio.sleep(self.retry_interval)
                    continue
                raise ReceiptUnavailable(f"no receipt for event {wanted}: {reply.status} ({reply.detail})")

    def _verify(self, wanted: uuid.UUID, reply: ReceiptReply, event: Any) -> VerifiedReceipt:
        if reply.receipt is None:
            raise ReceiptError("the reply says ok but carries no receipt")
        receipt = Receipt.from_dict(reply.receipt)
        record, checkpoint = verify_receipt(receipt, self.witness.verifier, event=event, origin=self.witness.origin)
        if record.event_uuid != wanted:
            raise ReceiptError(f"asked for event {wanted}, the receipt is for {record.event_id}")
        if record.partner_id != self.partner_id:
            raise ReceiptError(f"the receipt's record is about {record.partner_id!r}, not {self.partner_id!r}")
        latest = self.witness.latest
        proof: list[bytes] = []
        if latest is not None and reply.consistency_from == latest.size:
            try:
                proof = [strict_b64decode(node) for node in reply.consistency_proof]
            except (binascii.Error, ValueError) as error:
                raise ReceiptError(f"the consistency proof is not base64: {error}") from error
        # Without a matching proof the witness refuses any checkpoint that is not its own: safe.
        self.witness.update(checkpoint.note, proof)
        return VerifiedReceipt(receipt=receipt, record=record, checkpoint=checkpoint)

    async def _call(self, request: ReceiptRequest, *, timeout: float) -> ReceiptReply | None:
        """One request and its reply, or None if no reply came within `timeout`."""
        exchange = await self._open()
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        try:
            await exchange.publish(
                aio_pika.Message(
                    request.model_dump_json().encode(),
                    content_type=CONTENT_TYPE,
                    correlation_id=correlation_id,
                    reply_to=DIRECT_REPLY_TO,
                    user_id=self.partner_id,
                    expiration=timeout,  # an unanswered request must not be answered after we gave up
                ),
                routing_key=receipt_routing_key(self.partner_id),
            )
            try:
                body = await asyncio.wait_for(future, timeout=timeout)
            except TimeoutError:
                return None
        finally:
            self._waiting.pop(correlation_id, None)
        try:
            return ReceiptReply.model_validate_json(body)
        except ValidationError as error:
            raise ReceiptError(f"the reply is not a receipt reply: {error.errors()[0]['msg']}") from None

    async def _open(self) -> aio_pika.abc.AbstractExchange:
        if self._exchange is None or self._channel is None or self._channel.is_closed:
            # Direct reply-to: consume the pseudo-queue (no-ack) on the channel that publishes.
            self._channel = await self.connection.channel(publisher_confirms=True)
            replies = await self._channel.get_queue(DIRECT_REPLY_TO, ensure=False)
            await replies.consume(self._on_reply, no_ack=True)
            self._exchange = await self._channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        return self._exchange

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message.body)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = self._exchange = None


async def fetch_receipt(
    connection: AbstractConnection,
    event_id: uuid.UUID | str,
    *,
    partner_id: str,
    witness: CheckpointWitness,
    event: Any = None,
    wait: float = 10.0,
) -> VerifiedReceipt:
    """One-off `ReceiptClient(...).fetch_receipt(...)` on `connection` (the partner's own broker user)."""
    client = ReceiptClient(connection, partner_id=partner_id, witness=witness)
    try:
        return await client.fetch_receipt(event_id, event=event, wait=wait)
    finally:
        await client.close()
