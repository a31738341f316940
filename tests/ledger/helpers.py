"""Helpers shared by the ledger tests (fixtures live in conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta

from sqlalchemy import Engine, MetaData, create_engine, select, text

from mshale_fl.ledger.agreements import AgreementKind, AgreementTerms
from mshale_fl.ledger.partners import Partner

POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """A database with a unique name on the real PostgreSQL, dropped afterwards; yields its URL."""
    name = f"mshale_test_ledger_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def unique_partner_id(prefix: str = "lab") -> str:
    """Broker users are global to the shared RabbitMQ, so test partners get unique ids."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def days(n: int) -> date:
    return date.today() + timedelta(days=n)


def dpa(until_days: int = 365, *, reviewed: bool = True, from_days: int = -1) -> AgreementTerms:
    return AgreementTerms(
        AgreementKind.DPA, valid_until=days(until_days), valid_from=days(from_days), attorney_reviewed=reviewed
    )


def training(until_days: int = 365, from_days: int = -1) -> AgreementTerms:
    return AgreementTerms(AgreementKind.TRAINING, valid_until=days(until_days), valid_from=days(from_days))


MakePartner = Callable[..., Partner]


def scan_database_text(engine: Engine) -> str:
    """Every value of every row of every table, as one string: for 'no secret in clear' checks."""
    reflected = MetaData()
    reflected.reflect(bind=engine)
    parts: list[str] = []
    with engine.connect() as connection:
        for table in reflected.sorted_tables:
            for row in connection.execute(select(table)).all():
                parts.extend(repr(value) for value in row)
    assert parts, "the database is empty; the scan would prove nothing"
    return "\n".join(parts)
