"""Throw-away RabbitMQ virtual hosts, so tests and benchmarks never share broker state."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import httpx

MANAGEMENT_URL = "http://127.0.0.1:15672"
AMQP_HOST = "127.0.0.1:5672"


def management_client(url: str = MANAGEMENT_URL, user: str = "guest", password: str = "guest") -> httpx.Client:
    return httpx.Client(base_url=url, auth=(user, password), timeout=30)


@contextmanager
def temporary_vhost(prefix: str = "mshale-test") -> Iterator[str]:
    """Create a vhost with full permissions for guest; delete it (and all it holds) afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    path = quote(name, safe="")
    with management_client() as client:
        client.put(f"/api/vhosts/{path}").raise_for_status()
        client.put(
            f"/api/permissions/{path}/guest", json={"configure": ".*", "write": ".*", "read": ".*"}
        ).raise_for_status()
        try:
            yield name
        finally:
            client.delete(f"/api/vhosts/{path}")


def amqp_url(vhost: str, user: str = "guest", password: str = "guest") -> str:
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{AMQP_HOST}/{quote(vhost, safe='')}"
