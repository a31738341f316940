"""The ledger's database: the store engine at the configured URL, migrated to the newest version."""

from __future__ import annotations

from sqlalchemy import Engine

from mshale_fl.config import Settings, get_settings
from mshale_fl.store import create_store_engine, migrate


def open_ledger(url: str | None = None, *, settings: Settings | None = None) -> Engine:
    """Engine for `url` (default: the settings' ledger URL, a SQLite file under MSHALE_HOME), migrated."""
    if url is None:
        url = (settings or get_settings()).effective_ledger_url
    engine = create_store_engine(url)
    migrate(engine)
    return engine
