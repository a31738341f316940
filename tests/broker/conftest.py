from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractRobustConnection

from mshale_fl.broker import Publisher, connect, declare_topology
from mshale_fl.config import Settings


@pytest.fixture
async def connection(broker_url: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await connect(broker_url, name="mshale-fl tests")
    yield connection  # type: ignore[misc]
    await connection.close()


@pytest.fixture
async def topology(connection: AbstractRobustConnection, settings: Settings) -> None:
    await declare_topology(connection, delivery_limit=settings.delivery_limit)


@pytest.fixture
async def publisher(connection: AbstractRobustConnection, topology: None, settings: Settings) -> AsyncIterator[Publisher]:
    publisher = await Publisher.open(connection, window=settings.publish_window)
    yield publisher
    await publisher.close()
