"""Small portable SQL helpers shared by the ledger modules."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Select, Table
from sqlalchemy.dialects import postgresql, sqlite


def now_utc() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; they were written in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_date(at: datetime) -> date:
    return at.astimezone(UTC).date() if at.tzinfo else at.date()


def for_update(connection: Connection, statement: Select[Any]) -> Select[Any]:
    """Row-lock the selected rows on PostgreSQL.

    SQLite has no row locks; there the store's `BEGIN IMMEDIATE` already holds the database's
    single write lock for the whole transaction, which serialises writers just as well.
    """
    if connection.dialect.name == "postgresql":
        return statement.with_for_update()
    return statement


def insert_if_absent(connection: Connection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True if this call inserted the row.

    Two workers opening the same row at once must not abort one of their transactions, which a
    plain INSERT caught as IntegrityError would do on PostgreSQL.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two backends above are supported
        raise NotImplementedError(f"ledger does not support the {dialect!r} backend")
    return connection.execute(statement).rowcount == 1
