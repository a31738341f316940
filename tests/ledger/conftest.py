"""Ledger fixtures: a migrated ledger on SQLite (a file) and on the real PostgreSQL (a unique database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mshale_fl.ledger.agreements import AgreementTerms
from mshale_fl.ledger.database import open_ledger
from mshale_fl.ledger.partners import Partner, create_partner
from mshale_fl.testing.rabbitmq import management_client

from .helpers import MakePartner, temporary_postgres_database, training, unique_partner_id


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with temporary_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        with temporary_postgres_database() as url:
            yield url


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = open_ledger(ledger_url)
    yield engine
    engine.dispose()


@pytest.fixture
def make_partner(engine: Engine) -> MakePartner:
    """Create a ledger partner (no broker user); Tier 3 with a training agreement by default."""

    def make(
        partner_id: str | None = None,
        *,
        tier: int = 3,
        epsilon: float = 8.0,
        delta: float = 1e-5,
        dataset_epsilon: float = 100.0,
        academic: bool = False,
        agreements: list[AgreementTerms] | None = None,
    ) -> Partner:
        with engine.begin() as connection:
            partner, _ = create_partner(
                connection,
                partner_id or unique_partner_id(),
                tier=tier,
                academic=academic,
                agreements=[training()] if agreements is None else agreements,
                epsilon_per_model_version=epsilon,
                delta=delta,
                dataset_epsilon_total=dataset_epsilon,
            )
        return partner

    return make


@pytest.fixture
def broker_users() -> Iterator[list[str]]:
    """Names of broker users a test created; deleted afterwards (users are global to the broker)."""
    created: list[str] = []
    yield created
    with management_client() as client:
        for name in created:
            client.delete(f"/api/users/{name}")
