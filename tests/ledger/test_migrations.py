"""Migrations: a fresh database reaches the newest version with every ledger table; twice is a no-op."""

from __future__ import annotations

from sqlalchemy import inspect, select

from mshale_fl.ledger.tables import LEDGER_TABLES
from mshale_fl.store import MIGRATIONS, create_store_engine, current_version, migrate
from mshale_fl.store.schema import schema_version


def test_fresh_database_reaches_newest_version(ledger_url: str) -> None:
    engine = create_store_engine(ledger_url)
    try:
        assert current_version(engine) == 0
        newest = max(migration.version for migration in MIGRATIONS)
        assert newest >= 2
        assert migrate(engine) == newest
        tables = set(inspect(engine).get_table_names())
        assert set(LEDGER_TABLES) <= tables
        assert "inbox" in tables
    finally:
        engine.dispose()


def test_running_migrations_twice_is_a_no_op(ledger_url: str) -> None:
    engine = create_store_engine(ledger_url)
    try:
        first = migrate(engine)
        with engine.connect() as connection:
            before = connection.execute(select(schema_version).order_by(schema_version.c.version)).all()
        assert migrate(engine) == first
        with engine.connect() as connection:
            after = connection.execute(select(schema_version).order_by(schema_version.c.version)).all()
        assert after == before
        assert [row.version for row in after] == sorted(m.version for m in MIGRATIONS)
    finally:
        engine.dispose()


def test_migrations_keep_existing_ledger_rows(ledger_url: str) -> None:
    from mshale_fl.ledger.partners import create_partner, list_partners

    engine = create_store_engine(ledger_url)
    try:
        migrate(engine)
        with engine.begin() as connection:
            create_partner(connection, "lab-kept", tier=1)
        migrate(engine)
        with engine.begin() as connection:
            assert [partner.id for partner in list_partners(connection)] == ["lab-kept"]
    finally:
        engine.dispose()
