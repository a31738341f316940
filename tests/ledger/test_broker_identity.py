"""Security on the real broker: a partner cannot publish as another, and revocation is immediate.

Partners are registered the way `partners add` does it (ledger + broker user through the
management API) in a throw-away vhost; their broker users are deleted after each test.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator

import aio_pika
import aiormq.exceptions
import pytest
from mshale_fl.schemas.events import new_event
from mshale_fl.schemas.payloads import SubmissionAccepted
from sqlalchemy import Engine

from mshale_fl.ledger.broker_identity import (
    BrokerAdmin,
    BrokerAdminError,
    broker_password,
    partner_permissions,
    vhost_from_amqp_url,
)
from mshale_fl.ledger.partners import Registration, register_partner, revoke_partner
from mshale_fl.testing.rabbitmq import MANAGEMENT_URL, amqp_url, management_client

from .helpers import unique_partner_id

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def admin(vhost: str) -> Iterator[BrokerAdmin]:
    with BrokerAdmin(MANAGEMENT_URL, "guest", "guest", vhost) as admin:
        yield admin


def register(engine: Engine, admin: BrokerAdmin, broker_users: list[str]) -> Registration:
    partner_id = unique_partner_id()
    broker_users.append(partner_id)
    return register_partner(engine, partner_id, tier=1, broker=admin)


def partner_url(vhost: str, registration: Registration) -> str:
    return amqp_url(vhost, registration.partner.id, broker_password(registration.key.api_key.get_secret_value()))


async def declare_events_exchange(vhost: str) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractQueue]:
    """As Mishale (guest): the events exchange and a queue that sees everything published to it."""
    connection = await aio_pika.connect(amqp_url(vhost))
    channel = await connection.channel()
    exchange = await channel.declare_exchange("mshale.events", aio_pika.ExchangeType.TOPIC, durable=True)
    everything = await channel.declare_queue("all-events", durable=True)
    await everything.bind(exchange, "#")
    await channel.declare_queue("ledger", durable=True)
    return connection, everything


async def ignore_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    return None


async def publish(connection: aio_pika.abc.AbstractConnection, *, routing_key: str, user_id: str) -> None:
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange("mshale.events", ensure=False)
    event = new_event(
        "submission.accepted", SubmissionAccepted(submission_id=uuid.uuid4(), kind="spec", items=1), partner_id=user_id
    )
    await exchange.publish(
        aio_pika.Message(event.model_dump_json().encode(), user_id=user_id, message_id=str(event.event_id)),
        routing_key=routing_key,
        mandatory=False,
    )
    await channel.close()


def test_partner_permissions_are_confined_to_its_own_names() -> None:
    permissions = partner_permissions("lab-a")
    events, grid = permissions.topic("mshale.events"), permissions.topic("mshale.grid")
    assert events.write == r"^{username}\."  # expanded by RabbitMQ to the authenticated user
    # On the grid a partner may only reply/announce as itself and bind its own instructions.
    assert grid.write == r"^{username}\.grid\.(reply|hello|bye)$"
    assert grid.read == r"^{username}\.grid\.instruction$"

    def allows(pattern: str, name: str) -> bool:
        return re.search(pattern, name) is not None

    for name in ("amq.gen-Xy1", "mshale.reply.lab-a.predictions"):
        assert allows(permissions.configure, name) and allows(permissions.read, name)
    for name in (
        "mshale.reply.lab-b.predictions",
        "mshale.reply.lab-aa.x",
        "ledger",
        "mshale.events",
        "mshale.events.log",
    ):
        assert not allows(permissions.configure, name)
        # Read on the events exchange lets it bind its reply queues (keys limited by topic read).
        assert allows(permissions.read, name) == (name == "mshale.events")
    assert events.read == r"^{username}\."
    assert allows(permissions.write, "mshale.events") and allows(permissions.write, "mshale.grid")
    for name in ("mshale.events.log", "mshale.events.dlx", "amq.default", "ledger", "mshale.reply.lab-b.x"):
        assert not allows(permissions.write, name)


def test_vhost_is_read_from_the_broker_url() -> None:
    assert vhost_from_amqp_url("amqp://u:p@host:5672/") == "/"
    assert vhost_from_amqp_url("amqp://u:p@host:5672") == "/"
    assert vhost_from_amqp_url("amqp://u:p@host:5672/%2F") == "/"
    assert vhost_from_amqp_url("amqp://u:p@host/mshale-prod") == "mshale-prod"


async def test_a_partner_cannot_publish_as_another_partner(
    engine: Engine, vhost: str, admin: BrokerAdmin, broker_users: list[str]
) -> None:
    mishale, everything = await declare_events_exchange(vhost)
    alice = register(engine, admin, broker_users)
    bob = register(engine, admin, broker_users)
    connection = await aio_pika.connect(partner_url(vhost, alice))
    try:
        # Its own identity and prefix: confirmed by the broker.
        await publish(connection, routing_key=f"{alice.partner.id}.submission.accepted", user_id=alice.partner.id)

        # Another partner's user_id: the broker checks it against the authenticated user.
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="user_id"):
            await publish(connection, routing_key=f"{alice.partner.id}.submission.accepted", user_id=bob.partner.id)

        # Another partner's routing-key prefix: topic permissions refuse it.
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused, match=bob.partner.id):
            await publish(connection, routing_key=f"{bob.partner.id}.submission.accepted", user_id=alice.partner.id)

        # A system routing key is not its prefix either.
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await publish(connection, routing_key="mishale.round.started", user_id=alice.partner.id)

        # Nor may it read Mishale's worker queues.
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            queue = await channel.get_queue("ledger", ensure=False)
            await queue.consume(ignore_message)
    finally:
        await connection.close()
    await asyncio.sleep(0.2)
    delivered = []
    while (message := await everything.get(fail=False, timeout=5)) is not None:
        delivered.append(message.routing_key)
        await message.ack()
    assert delivered == [f"{alice.partner.id}.submission.accepted"]
    await mishale.close()


async def test_only_the_key_derived_password_logs_in(
    engine: Engine, vhost: str, admin: BrokerAdmin, broker_users: list[str]
) -> None:
    alice = register(engine, admin, broker_users)
    bob = register(engine, admin, broker_users)
    wrong = amqp_url(vhost, alice.partner.id, broker_password(bob.key.api_key.get_secret_value()))
    with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(wrong)
    connection = await aio_pika.connect(partner_url(vhost, alice))
    await connection.close()


async def test_a_revoked_partner_is_disconnected_and_cannot_connect(
    engine: Engine, vhost: str, admin: BrokerAdmin, broker_users: list[str]
) -> None:
    mishale, _everything = await declare_events_exchange(vhost)
    alice = register(engine, admin, broker_users)
    url = partner_url(vhost, alice)
    connection = await aio_pika.connect(url)
    await publish(connection, routing_key=f"{alice.partner.id}.submission.accepted", user_id=alice.partner.id)

    await asyncio.to_thread(revoke_partner, engine, alice.partner.id, broker=admin)

    # aio-pika's own flag tracks only close() calls; the AMQP connection underneath sees the broker's close.
    amqp_connection = connection.transport.connection
    for _ in range(50):
        if amqp_connection.is_closed:
            break
        await asyncio.sleep(0.1)
    assert amqp_connection.is_closed
    with pytest.raises((aiormq.exceptions.AMQPError, ConnectionError, RuntimeError)):
        await publish(connection, routing_key=f"{alice.partner.id}.submission.accepted", user_id=alice.partner.id)
    with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(url)
    assert not admin.user_exists(alice.partner.id)
    with management_client() as client:
        assert client.get(f"/api/connections/username/{alice.partner.id}").json() == []
    await mishale.close()


def test_an_existing_broker_user_is_never_taken_over(
    engine: Engine, vhost: str, admin: BrokerAdmin, broker_users: list[str]
) -> None:
    partner_id = unique_partner_id()
    broker_users.append(partner_id)
    with management_client() as client:
        client.put(f"/api/users/{partner_id}", json={"password": "someone-elses", "tags": ""}).raise_for_status()
    with pytest.raises(BrokerAdminError, match="already exists"):
        register_partner(engine, partner_id, tier=1, broker=admin)
    from mshale_fl.ledger.partners import get_partner

    with engine.begin() as connection:
        assert get_partner(connection, partner_id, required=False) is None  # ledger rolled back too
