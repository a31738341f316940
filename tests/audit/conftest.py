"""Fixtures of the audit tests: events, keys, an in-memory store, and a real S3 API (moto_server)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.stores.s3 import S3Store

from mshale_fl.testing.moto import MotoServerError, running_moto_server

from .audit_support import ORIGIN, S3_CREDENTIALS, S3_REGION, MemoryStore, make_event


@pytest.fixture
def make_events() -> Callable[[int], list[Any]]:
    def factory(count: int, partner: str = "lab-a") -> list[Any]:
        return [make_event(number, partner) for number in range(count)]

    return factory


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()


# -- a real S3 API over HTTP ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """`moto_server` on a free loopback port for the whole session; stopped (only it) afterwards."""
    try:
        with running_moto_server() as endpoint:
            yield endpoint
    except MotoServerError as error:
        pytest.fail(str(error))


@pytest.fixture
def s3_client(moto_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name=S3_REGION, **S3_CREDENTIALS)


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials in the environment, for code that builds its own boto3 client (the CLI)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_endpoint


@pytest.fixture
def worm_store(s3_client: Any) -> S3Store:
    """A fresh bucket with Object Lock and a COMPLIANCE default retention, wrapped as a store."""
    store = S3Store(
        f"mshale-audit-{uuid.uuid4().hex[:12]}", region=S3_REGION, prefix="log/", retention_days=1, client=s3_client
    )
    store.ensure_bucket()
    return store
