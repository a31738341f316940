"""Agreements a partner signed (DPA, IRB approval, Tier 3 training agreement) and what they allow.

An agreement is active on a day when valid_from <= day <= valid_until (dates in UTC, both ends
inclusive). A DPA normally needs attorney review; academic partners may sign one without it,
which is recorded as a flag on the agreement rather than by pretending a review happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Connection, insert, select

from mshale_fl.ledger._sql import now_utc, utc_date
from mshale_fl.ledger.errors import LedgerError
from mshale_fl.ledger.tables import agreements


class AgreementKind(StrEnum):
    DPA = "DPA"
    IRB = "IRB"
    TRAINING = "TRAINING"


@dataclass(frozen=True)
class Agreement:
    id: int | None
    partner_id: str
    kind: AgreementKind
    valid_from: date
    valid_until: date
    attorney_reviewed: bool

    def active_on(self, day: date) -> bool:
        return self.valid_from <= day <= self.valid_until

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "valid_from": self.valid_from.isoformat(),
            "valid_until": self.valid_until.isoformat(),
            "attorney_reviewed": self.attorney_reviewed,
        }


@dataclass(frozen=True)
class AgreementTerms:
    """An agreement to record, before it has a partner or an id."""

    kind: AgreementKind
    valid_until: date
    valid_from: date | None = None
    attorney_reviewed: bool = False


def add_agreement(connection: Connection, partner_id: str, terms: AgreementTerms) -> Agreement:
    valid_from = terms.valid_from or utc_date(now_utc())
    if terms.valid_until < valid_from:
        raise LedgerError(
            f"{terms.kind.value} agreement would end ({terms.valid_until}) before it starts ({valid_from})"
        )
    result = connection.execute(
        insert(agreements).values(
            partner_id=partner_id,
            kind=terms.kind.value,
            valid_from=valid_from,
            valid_until=terms.valid_until,
            attorney_reviewed=terms.attorney_reviewed,
            created_at=now_utc(),
        )
    )
    return Agreement(
        id=result.inserted_primary_key[0] if result.inserted_primary_key else None,
        partner_id=partner_id,
        kind=terms.kind,
        valid_from=valid_from,
        valid_until=terms.valid_until,
        attorney_reviewed=terms.attorney_reviewed,
    )


def list_agreements(connection: Connection, partner_id: str) -> list[Agreement]:
    rows = connection.execute(
        select(agreements)
        .where(agreements.c.partner_id == partner_id)
        .order_by(agreements.c.valid_from, agreements.c.id)
    ).all()
    return [
        Agreement(
            id=row.id,
            partner_id=row.partner_id,
            kind=AgreementKind(row.kind),
            valid_from=row.valid_from,
            valid_until=row.valid_until,
            attorney_reviewed=bool(row.attorney_reviewed),
        )
        for row in rows
    ]


def active_agreements(connection: Connection, partner_id: str, at: datetime | None = None) -> list[Agreement]:
    day = utc_date(at or now_utc())
    return [agreement for agreement in list_agreements(connection, partner_id) if agreement.active_on(day)]
