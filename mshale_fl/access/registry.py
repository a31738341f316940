"""The model registry: every published model version, its lineage, and who paid for it in privacy.

A version is recorded once, from its `model.published` payload plus the partners whose updates
trained it and the epsilon each spent (composed from the budgets by the caller, who owns the
accountant). Recording the same version again with the same facts is a no-op, so a redelivered
event is harmless; recording it with a different hash, lineage or contributor set is refused,
because a version number names one set of weights forever.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from mshale_fl.access.tables import model_contributors, model_publications, model_versions
from mshale_fl.ledger._sql import as_utc, insert_if_absent, now_utc
from mshale_fl.ledger.budgets import budget_status
from mshale_fl.ledger.errors import LedgerError
from mshale_fl.ledger.partners import get_partner
from mshale_fl.ledger.tables import privacy_budgets, privacy_spends
from mshale_fl.schemas.events import EventEnvelope, parse_event
from mshale_fl.schemas.payloads import ModelPublished


class RegistryError(LedgerError):
    """A registry request that cannot be honoured (unknown version, conflicting facts)."""


class UnknownModelVersion(RegistryError):
    def __init__(self, version: int) -> None:
        super().__init__(f"model version {version} is not in the registry")
        self.version = version


class ConflictingModelVersion(RegistryError):
    def __init__(self, version: int, detail: str) -> None:
        super().__init__(f"model version {version} is already registered with different facts: {detail}")
        self.version = version


class ModelDigestMismatch(RegistryError):
    """Weights whose digest is not the one registered for their version: tampered or corrupted."""

    def __init__(self, version: int, expected: str, actual: str) -> None:
        super().__init__(
            f"model version {version} has SHA-256 {actual}, but the registry records {expected}; "
            "the file was altered or corrupted, so it is refused"
        )
        self.version = version
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class PrivacySpent:
    """The composed (epsilon, delta) one partner's data spent on one model version."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise RegistryError(f"epsilon must be a finite number >= 0, got {self.epsilon}")
        if not (0 < self.delta < 1):
            raise RegistryError(f"delta must be in (0, 1), got {self.delta}")


@dataclass(frozen=True)
class ModelVersion:
    version: int
    parent_version: int | None
    sha256: str
    rounds: int
    metrics: dict[str, float]
    published_at: datetime
    contributors: dict[str, PrivacySpent] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "parent_version": self.parent_version,
            "sha256": self.sha256,
            "rounds": self.rounds,
            "metrics": dict(sorted(self.metrics.items())),
            "published_at": self.published_at.isoformat(),
            "contributors": [
                {"partner_id": partner_id, "epsilon": spent.epsilon, "delta": spent.delta}
                for partner_id, spent in sorted(self.contributors.items())
            ],
        }


def register_model_version(
    connection: Connection,
    published: ModelPublished,
    contributors: Mapping[str, PrivacySpent],
    *,
    published_at: datetime | None = None,
) -> ModelVersion:
    """Record a published version and its contributors; idempotent for identical facts."""
    for partner_id in contributors:
        get_partner(connection, partner_id)  # UnknownPartner for an unregistered contributor
    metrics = {name: float(value) for name, value in published.metrics.items()}
    when = published_at or now_utc()
    inserted = insert_if_absent(
        connection,
        model_versions,
        {
            "version": published.model_version,
            "parent_version": published.parent_version,
            "sha256": published.sha256,
            "rounds": published.rounds,
            "metrics": json.dumps(metrics, sort_keys=True),
            "published_at": when,
            "recorded_at": now_utc(),
        },
    )
    if not inserted:
        existing = get_model_version(connection, published.model_version)
        _check_same(existing, published, contributors)
        return existing
    if contributors:
        connection.execute(
            insert(model_contributors),
            [
                {"model_version": published.model_version, "partner_id": p, "epsilon": s.epsilon, "delta": s.delta}
                for p, s in sorted(contributors.items())
            ],
        )
    return get_model_version(connection, published.model_version)


def _check_same(existing: ModelVersion, published: ModelPublished, contributors: Mapping[str, PrivacySpent]) -> None:
    if existing.sha256 != published.sha256:
        raise ConflictingModelVersion(existing.version, f"sha256 {existing.sha256} != {published.sha256}")
    if existing.parent_version != published.parent_version:
        raise ConflictingModelVersion(
            existing.version, f"parent {existing.parent_version} != {published.parent_version}"
        )
    if set(existing.contributors) != set(contributors):
        raise ConflictingModelVersion(
            existing.version, f"contributors {sorted(existing.contributors)} != {sorted(contributors)}"
        )


def _contributors(connection: Connection, version: int) -> dict[str, PrivacySpent]:
    rows = connection.execute(
        select(model_contributors).where(model_contributors.c.model_version == version)
    ).all()
    return {row.partner_id: PrivacySpent(epsilon=row.epsilon, delta=row.delta) for row in rows}


def _version(connection: Connection, row: Any) -> ModelVersion:
    return ModelVersion(
        version=row.version,
        parent_version=row.parent_version,
        sha256=row.sha256,
        rounds=row.rounds,
        metrics=json.loads(row.metrics),
        published_at=as_utc(row.published_at),  # type: ignore[arg-type]
        contributors=_contributors(connection, row.version),
    )


def find_model_version(connection: Connection, version: int) -> ModelVersion | None:
    row = connection.execute(select(model_versions).where(model_versions.c.version == version)).first()
    return None if row is None else _version(connection, row)


def get_model_version(connection: Connection, version: int) -> ModelVersion:
    found = find_model_version(connection, version)
    if found is None:
        raise UnknownModelVersion(version)
    return found


def verify_model_digest(connection: Connection, version: int, sha256: str) -> ModelVersion:
    """The registered version if `sha256` (e.g. `model_digest` of downloaded weights) matches it."""
    model = get_model_version(connection, version)
    if sha256.lower() != model.sha256:
        raise ModelDigestMismatch(version, model.sha256, sha256)
    return model


def latest_model_version(connection: Connection) -> ModelVersion | None:
    row = connection.execute(select(model_versions).order_by(model_versions.c.version.desc()).limit(1)).first()
    return None if row is None else _version(connection, row)


def list_model_versions(connection: Connection) -> list[ModelVersion]:
    rows = connection.execute(select(model_versions).order_by(model_versions.c.version)).all()
    return [_version(connection, row) for row in rows]


def versions_contributed_to(connection: Connection, partner_id: str) -> list[int]:
    """Registered versions whose training used this partner's data (what Tier 3 may download)."""
    return sorted(
        connection.execute(
            select(model_contributors.c.model_version).where(model_contributors.c.partner_id == partner_id)
        ).scalars()
    )


def privacy_spent_on(connection: Connection, model_version: int) -> dict[str, PrivacySpent]:
    """Per partner, the committed epsilon (composed by the ledger's accountant) spent on `model_version`.

    Only committed spends count: a released reservation never touched data, and a version is
    registered after its rounds completed, when every started reservation has been committed.
    Partners whose budget shows no committed spend did not train this version and are left out.
    """
    partner_ids = connection.execute(
        select(privacy_budgets.c.partner_id)
        .where(privacy_budgets.c.model_version == model_version)
        .order_by(privacy_budgets.c.partner_id)
    ).scalars()
    spent: dict[str, PrivacySpent] = {}
    for partner_id in partner_ids:
        status = budget_status(connection, partner_id, model_version)
        if any(spend.status == "committed" for spend in status.spends):
            spent[partner_id] = PrivacySpent(epsilon=status.epsilon_committed, delta=status.delta)
    return spent


def unsettled_spends(connection: Connection, model_version: int) -> int:
    """How many reservations for `model_version` are neither committed nor released yet.

    The training server publishes `model.published` right after the last `round.completed`; the
    ledger worker settles that round's reservations from it, on another queue. Until it has, the
    committed epsilon of the last round is missing, so the registry waits for this to reach 0.
    """
    return int(
        connection.execute(
            select(func.count())
            .select_from(privacy_spends)
            .where(privacy_spends.c.model_version == model_version, privacy_spends.c.status == "reserved")
        ).scalar_one()
    )


def record_publication(connection: Connection, event: EventEnvelope[Any]) -> bool:
    """Keep the `model.published` event a version was registered from (the first one; True if recorded now)."""
    if event.type != "model.published":
        raise RegistryError(f"a publication is a model.published event, not {event.type}")
    return insert_if_absent(
        connection,
        model_publications,
        {"version": event.payload.model_version, "event_id": str(event.event_id), "event": event.model_dump_json()},
    )


def publication_of(connection: Connection, version: int) -> EventEnvelope[Any] | None:
    """The `model.published` event version `version` was registered from, or None (registered by hand)."""
    text = connection.execute(
        select(model_publications.c.event).where(model_publications.c.version == version)
    ).scalar()
    return None if text is None else parse_event(text)
