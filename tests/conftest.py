from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mshale_fl.config import Settings
from mshale_fl.testing.rabbitmq import amqp_url, temporary_vhost


@pytest.fixture
def vhost() -> Iterator[str]:
    """A fresh RabbitMQ virtual host on the real broker, deleted after the test."""
    with temporary_vhost() as name:
        yield name


@pytest.fixture
def broker_url(vhost: str) -> str:
    return amqp_url(vhost)


@pytest.fixture
def settings(tmp_path: Path, broker_url: str) -> Settings:
    return Settings(home=tmp_path / ".mshale", broker_url=broker_url)


@pytest.fixture
def shared_dir() -> Path:
    """The project's shared folder (corpora), beside the checkout."""
    root = Path(__file__).resolve().parents[1]
    for candidate in (root.parent / "shared", root / "shared"):
        if candidate.is_dir():
            return candidate
    pytest.fail("../shared (with corpora/wlp) is missing beside the checkout")
