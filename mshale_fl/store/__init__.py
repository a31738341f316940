"""Relational state shared by Mishale workers: engine set-up, versioned migrations, the inbox.

SQLite file by default (one machine, zero set-up), PostgreSQL by URL for many workers.
Only SQLAlchemy Core is used, so every statement is explicit and portable across both.
"""

from mshale_fl.store.engine import create_store_engine
from mshale_fl.store.migrations import MIGRATIONS, Migration, current_version, migrate
from mshale_fl.store.schema import metadata

__all__ = ["MIGRATIONS", "Migration", "create_store_engine", "current_version", "metadata", "migrate"]
