"""Access fixtures: a migrated ledger on SQLite in tmp, and builders for partners, contributions, versions."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from mshale_fl.schemas.payloads import ModelPublished
from sqlalchemy import Engine

from mshale_fl.access.registry import ModelVersion, PrivacySpent, register_model_version
from mshale_fl.ledger.agreements import AgreementKind, AgreementTerms
from mshale_fl.ledger.contributions import record_contribution
from mshale_fl.ledger.database import open_ledger
from mshale_fl.ledger.partners import create_partner
from mshale_fl.testing.postgres import (
    temporary_postgres_database as _temporary_postgres_database,
)

from .world import AccessWorld

NOW = datetime.now(UTC)


def days(n: int) -> date:
    return (NOW + timedelta(days=n)).date()


def dpa(until_days: int = 365) -> AgreementTerms:
    return AgreementTerms(AgreementKind.DPA, valid_until=days(until_days), valid_from=days(-1), attorney_reviewed=True)


def training(until_days: int = 365) -> AgreementTerms:
    return AgreementTerms(AgreementKind.TRAINING, valid_until=days(until_days), valid_from=days(-1))


AGREEMENTS_FOR_TIER = {1: [], 2: [dpa()], 3: [dpa(), training()]}





def temporary_postgres_database() -> AbstractContextManager[str]:
    """A throw-away database on the real PostgreSQL, named for these tests (mshale_fl.testing.postgres)."""
    return _temporary_postgres_database("mshale_test_access")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        else:
            url = stack.enter_context(temporary_postgres_database())
        engine = open_ledger(url)
        yield engine
        engine.dispose()


@pytest.fixture
def partner(engine: Engine) -> Callable[..., str]:
    """Register a partner at `tier` (with the agreements it needs unless given) and return its id."""

    def make(tier: int, *, agreements: list[AgreementTerms] | None = None) -> str:
        partner_id = f"lab-{uuid.uuid4().hex[:10]}"
        with engine.begin() as connection:
            create_partner(
                connection,
                partner_id,
                tier=tier,
                agreements=AGREEMENTS_FOR_TIER[tier] if agreements is None else agreements,
            )
        return partner_id

    return make


@pytest.fixture
def contribute(engine: Engine) -> Callable[..., None]:
    def record(
        partner_id: str, kind: str, *, at: datetime | None = None, model_version: int | None = None, items: int = 1
    ) -> None:
        with engine.begin() as connection:
            record_contribution(
                connection,
                event_id=uuid.uuid4(),
                partner_id=partner_id,
                kind=kind,
                items=items,
                occurred_at=at or NOW - timedelta(days=1),
                model_version=model_version,
            )

    return record


@pytest.fixture
def publish(engine: Engine) -> Callable[..., ModelVersion]:
    def register(
        version: int, contributors: dict[str, float], *, parent: int | None = None, metrics: dict[str, float] | None = None
    ) -> ModelVersion:
        published = ModelPublished(
            model_version=version,
            parent_version=parent,
            sha256=f"{version:064x}",
            rounds=3,
            metrics={"val_mae": 0.125} if metrics is None else metrics,
        )
        with engine.begin() as connection:
            return register_model_version(
                connection,
                published,
                {partner_id: PrivacySpent(epsilon, 1e-5) for partner_id, epsilon in contributors.items()},
            )

    return register


@pytest.fixture
def broker_users() -> Iterator[list[str]]:
    """Broker users are global to the shared RabbitMQ: every one a test creates is deleted afterwards."""
    from mshale_fl.testing.rabbitmq import management_client

    created: list[str] = []
    yield created
    with management_client() as client:
        for name in created:
            client.delete(f"/api/users/{name}")


@pytest.fixture
def world(tmp_path: Path, vhost: str, broker_url: str, broker_users: list[str]) -> Iterator[AccessWorld]:
    """A Mishale with a SQLite ledger, the real broker (throw-away vhost) and a local audit log."""
    yield from _world(tmp_path, vhost, broker_url, broker_users, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")


@pytest.fixture
def postgres_world(tmp_path: Path, vhost: str, broker_url: str, broker_users: list[str]) -> Iterator[AccessWorld]:
    """The same with its ledger in a throw-away PostgreSQL database (for several workers)."""
    with temporary_postgres_database() as url:
        yield from _world(tmp_path, vhost, broker_url, broker_users, url)


def _world(tmp_path: Path, vhost: str, broker_url: str, broker_users: list[str], ledger_url: str) -> Iterator[AccessWorld]:
    from mshale_fl.ledger import BrokerAdmin
    from mshale_fl.testing.rabbitmq import MANAGEMENT_URL

    engine = open_ledger(ledger_url)
    try:
        with BrokerAdmin(MANAGEMENT_URL, "guest", "guest", vhost) as admin:
            yield AccessWorld(
                tmp_path, vhost=vhost, broker_url=broker_url, ledger_url=ledger_url, admin=admin, engine=engine,
                broker_users=broker_users,
            )  # fmt: skip
    finally:
        engine.dispose()
