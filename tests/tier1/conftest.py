"""Fixtures of the Tier 1 tests: a ledger, partners registered on the broker of a throw-away vhost, an observer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import aio_pika
import pytest
from sqlalchemy import Engine

from mshale_fl.broker import EVENTS_EXCHANGE, declare_topology
from mshale_fl.config import Settings
from mshale_fl.ledger import BrokerAdmin, open_ledger, register_partner
from mshale_fl.ledger.agreements import AgreementTerms
from mshale_fl.ledger.partners import Registration
from mshale_fl.testing.rabbitmq import MANAGEMENT_URL, amqp_url, management_client

from .support import unique_partner_id

OBSERVER_QUEUE = "test.observer"


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = open_ledger(ledger_url)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, broker_url: str, ledger_url: str) -> Settings:
    return Settings(home=tmp_path / ".mshale", broker_url=broker_url, ledger_url=ledger_url)


@pytest.fixture
def admin(vhost: str) -> Iterator[BrokerAdmin]:
    with BrokerAdmin(MANAGEMENT_URL, "guest", "guest", vhost) as admin:
        yield admin


@pytest.fixture
def broker_users() -> Iterator[list[str]]:
    """Broker users are global to the shared RabbitMQ: every one a test creates is deleted afterwards."""
    created: list[str] = []
    yield created
    with management_client() as client:
        for name in created:
            client.delete(f"/api/users/{name}")


Register = Callable[..., Registration]


@pytest.fixture
def register(engine: Engine, admin: BrokerAdmin, broker_users: list[str]) -> Register:
    """Register a partner the way `partners add` does: ledger rows, API key, and its own broker user."""

    def make(*, tier: int = 1, agreements: Sequence[AgreementTerms] = (), on_broker: bool = True) -> Registration:
        partner_id = unique_partner_id()
        if on_broker:
            broker_users.append(partner_id)
        return register_partner(engine, partner_id, tier=tier, agreements=agreements, broker=admin if on_broker else None)

    return make


def partner_url(vhost: str, registration: Registration) -> str:
    from mshale_fl.ledger import broker_password

    return amqp_url(vhost, registration.partner.id, broker_password(registration.key.api_key.get_secret_value()))


@pytest.fixture
async def mishale(broker_url: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """Mishale's own connection (guest), with the topology declared."""
    connection = await aio_pika.connect(broker_url)
    await declare_topology(connection, delivery_limit=5)
    yield connection
    await connection.close()


@pytest.fixture
async def observer(mishale: aio_pika.abc.AbstractConnection) -> aio_pika.abc.AbstractQueue:
    """A queue bound to `#` on the events exchange before anything is published: it sees every event."""
    channel = await mishale.channel()
    queue = await channel.declare_queue(OBSERVER_QUEUE, durable=True)
    await queue.bind(EVENTS_EXCHANGE, routing_key="#")
    return queue


async def drain(queue: aio_pika.abc.AbstractQueue) -> list[aio_pika.abc.AbstractIncomingMessage]:
    messages = []
    while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
        messages.append(message)
    return messages
