"""The RabbitMQ topology of mshale-fl, as data, and its idempotent declaration.

    mshale.events (topic, durable) --*.<type>--> mshale.<role> (quorum, delivery limit, DLX mshale.dlx)
        |                          \\--*.<type>--> mshale.events.log (stream: the replayable history)
        \\-- alternate exchange --> mshale.unroutable (fanout) --> mshale.unroutable (quorum)
    mshale.dlx (fanout) --> mshale.dead-letter (quorum)

Every binding is an explicit `*.<type>` key for a type in `EVENT_TYPES` (never `#`), so a message
of an unknown type matches nothing and is kept by the alternate exchange instead of vanishing.
Roles and the event types each one consumes are a table (`ROLES`); a later issue adds a role by
appending a `Role`.

Declaring is idempotent: RabbitMQ accepts a re-declaration with identical arguments as a no-op,
so any number of processes may run `declare_topology` at once, at every start. A re-declaration
with *different* arguments (say a new delivery limit) is refused by the broker; that surfaces as
`TopologyMismatchError`, because queue arguments cannot change in place.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractQueue,
    ExchangeType,
)
from aiormq.exceptions import ChannelClosed, ChannelPreconditionFailed
from mshale_fl.broker.errors import TopologyMismatchError
from mshale_fl.schemas import EVENT_TYPES
from mshale_fl.schemas.rpc import RECEIPT_QUEUE, RECEIPT_ROUTING_SUFFIX

from mshale_fl.config import Settings

EVENTS_EXCHANGE = "mshale.events"
GRID_EXCHANGE = "mshale.grid"
"""Flower messages of federated training (declared by the training server, see mshale_fl.federation)."""
UNROUTABLE_EXCHANGE = "mshale.unroutable"
UNROUTABLE_QUEUE = "mshale.unroutable"
DEAD_LETTER_EXCHANGE = "mshale.dlx"
DEAD_LETTER_QUEUE = "mshale.dead-letter"
EVENT_LOG_STREAM = "mshale.events.log"

# Retention of the replayable history. Streams drop whole segments (500 MB by default), oldest
# first, once either limit is passed. The audit log, not the stream, is the record of last resort.
STREAM_MAX_AGE = "365D"
STREAM_MAX_LENGTH_BYTES = 50 * 1024**3


@dataclass(frozen=True)
class Role:
    """A kind of Mishale worker: one quorum queue, bound to the event types the role consumes."""

    name: str
    event_types: tuple[str, ...]
    single_active_consumer: bool = False
    """Only one consumer of the queue receives messages at a time (the others stand by), so events
    are applied in queue order, which an append-only log needs."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.event_types) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"role {self.name!r} binds unknown event types {unknown}")

    @property
    def queue(self) -> str:
        return f"mshale.{self.name}"

    @property
    def binding_keys(self) -> tuple[str, ...]:
        return tuple(f"*.{event_type}" for event_type in self.event_types)


ROLES: tuple[Role, ...] = (
    Role("validate", ("spec.submitted", "vectors.submitted")),
    Role(
        "ledger",
        (
            "submission.accepted",
            "submission.rejected",
            "update.masked",
            "round.started",
            "round.completed",
            "budget.low",
            "partner.paused",
            "model.published",
        ),
    ),
    Role("audit", EVENT_TYPES, single_active_consumer=True),
    # The predict worker keeps the model registry too: it serves the versions the registry records.
    Role("predict", ("prediction.requested", "model.published")),
)


def get_role(name: str) -> Role:
    for role in ROLES:
        if role.name == name:
            return role
    raise ValueError(f"unknown worker role {name!r}; known roles: {', '.join(r.name for r in ROLES)}")


def role_queue_arguments(role: Role, *, delivery_limit: int) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        # A message requeued more often than this (handler keeps failing, worker keeps crashing)
        # is dead-lettered instead of looping forever.
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        # RabbitMQ >= 3.10: the queue keeps a dead-lettered message until mshale.dead-letter has
        # confirmed it, instead of fire-and-forget. The broker requires reject-publish with it.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    if role.single_active_consumer:
        arguments["x-single-active-consumer"] = True
    return arguments


QUORUM = {"x-queue-type": "quorum"}


def stream_arguments(*, max_age: str = STREAM_MAX_AGE, max_length_bytes: int = STREAM_MAX_LENGTH_BYTES) -> dict[str, Any]:
    return {"x-queue-type": "stream", "x-max-age": max_age, "x-max-length-bytes": max_length_bytes}


@dataclass(frozen=True)
class RpcQueue:
    """A request queue for RPC over `mshale.events` (replies go to the caller's reply-to).

    Requests use four-word routing keys (`<partner-id>.rpc.<service>.<method>`), outside the
    event namespace, so they are neither logged nor kept on the stream. Requests expire and the
    queue is bounded: a request nobody answers in time is worthless, and a flood must not grow
    without limit.
    """

    name: str
    binding_key: str
    message_ttl_ms: int = 60_000
    max_length: int = 10_000

    def arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "classic",
            "x-message-ttl": self.message_ttl_ms,
            "x-max-length": self.max_length,
            "x-overflow": "reject-publish",
        }


RECEIPT_RPC = RpcQueue(RECEIPT_QUEUE, f"*.{RECEIPT_ROUTING_SUFFIX}")
MODEL_RPC = RpcQueue("mshale.rpc.model", "*.rpc.model.*")
"""`<partner-id>.rpc.model.list` / `.download`, answered by the predict workers (mshale_fl/access/wire.py)."""
RPC_QUEUES: tuple[RpcQueue, ...] = (RECEIPT_RPC, MODEL_RPC)


async def declare_rpc_queue(channel: AbstractChannel, rpc: RpcQueue) -> AbstractQueue:
    """Declare one RPC request queue and bind it; idempotent."""
    exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=True)
    queue = await channel.declare_queue(rpc.name, durable=True, arguments=rpc.arguments())
    await queue.bind(exchange, routing_key=rpc.binding_key)
    return queue


@dataclass(frozen=True)
class DeclaredTopology:
    exchanges: tuple[str, ...]
    queues: tuple[str, ...]
    bindings: int


async def declare_topology(
    connection: AbstractConnection,
    *,
    delivery_limit: int,
    roles: tuple[Role, ...] = ROLES,
    stream_max_age: str = STREAM_MAX_AGE,
    stream_max_length_bytes: int = STREAM_MAX_LENGTH_BYTES,
    attempts: int = 5,
) -> DeclaredTopology:
    """Declare every exchange, queue and binding; safe to run any number of times, concurrently.

    Uses its own short-lived channel (a failed declaration closes the channel it ran on).
    A transient refusal while another process creates the same quorum queue is retried.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await _declare_once(
                connection,
                delivery_limit=delivery_limit,
                roles=roles,
                stream_max_age=stream_max_age,
                stream_max_length_bytes=stream_max_length_bytes,
            )
        except ChannelPreconditionFailed as error:
            raise _mismatch(error) from None
        except ChannelClosed:
            if attempt == attempts:
                raise
            await asyncio.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


async def _declare_once(
    connection: AbstractConnection,
    *,
    delivery_limit: int,
    roles: tuple[Role, ...],
    stream_max_age: str,
    stream_max_length_bytes: int,
) -> DeclaredTopology:
    # A plain channel, never restored by a robust connection: declaration is a one-off.
    channel = await connection.channel(publisher_confirms=False)
    bindings = 0
    try:
        unroutable = await channel.declare_exchange(UNROUTABLE_EXCHANGE, ExchangeType.FANOUT, durable=True)
        unroutable_queue = await channel.declare_queue(UNROUTABLE_QUEUE, durable=True, arguments=QUORUM)
        await unroutable_queue.bind(unroutable, routing_key="")
        dead_letter = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, ExchangeType.FANOUT, durable=True)
        dead_letter_queue = await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True, arguments=QUORUM)
        await dead_letter_queue.bind(dead_letter, routing_key="")
        bindings += 2

        events = await channel.declare_exchange(
            EVENTS_EXCHANGE,
            ExchangeType.TOPIC,
            durable=True,
            arguments={"alternate-exchange": UNROUTABLE_EXCHANGE},
        )
        for role in roles:
            queue = await channel.declare_queue(
                role.queue, durable=True, arguments=role_queue_arguments(role, delivery_limit=delivery_limit)
            )
            for key in role.binding_keys:
                await queue.bind(events, routing_key=key)
                bindings += 1

        stream = await channel.declare_queue(
            EVENT_LOG_STREAM,
            durable=True,
            arguments=stream_arguments(max_age=stream_max_age, max_length_bytes=stream_max_length_bytes),
        )
        for event_type in EVENT_TYPES:
            await stream.bind(events, routing_key=f"*.{event_type}")
            bindings += 1
        for rpc in RPC_QUEUES:
            await declare_rpc_queue(channel, rpc)
            bindings += 1
    finally:
        if not channel.is_closed:
            await channel.close()
    return DeclaredTopology(
        exchanges=(UNROUTABLE_EXCHANGE, DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE),
        queues=(
            UNROUTABLE_QUEUE,
            DEAD_LETTER_QUEUE,
            *(role.queue for role in roles),
            EVENT_LOG_STREAM,
            *(rpc.name for rpc in RPC_QUEUES),
        ),
        bindings=bindings,
    )


def _mismatch(error: ChannelPreconditionFailed) -> TopologyMismatchError:
    # reply_text reads like "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue
    # 'mshale.ledger' in vhost '/': received the value '7' ... but current is '5'".
    text = str(error.args[0]) if error.args else str(error)
    entity = "an exchange or queue"
    for marker in ("for queue ", "for exchange "):
        if marker in text:
            entity = marker[4:] + text.split(marker, 1)[1].split(" in vhost", 1)[0]
            break
    return TopologyMismatchError(entity, text)


__all__ = [
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "EVENTS_EXCHANGE",
    "EVENT_LOG_STREAM",
    "ROLES",
    "UNROUTABLE_EXCHANGE",
    "UNROUTABLE_QUEUE",
    "DeclaredTopology",
    "Role",
    "declare_topology",
    "get_role",
    "role_queue_arguments",
    "stream_arguments",
]


async def declare_configured_topology(connection: AbstractConnection, settings: Settings) -> DeclaredTopology:
    """`declare_topology` with the deployment's settings (delivery limit, stream retention)."""
    return await declare_topology(
        connection,
        delivery_limit=settings.delivery_limit,
        stream_max_age=settings.stream_max_age,
        stream_max_length_bytes=settings.stream_max_length_bytes,
    )
