"""What each partner contributed: accepted submissions and training updates, one row per event.

Access to predictions and models is computed from these rows, so each event counts once: the
row is keyed by the event id (the inbox already guarantees one application; the key makes the
table correct on its own too).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, func, select

from mshale_fl.ledger._sql import as_utc, insert_if_absent, now_utc
from mshale_fl.ledger.partners import get_partner
from mshale_fl.ledger.tables import contributions

KINDS = ("spec", "vectors", "update")


@dataclass(frozen=True)
class Contribution:
    event_id: str
    partner_id: str
    kind: str
    items: int
    submission_id: str | None
    model_version: int | None
    round_id: str | None
    occurred_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "kind": self.kind,
            "items": self.items,
            "submission_id": self.submission_id,
            "model_version": self.model_version,
            "round_id": self.round_id,
            "occurred_at": self.occurred_at.isoformat(),
        }


def record_contribution(
    connection: Connection,
    *,
    event_id: UUID | str,
    partner_id: str,
    kind: str,
    items: int,
    occurred_at: datetime,
    submission_id: UUID | str | None = None,
    model_version: int | None = None,
    round_id: str | None = None,
) -> bool:
    """Record one contribution; False if this event was recorded before. `UnknownPartner` if unregistered."""
    if kind not in KINDS:
        raise ValueError(f"contribution kind must be one of {KINDS}, got {kind!r}")
    get_partner(connection, partner_id)
    return insert_if_absent(
        connection,
        contributions,
        {
            "event_id": str(event_id),
            "partner_id": partner_id,
            "kind": kind,
            "item_count": items,
            "submission_id": str(submission_id) if submission_id is not None else None,
            "model_version": model_version,
            "round_id": round_id,
            "occurred_at": occurred_at,
            "recorded_at": now_utc(),
        },
    )


def list_contributions(connection: Connection, partner_id: str, kinds: Iterable[str] = KINDS) -> list[Contribution]:
    rows = connection.execute(
        select(contributions)
        .where(contributions.c.partner_id == partner_id, contributions.c.kind.in_(list(kinds)))
        .order_by(contributions.c.occurred_at, contributions.c.event_id)
    ).all()
    return [
        Contribution(
            event_id=row.event_id,
            partner_id=row.partner_id,
            kind=row.kind,
            items=row.item_count,
            submission_id=row.submission_id,
            model_version=row.model_version,
            round_id=row.round_id,
            occurred_at=as_utc(row.occurred_at),  # type: ignore[arg-type]
        )
        for row in rows
    ]


def contribution_totals(connection: Connection, partner_id: str) -> dict[str, dict[str, int]]:
    """Per kind: number of events and number of items (specs, vectors, updates)."""
    rows = connection.execute(
        select(contributions.c.kind, func.count(), func.coalesce(func.sum(contributions.c.item_count), 0))
        .where(contributions.c.partner_id == partner_id)
        .group_by(contributions.c.kind)
    ).all()
    totals = {kind: {"events": 0, "items": 0} for kind in KINDS}
    for kind, events, items in rows:
        totals[kind] = {"events": int(events), "items": int(items)}
    return totals


def trained_model_versions(connection: Connection, partner_id: str) -> list[int]:
    """Model versions this partner contributed training updates to (Tier 3 may download those)."""
    return sorted(
        version
        for version in connection.execute(
            select(contributions.c.model_version)
            .where(contributions.c.partner_id == partner_id, contributions.c.kind == "update")
            .distinct()
        ).scalars()
        if version is not None
    )
