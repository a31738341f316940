"""Fixtures of the fault suite: a real S3 API (moto_server) and throw-away PostgreSQL ledgers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mshale_fl.testing.load import temporary_postgres_database
from mshale_fl.testing.moto import MotoServerError, running_moto_server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """`moto_server` on a free loopback port for the session (as tests/audit/conftest.py starts it)."""
    try:
        with running_moto_server() as endpoint:
            yield endpoint
    except MotoServerError as error:
        pytest.fail(str(error))


@pytest.fixture
def postgres_ledger_url() -> Iterator[str]:
    with temporary_postgres_database("mshale_test_faults") as url:
        yield url


@pytest.fixture
def sqlite_ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
