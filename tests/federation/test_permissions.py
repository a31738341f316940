"""A partner logged in as its own broker user, with the permissions the grid needs, and nothing more.

The permissions are exactly the ledger's `partner_permissions` (vhost permissions and topic
permissions on `mshale.events` and `mshale.grid`), applied as `partners add` does. RabbitMQ
enforces them: the partner runs a node, but cannot
reply or say hello as another partner, nor bind its queue to another partner's instructions or to
the replies of others.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused
from flwr.supercore.run import Run

from mshale_fl.federation import AmqpGrid, PartnerNode, node_id_for, wire
from mshale_fl.ledger.broker_identity import BrokerAdmin
from mshale_fl.testing.rabbitmq import MANAGEMENT_URL, amqp_url, management_client

from .support import echo_app, running_nodes, train_message

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def partner_url(vhost: str) -> Iterator[tuple[str, str]]:
    """A partner user with exactly the ledger's permissions (what `partners add` gives)."""
    partner_id = f"lab-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    user = quote(partner_id, safe="")
    with management_client() as client:
        client.put(f"/api/users/{user}", json={"password": password, "tags": ""}).raise_for_status()
        try:
            with BrokerAdmin(MANAGEMENT_URL, "guest", "guest", vhost) as admin:
                admin.apply_permissions(partner_id)
            yield partner_id, amqp_url(vhost, partner_id, password)
        finally:
            client.delete(f"/api/users/{user}")


def test_a_partner_with_its_own_broker_user_takes_part(broker_url: str, partner_url: tuple[str, str]) -> None:
    partner_id, url = partner_url
    with AmqpGrid(broker_url, trusted_users=()) as grid:
        grid.set_run(Run.create_empty(7))
        with running_nodes([PartnerNode(url, partner_id, echo_app(), heartbeat_seconds=0.3)]):
            assert grid.wait_for_partners(1, timeout=10) == [partner_id]
            (reply,) = grid.send_and_receive([train_message(node_id_for(partner_id), [1.5])], timeout=20)
    assert not reply.has_error()
    assert reply.content["arrays"].to_numpy_ndarrays()[0].tolist() == [3.0]


async def _refused(url: str, action) -> bool:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        try:
            await action(channel)
        except ChannelAccessRefused:
            return True
        return False
    finally:
        await connection.close()


def test_the_broker_stops_a_partner_from_acting_as_another(broker_url: str, partner_url: tuple[str, str]) -> None:
    partner_id, url = partner_url
    with AmqpGrid(broker_url):  # declares the exchange and the server queues
        pass

    async def publish(key: str, user_id: str):
        async def action(channel: aio_pika.abc.AbstractChannel) -> None:
            exchange = await channel.get_exchange(wire.GRID_EXCHANGE, ensure=False)
            await exchange.publish(aio_pika.Message(b"x", user_id=user_id), routing_key=key)

        return await _refused(url, action)

    async def bind(key: str):
        async def action(channel: aio_pika.abc.AbstractChannel) -> None:
            queue = await channel.declare_queue(
                wire.partner_queue(partner_id), durable=True, arguments=wire.PARTNER_QUEUE_ARGUMENTS
            )
            await queue.bind(wire.GRID_EXCHANGE, routing_key=key)

        return await _refused(url, action)

    async def checks() -> dict[str, bool]:
        return {
            "own reply": await publish(wire.reply_key(partner_id), partner_id),
            "own instructions": await bind(wire.instruction_key(partner_id)),
            "reply as another": await publish(wire.reply_key("lab-other"), partner_id),
            "hello as another": await publish(wire.hello_key("lab-other"), partner_id),
            "instruction to itself": await publish(wire.instruction_key(partner_id), partner_id),
            "another's instructions": await bind(wire.instruction_key("lab-other")),
            "everyone's replies": await bind("*.grid.reply"),
        }

    refused = asyncio.run(checks())
    assert refused == {
        "own reply": False,
        "own instructions": False,
        "reply as another": True,
        "hello as another": True,
        "instruction to itself": True,
        "another's instructions": True,
        "everyone's replies": True,
    }


def test_a_partner_without_the_grid_permissions_gets_one_clear_error(broker_url: str, vhost: str) -> None:
    from mshale_fl.broker.errors import BrokerError

    partner_id = f"lab-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    user, path = quote(partner_id, safe=""), quote(vhost, safe="")
    # A user provisioned before the grid existed: the events exchange and its own queues only.
    own = rf"amq\.gen-.*|mshale\.reply\.{re.escape(partner_id)}\..*"
    old = {"configure": rf"^({own})$", "write": rf"^(mshale\.events|{own})$", "read": rf"^(mshale\.events|{own})$"}
    with AmqpGrid(broker_url), management_client() as client:
        client.put(f"/api/users/{user}", json={"password": password, "tags": ""}).raise_for_status()
        try:
            client.put(
                f"/api/permissions/{path}/{user}",
                json=old,
            ).raise_for_status()
            node = PartnerNode(amqp_url(vhost, partner_id, password), partner_id, echo_app(), heartbeat_seconds=0.3)
            with pytest.raises(BrokerError, match="needs the grid permissions"):
                asyncio.run(node.run(asyncio.Event()))
        finally:
            client.delete(f"/api/users/{user}")
