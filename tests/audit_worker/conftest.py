"""Fixtures of the audit worker tests: a signing key, a local log, the real broker's vhost."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.log import TransparencyLog
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.records import parse_record
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.broker import Publisher, connect, declare_topology

ORIGIN = "mshale.test/audit-worker"


def logged_ids(log_dir: Path) -> list[str]:
    """The event ids in the log at `log_dir`, in log order (read from the store, not the appender)."""
    log = TransparencyLog(LocalStore(log_dir))
    return [parse_record(data).event_id for _, records in log.iter_bundles() for data in records]


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def open_appender(log_dir: Path, signer: NoteSigner, tmp_path: Path) -> Callable[[], AuditAppender]:
    """Opens the appender of the test's local log (the processor calls it on its own thread)."""
    return lambda: AuditAppender(LocalStore(log_dir), signer, index_path=tmp_path / "index.sqlite3")


@pytest.fixture
async def connection(broker_url: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await connect(broker_url, name="mshale-fl audit worker tests")
    yield connection  # type: ignore[misc]
    await connection.close()


@pytest.fixture
async def publisher(connection: AbstractRobustConnection) -> AsyncIterator[Publisher]:
    await declare_topology(connection, delivery_limit=5)
    publisher = await Publisher.open(connection, window=256)
    yield publisher
    await publisher.close()
