"""Ledger tables, on the store's shared `metadata`; created by migration 2 in store/migrations.py.

Released table shapes are frozen: a later column is a new migration, never an edit here that
migration 2 would silently pick up on fresh databases only.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

from mshale_fl.store.schema import metadata

PARTNER_ID = String(63)

partners = Table(
    "partners",
    metadata,
    Column("id", PARTNER_ID, primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("tier", Integer, nullable=False),
    Column("academic", Boolean, nullable=False, default=False),
    Column("status", String(16), nullable=False, default="active"),
    # Defaults for the budget of each new model version (opened at the partner's first reservation).
    Column("epsilon_per_model_version", Float, nullable=False),
    Column("delta", Float, nullable=False),
    # Default cap across model versions for each of the partner's datasets.
    Column("dataset_epsilon_total", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("tier BETWEEN 1 AND 3", name="ck_partners_tier"),
    CheckConstraint("status IN ('active', 'revoked')", name="ck_partners_status"),
)

agreements = Table(
    "agreements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("partner_id", PARTNER_ID, ForeignKey("partners.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("valid_from", Date, nullable=False),
    Column("valid_until", Date, nullable=False),
    # Academic partners may sign a DPA that no attorney reviewed; the fact is kept, not hidden.
    Column("attorney_reviewed", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("kind IN ('DPA', 'IRB', 'TRAINING')", name="ck_agreements_kind"),
    CheckConstraint("valid_from <= valid_until", name="ck_agreements_validity"),
    Index("ix_agreements_partner", "partner_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    # The non-secret prefix of the key, used to find the row without scanning every hash.
    Column("key_id", String(32), primary_key=True),
    Column("partner_id", PARTNER_ID, ForeignKey("partners.id"), nullable=False),
    Column("algorithm", String(64), nullable=False),
    Column("salt", String(64), nullable=False),
    Column("key_hash", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_api_keys_partner", "partner_id"),
)

contributions = Table(
    "contributions",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("partner_id", PARTNER_ID, ForeignKey("partners.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("submission_id", String(36), nullable=True),
    Column("model_version", Integer, nullable=True),
    Column("round_id", String(100), nullable=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("kind IN ('spec', 'vectors', 'update')", name="ck_contributions_kind"),
    Index("ix_contributions_partner", "partner_id"),
)

privacy_datasets = Table(
    "privacy_datasets",
    metadata,
    Column("partner_id", PARTNER_ID, ForeignKey("partners.id"), nullable=False),
    Column("dataset_id", String(63), nullable=False),
    # Cap across every model version trained on this data: their mechanisms compose.
    Column("epsilon_total", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("partner_id", "dataset_id", name="pk_privacy_datasets"),
)

privacy_budgets = Table(
    "privacy_budgets",
    metadata,
    Column("partner_id", PARTNER_ID, ForeignKey("partners.id"), nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("dataset_id", String(63), nullable=False),
    Column("epsilon_total", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("state", String(16), nullable=False, default="active"),
    Column("pause_reason", String(64), nullable=True),
    # Whether budget.low / partner.paused went out for the current pause (at most once per pause).
    Column("alert_published", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("partner_id", "model_version", name="pk_privacy_budgets"),
    ForeignKeyConstraint(
        ["partner_id", "dataset_id"],
        ["privacy_datasets.partner_id", "privacy_datasets.dataset_id"],
        name="fk_privacy_budgets_dataset",
    ),
    CheckConstraint("state IN ('active', 'paused')", name="ck_privacy_budgets_state"),
)

privacy_spends = Table(
    "privacy_spends",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("partner_id", PARTNER_ID, nullable=False),
    Column("model_version", Integer, nullable=False),
    Column("dataset_id", String(63), nullable=False),
    Column("round_id", String(100), nullable=False),
    # The mechanism, not its epsilon: epsilon is re-derived by composing the whole history.
    Column("noise_multiplier", Float, nullable=False),
    Column("sample_rate", Float, nullable=False),
    Column("steps", Integer, nullable=False),
    Column("accountant", String(32), nullable=False),
    Column("accountant_version", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("training_started", Boolean, nullable=False, default=False),
    Column("reserved_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("committed_at", DateTime(timezone=True), nullable=True),
    Column("released_at", DateTime(timezone=True), nullable=True),
    ForeignKeyConstraint(
        ["partner_id", "model_version"],
        ["privacy_budgets.partner_id", "privacy_budgets.model_version"],
        name="fk_privacy_spends_budget",
    ),
    UniqueConstraint("partner_id", "round_id", name="uq_privacy_spends_round"),
    CheckConstraint("status IN ('reserved', 'committed', 'released')", name="ck_privacy_spends_status"),
    Index("ix_privacy_spends_round", "round_id"),
    Index("ix_privacy_spends_dataset", "partner_id", "dataset_id"),
)

LEDGER_TABLES = (
    "partners",
    "agreements",
    "api_keys",
    "contributions",
    "privacy_datasets",
    "privacy_budgets",
    "privacy_spends",
)
"""Created by migration 2, in dependency order."""
