"""Table definitions. Each table is created by exactly one migration in `migrations.py`."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, PrimaryKeyConstraint

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

inbox = Table(
    "inbox",
    metadata,
    Column("consumer", String(100), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    # Events the effect produced, as a JSON list: re-published if the event is redelivered after
    # the commit but before they were confirmed, so follow-ups are at-least-once too.
    Column("outputs", Text, nullable=False, default="[]"),
    PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
)
