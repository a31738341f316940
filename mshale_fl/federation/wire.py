"""How Flower messages travel over RabbitMQ: exchange, queues, routing keys, bodies and properties.

    server --<partner>.grid.instruction--> mshale.grid (topic) --> mshale.reply.<partner>.grid (the partner's queue)
    partner --<partner>.grid.reply--------> mshale.grid --------> mshale.grid.replies (the server's queue)
    partner --<partner>.grid.hello|bye----> mshale.grid --------> mshale.grid.presence (the server's queue)

Bodies are Flower's own serialisation: `flwr.common.serde.message_to_proto(message)` as protobuf
bytes, so whatever a `Message` can carry (ArrayRecords, ConfigRecords, errors) crosses unchanged.
Presence messages (hello, bye) are small JSON documents (`NodeHello`).

Every routing key starts with the partner id, so the broker's topic permissions (`^{username}\\.`
on `mshale.grid`) stop a partner from replying or saying hello as another; the `user_id` property
(checked by RabbitMQ against the authenticated user) tells the server who really sent a reply.

`mshale.grid` has no alternate exchange on purpose: every publish is `mandatory`, so an
instruction for a partner whose queue does not exist comes back at once (`UnroutableError`)
and the server counts that partner as unavailable instead of waiting for a reply that cannot come.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from aio_pika.abc import AbstractChannel, AbstractConnection, ExchangeType
from flwr.app import Message
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=no-name-in-module
from google.protobuf.message import DecodeError
from pamqp.commands import Basic
from pydantic import Field

from mshale_fl.broker.topology import GRID_EXCHANGE
from mshale_fl.schemas.common import PartnerId, StrictModel, UtcDatetime

REPLY_QUEUE = "mshale.grid.replies"
PRESENCE_QUEUE = "mshale.grid.presence"

FLOWER_CONTENT_TYPE = "application/x-protobuf"
FLOWER_MESSAGE_TYPE = "flwr.message"
HELLO_CONTENT_TYPE = "application/json"
HELLO_MESSAGE_TYPE = "mshale.grid.hello"
BYE_MESSAGE_TYPE = "mshale.grid.bye"
APP_ID = "mshale-fl"
PERSISTENT = 2
TRANSIENT = 1

PRESENCE_TTL_MS = 60_000
"""A hello older than this is dropped by the presence queue itself: a server that starts after a
long outage does not believe in partners that said hello an hour ago."""

PARTNER_QUEUE_EXPIRES_MS = 7 * 24 * 3600 * 1000
"""A partner queue nobody has used for a week is deleted by the broker (a partner that left for good)."""

REPLY_QUEUE_ARGUMENTS = {"x-queue-type": "quorum"}
PRESENCE_QUEUE_ARGUMENTS = {"x-queue-type": "quorum", "x-message-ttl": PRESENCE_TTL_MS}
PARTNER_QUEUE_ARGUMENTS = {"x-queue-type": "quorum", "x-expires": PARTNER_QUEUE_EXPIRES_MS}

_PARTNER_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")


def _checked(partner_id: str) -> str:
    # Routing keys and queue names are built from the id: a '.' or '#' in it would widen a binding.
    if not _PARTNER_PATTERN.match(partner_id):
        raise ValueError(f"{partner_id!r} is not a partner id (lower-case letters, digits and '-', 2-63 characters)")
    return partner_id


def instruction_key(partner_id: str) -> str:
    return f"{_checked(partner_id)}.grid.instruction"


def reply_key(partner_id: str) -> str:
    return f"{_checked(partner_id)}.grid.reply"


def hello_key(partner_id: str) -> str:
    return f"{_checked(partner_id)}.grid.hello"


def bye_key(partner_id: str) -> str:
    return f"{_checked(partner_id)}.grid.bye"


def partner_queue(partner_id: str) -> str:
    """The partner's instruction queue: a `mshale.reply.<partner id>.*` name, which a partner may configure and read."""
    return f"mshale.reply.{_checked(partner_id)}.grid"


def partner_of_routing_key(routing_key: str) -> str | None:
    """The partner id a grid routing key starts with, or None if the key is not one of ours."""
    partner_id, _, rest = routing_key.partition(".")
    if rest not in ("grid.reply", "grid.hello", "grid.bye", "grid.instruction"):
        return None
    return partner_id if _PARTNER_PATTERN.match(partner_id) else None


# -- Flower messages ------------------------------------------------------------------------------


class WireFormatError(ValueError):
    """A body that is not a serialised Flower message (or hello) of this protocol."""


def encode_message(message: Message) -> bytes:
    return message_to_proto(message).SerializeToString()


def decode_message(body: bytes) -> Message:
    proto = ProtoMessage()
    try:
        proto.ParseFromString(body)
    except DecodeError as error:
        raise WireFormatError(f"not a Flower message: {error}") from None
    if not proto.HasField("metadata"):
        raise WireFormatError("not a Flower message: no metadata")
    try:
        return message_from_proto(proto)
    except Exception as error:  # serde raises plain errors for records it cannot rebuild
        raise WireFormatError(f"not a Flower message: {type(error).__name__}: {error}") from None


def message_properties(message: Message, *, user_id: str | None) -> Basic.Properties:
    """AMQP properties of a Flower message: its id, the instruction it answers, its lifetime.

    `message_id` is the Flower message id; `correlation_id` is the id of the instruction the
    conversation is about (the instruction's own id, or the id a reply answers), so the broker's
    tracing and our logs can pair them. `expiration` is what is left of the Flower TTL, so an
    instruction that nobody picked up in time dies in the queue instead of being trained on late.
    """
    metadata = message.metadata
    correlation = metadata.reply_to_message_id or metadata.message_id
    remaining_ms = max(int((metadata.created_at + metadata.ttl - datetime.now(UTC).timestamp()) * 1000), 1)
    return Basic.Properties(
        content_type=FLOWER_CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=metadata.message_id,
        correlation_id=correlation,
        message_type=FLOWER_MESSAGE_TYPE,
        expiration=str(remaining_ms),
        timestamp=datetime.now(UTC),
        user_id=user_id,
        app_id=APP_ID,
        headers={
            "x-flwr-message-type": metadata.message_type,
            "x-flwr-group-id": metadata.group_id,
            "x-flwr-run-id": str(metadata.run_id),
        },
    )


# -- presence -------------------------------------------------------------------------------------


class NodeHello(StrictModel):
    """What a partner announces when it joins and then every `heartbeat_seconds` (or `bye` when it leaves)."""

    kind: Literal["hello", "bye"] = "hello"
    partner_id: PartnerId
    node_id: int = Field(ge=2, lt=2**63)
    sent_at: UtcDatetime
    heartbeat_seconds: float = Field(gt=0, le=3600)
    flwr_version: str = Field(max_length=40)


def encode_hello(hello: NodeHello) -> bytes:
    return hello.model_dump_json().encode()


def decode_hello(body: bytes) -> NodeHello:
    try:
        return NodeHello.model_validate_json(body)
    except ValueError as error:
        raise WireFormatError(f"not a grid hello: {error}") from None


def hello_properties(hello: NodeHello, *, user_id: str | None, message_id: str) -> Basic.Properties:
    # Transient and short-lived: a hello is only worth anything while it is fresh.
    return Basic.Properties(
        content_type=HELLO_CONTENT_TYPE,
        delivery_mode=TRANSIENT,
        message_id=message_id,
        message_type=HELLO_MESSAGE_TYPE if hello.kind == "hello" else BYE_MESSAGE_TYPE,
        expiration=str(int(min(hello.heartbeat_seconds * 3, PRESENCE_TTL_MS / 1000) * 1000)),
        timestamp=hello.sent_at,
        user_id=user_id,
        app_id=APP_ID,
    )


# -- topology -------------------------------------------------------------------------------------


async def declare_grid_exchange(channel: AbstractChannel) -> None:
    await channel.declare_exchange(GRID_EXCHANGE, ExchangeType.TOPIC, durable=True)


async def declare_server_queues(connection: AbstractConnection) -> None:
    """The exchange and the server's two queues (idempotent; the server runs it at every start)."""
    channel = await connection.channel(publisher_confirms=False)
    try:
        await declare_grid_exchange(channel)
        exchange = await channel.get_exchange(GRID_EXCHANGE)
        replies = await channel.declare_queue(REPLY_QUEUE, durable=True, arguments=REPLY_QUEUE_ARGUMENTS)
        await replies.bind(exchange, routing_key="*.grid.reply")
        presence = await channel.declare_queue(PRESENCE_QUEUE, durable=True, arguments=PRESENCE_QUEUE_ARGUMENTS)
        await presence.bind(exchange, routing_key="*.grid.hello")
        await presence.bind(exchange, routing_key="*.grid.bye")
    finally:
        if not channel.is_closed:
            await channel.close()


__all__ = [
    "GRID_EXCHANGE",
    "PRESENCE_QUEUE",
    "REPLY_QUEUE",
    "NodeHello",
    "WireFormatError",
    "bye_key",
    "decode_hello",
    "decode_message",
    "declare_server_queues",
    "encode_hello",
    "encode_message",
    "hello_key",
    "hello_properties",
    "instruction_key",
    "message_properties",
    "partner_of_routing_key",
    "partner_queue",
    "reply_key",
]
