"""Helpers shared by the ledger tests (fixtures live in conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import date, timedelta

from sqlalchemy import Engine, MetaData, select

from mshale_fl.ledger.agreements import AgreementKind, AgreementTerms
from mshale_fl.ledger.partners import Partner
from mshale_fl.testing.postgres import (
    temporary_postgres_database as _temporary_postgres_database,
)


def temporary_postgres_database() -> AbstractContextManager[str]:
    """A throw-away database on the real PostgreSQL, named for these tests (mshale_fl.testing.postgres)."""
    return _temporary_postgres_database("mshale_test_ledger")


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
