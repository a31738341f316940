"""Versioned schema migrations: an ordered list, each applied once, recorded in `schema_version`.

A new table or column is a new `Migration` appended to `MIGRATIONS`; released migrations are never
edited. `migrate()` is safe to run from many processes at once: the version row's primary key
makes a concurrent second application fail and retry from the new state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, insert, inspect, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from mshale_fl.store import schema


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def _create(*tables: str) -> Callable[[Connection], None]:
    def apply(connection: Connection) -> None:
        for name in tables:
            schema.metadata.tables[name].create(connection, checkfirst=True)

    return apply


def _create_ledger_tables(connection: Connection) -> None:
    # Imported here: the ledger's tables register on the shared metadata when their module loads,
    # and the store must not import the ledger package at start-up (the ledger imports the store).
    from mshale_fl.ledger import tables as ledger_tables

    _create(*ledger_tables.LEDGER_TABLES)(connection)


def _create_access_tables(connection: Connection) -> None:
    # Imported here for the same reason as the ledger's tables.
    from mshale_fl.access import tables as access_tables

    _create(*access_tables.ACCESS_TABLES)(connection)


def _create_identity_tables(connection: Connection) -> None:
    from mshale_fl.ledger import identities

    _create(*identities.IDENTITY_TABLES)(connection)


def _create_publication_tables(connection: Connection) -> None:
    from mshale_fl.access import tables as access_tables

    _create(*access_tables.PUBLICATION_TABLES)(connection)


MIGRATIONS: list[Migration] = [
    Migration(1, "inbox", _create("inbox")),
    Migration(2, "ledger: partners, agreements, api keys, contributions, privacy budgets", _create_ledger_tables),
    Migration(3, "access: model versions, model contributors, daily access usage", _create_access_tables),
    Migration(4, "ledger: partners' identity keys for secure aggregation", _create_identity_tables),
    Migration(5, "access: the model.published event of each registered version", _create_publication_tables),
]


def current_version(engine: Engine) -> int:
    if not inspect(engine).has_table("schema_version"):
        return 0
    with engine.connect() as connection:
        versions = connection.execute(select(schema.schema_version.c.version)).scalars().all()
    return max(versions, default=0)


def migrate(engine: Engine, migrations: list[Migration] | None = None) -> int:
    """Bring the database to the newest version; returns that version."""
    migrations = sorted(migrations or MIGRATIONS, key=lambda m: m.version)
    for attempt in range(5):
        try:
            with engine.begin() as connection:
                schema.schema_version.create(connection, checkfirst=True)
            break
        except (IntegrityError, OperationalError, ProgrammingError):
            if attempt == 4:
                raise
    for migration in migrations:
        try:
            with engine.begin() as connection:
                applied = connection.execute(
                    select(schema.schema_version.c.version).where(schema.schema_version.c.version == migration.version)
                ).first()
                if applied:
                    continue
                migration.apply(connection)
                connection.execute(
                    insert(schema.schema_version).values(
                        version=migration.version, name=migration.name, applied_at=datetime.now(UTC)
                    )
                )
        except IntegrityError:
            continue  # another process applied it first
    return current_version(engine)
