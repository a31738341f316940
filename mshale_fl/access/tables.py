"""Access tables, on the store's shared `metadata`; created by migrations 3 and 5 in store/migrations.py.

Released table shapes are frozen: a later column is a new migration, never an edit here.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from mshale_fl.ledger.tables import PARTNER_ID
from mshale_fl.store.schema import metadata

model_versions = Table(
    "model_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    # No foreign key: the parent may predate the registry (version 0 is the untrained start).
    Column("parent_version", Integer, nullable=True),
    Column("sha256", String(64), nullable=False),
    Column("rounds", Integer, nullable=False),
    Column("metrics", Text, nullable=False, default="{}"),  # JSON object, metric name -> float
    Column("published_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("version >= 0", name="ck_model_versions_version"),
    CheckConstraint("rounds >= 0", name="ck_model_versions_rounds"),
)

model_contributors = Table(
    "model_contributors",
    metadata,
    Column("model_version", Integer, ForeignKey("model_versions.version"), nullable=False),
    Column("partner_id", PARTNER_ID, ForeignKey("partners.id"), nullable=False),
    # The composed epsilon this partner's data spent on this version, at `delta` (from the budgets).
    Column("epsilon", Float, nullable=False),
    Column("delta", Float, nullable=False),
    PrimaryKeyConstraint("model_version", "partner_id", name="pk_model_contributors"),
    Index("ix_model_contributors_partner", "partner_id"),
)

access_usage = Table(
    "access_usage",
    metadata,
    Column("partner_id", PARTNER_ID, ForeignKey("partners.id"), nullable=False),
    Column("day", Date, nullable=False),  # UTC
    Column("item_count", Integer, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("partner_id", "day", name="pk_access_usage"),
    CheckConstraint("item_count >= 0", name="ck_access_usage_items"),
)

ACCESS_TABLES = ("model_versions", "model_contributors", "access_usage")
"""Created by migration 3, in dependency order."""

model_publications = Table(
    "model_publications",
    metadata,
    # The `model.published` event a version was registered from, verbatim: a partner checks the
    # weights it downloads against this event's record in the audit log (receipt), not against
    # the registry row alone, so a registry edited after the fact is caught.
    Column("version", Integer, ForeignKey("model_versions.version"), primary_key=True, autoincrement=False),
    Column("event_id", String(36), nullable=False),
    Column("event", Text, nullable=False),  # the event's JSON as parsed from the bus
)

PUBLICATION_TABLES = ("model_publications",)
"""Created by migration 5."""
