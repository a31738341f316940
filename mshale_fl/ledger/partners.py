"""Partners: registration (ledger row, agreements, API key, broker user), lookup, tier, revocation.

Registration is one unit: the ledger rows are written in a transaction that commits only after
the broker user exists, and the broker user is deleted again if the commit fails, so a partner
is either registered everywhere or nowhere. Revocation marks the ledger first (keys stop
verifying at once) and then removes the broker user and its connections; re-running it retries
the broker side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from mshale_fl.ledger._sql import as_utc, now_utc
from mshale_fl.ledger.agreements import Agreement, AgreementTerms, add_agreement, list_agreements
from mshale_fl.ledger.api_keys import IssuedKey, issue_api_key, revoke_api_keys
from mshale_fl.ledger.broker_identity import BrokerAdmin, broker_password
from mshale_fl.ledger.errors import (
    InvalidPartnerId,
    LedgerError,
    PartnerExists,
    PartnerNotActive,
    TierRequirementNotMet,
    UnknownPartner,
)
from mshale_fl.ledger.tables import partners
from mshale_fl.ledger.tier_rules import tier_gate
from mshale_fl.logging import get_logger

log = get_logger(__name__)

PARTNER_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
"""The event contract's PartnerId; also the broker user name and the routing-key prefix."""

RESERVED_IDS = frozenset({"mishale", "guest", "admin", "administrator", "root", "system"})
"""'mishale' signs system events; the others are broker accounts a partner must never take over."""

DEFAULT_EPSILON_PER_MODEL_VERSION = 8.0
DEFAULT_DELTA = 1e-5
DEFAULT_DATASET_EPSILON = 24.0
"""Defaults for a partner's privacy budgets: per model version, and across all versions per dataset."""


@dataclass(frozen=True)
class Partner:
    id: str
    display_name: str
    tier: int
    academic: bool
    status: str
    epsilon_per_model_version: float
    delta: float
    dataset_epsilon_total: float
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.status == "active"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "display_name": self.display_name,
            "tier": self.tier,
            "academic": self.academic,
            "status": self.status,
            "epsilon_per_model_version": self.epsilon_per_model_version,
            "delta": self.delta,
            "dataset_epsilon_total": self.dataset_epsilon_total,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


@dataclass(frozen=True)
class Registration:
    partner: Partner
    agreements: list[Agreement]
    key: IssuedKey = field(repr=False)


def validate_partner_id(partner_id: str) -> str:
    if not PARTNER_ID_PATTERN.match(partner_id):
        raise InvalidPartnerId(
            f"partner id {partner_id!r} is not valid: use 2-63 lower-case letters, digits and '-', "
            "starting with a letter or digit (it becomes the broker user name and routing-key prefix)"
        )
    if partner_id in RESERVED_IDS:
        raise InvalidPartnerId(f"partner id {partner_id!r} is reserved; choose another")
    return partner_id


def _validate_budget_defaults(epsilon: float, delta: float, dataset_epsilon: float) -> None:
    for name, value in (("epsilon per model version", epsilon), ("dataset epsilon", dataset_epsilon)):
        if not (math.isfinite(value) and 0 < value <= 1_000):
            raise LedgerError(f"{name} must be in (0, 1000], got {value}")
    if not (0 < delta < 1):
        raise LedgerError(f"delta must be in (0, 1), got {delta}")


def _partner(row: Any) -> Partner:
    return Partner(
        id=row.id,
        display_name=row.display_name,
        tier=row.tier,
        academic=bool(row.academic),
        status=row.status,
        epsilon_per_model_version=row.epsilon_per_model_version,
        delta=row.delta,
        dataset_epsilon_total=row.dataset_epsilon_total,
        created_at=as_utc(row.created_at),  # type: ignore[arg-type]
        revoked_at=as_utc(row.revoked_at),
    )


def get_partner(
    connection: Connection, partner_id: str, *, required: bool = True, lock: bool = False
) -> Partner | None:
    statement = select(partners).where(partners.c.id == partner_id)
    if lock and connection.dialect.name == "postgresql":
        statement = statement.with_for_update()
    row = connection.execute(statement).first()
    if row is None:
        if required:
            raise UnknownPartner(partner_id)
        return None
    return _partner(row)


def require_partner(connection: Connection, partner_id: str) -> Partner:
    partner = get_partner(connection, partner_id)
    assert partner is not None
    return partner


def list_partners(connection: Connection) -> list[Partner]:
    return [_partner(row) for row in connection.execute(select(partners).order_by(partners.c.id)).all()]


def check_tier(
    partner_id: str, tier: int, *, academic: bool, agreements: Sequence[Agreement], at: datetime | None = None
) -> None:
    decision = tier_gate(tier, academic=academic, agreements=agreements, at=at)
    if not decision.allowed:
        raise TierRequirementNotMet(partner_id, tier, decision.code, decision.message)


def create_partner(
    connection: Connection,
    partner_id: str,
    *,
    tier: int,
    academic: bool = False,
    display_name: str | None = None,
    agreements: Sequence[AgreementTerms] = (),
    epsilon_per_model_version: float = DEFAULT_EPSILON_PER_MODEL_VERSION,
    delta: float = DEFAULT_DELTA,
    dataset_epsilon_total: float = DEFAULT_DATASET_EPSILON,
) -> tuple[Partner, list[Agreement]]:
    """Write the partner and its agreements; refuses a tier its agreements do not support today."""
    validate_partner_id(partner_id)
    if tier not in (1, 2, 3):
        raise LedgerError(f"tier must be 1, 2 or 3, got {tier}")
    _validate_budget_defaults(epsilon_per_model_version, delta, dataset_epsilon_total)
    if get_partner(connection, partner_id, required=False) is not None:
        raise PartnerExists(partner_id)
    connection.execute(
        insert(partners).values(
            id=partner_id,
            display_name=display_name or partner_id,
            tier=tier,
            academic=academic,
            status="active",
            epsilon_per_model_version=epsilon_per_model_version,
            delta=delta,
            dataset_epsilon_total=dataset_epsilon_total,
            created_at=now_utc(),
        )
    )
    recorded = [add_agreement(connection, partner_id, terms) for terms in agreements]
    check_tier(partner_id, tier, academic=academic, agreements=recorded)
    return require_partner(connection, partner_id), recorded


def set_tier(connection: Connection, partner_id: str, tier: int) -> Partner:
    """Move a partner to another tier; raising it needs the agreements that tier requires."""
    partner = require_partner(connection, partner_id)
    if not partner.active:
        raise PartnerNotActive(partner_id)
    if tier not in (1, 2, 3):
        raise LedgerError(f"tier must be 1, 2 or 3, got {tier}")
    check_tier(partner_id, tier, academic=partner.academic, agreements=list_agreements(connection, partner_id))
    connection.execute(update(partners).where(partners.c.id == partner_id).values(tier=tier))
    return require_partner(connection, partner_id)


def mark_revoked(connection: Connection, partner_id: str) -> Partner:
    """Revoke in the ledger: status and every API key (idempotent)."""
    partner = require_partner(connection, partner_id)
    if partner.active:
        connection.execute(
            update(partners).where(partners.c.id == partner_id).values(status="revoked", revoked_at=now_utc())
        )
    revoke_api_keys(connection, partner_id)
    return require_partner(connection, partner_id)


def register_partner(
    engine: Engine,
    partner_id: str,
    *,
    tier: int,
    broker: BrokerAdmin | None,
    academic: bool = False,
    display_name: str | None = None,
    agreements: Sequence[AgreementTerms] = (),
    epsilon_per_model_version: float = DEFAULT_EPSILON_PER_MODEL_VERSION,
    delta: float = DEFAULT_DELTA,
    dataset_epsilon_total: float = DEFAULT_DATASET_EPSILON,
) -> Registration:
    """Register a partner everywhere: ledger rows, a new API key, and (unless `broker` is None) its broker user.

    The returned `key` is the only copy of the API key that will ever exist.
    """
    provisioned = False
    try:
        with engine.begin() as connection:
            partner, recorded = create_partner(
                connection,
                partner_id,
                tier=tier,
                academic=academic,
                display_name=display_name,
                agreements=agreements,
                epsilon_per_model_version=epsilon_per_model_version,
                delta=delta,
                dataset_epsilon_total=dataset_epsilon_total,
            )
            key = issue_api_key(connection, partner_id)
            if broker is not None:
                broker.provision_partner(partner_id, broker_password(key.api_key.get_secret_value()))
                provisioned = True
    except BaseException:
        if provisioned and broker is not None:
            broker.delete_partner(partner_id, reason="partner registration failed")
        raise
    log.info("partner_registered", partner_id=partner_id, tier=tier, academic=academic, key_id=key.key_id)
    return Registration(partner=partner, agreements=recorded, key=key)


def revoke_partner(engine: Engine, partner_id: str, *, broker: BrokerAdmin | None) -> Partner:
    """Revoke a partner: ledger first (keys stop verifying), then its broker user and open connections."""
    with engine.begin() as connection:
        partner = mark_revoked(connection, partner_id)
    log.info("partner_revoked", partner_id=partner_id)
    if broker is not None:
        broker.delete_partner(partner_id, reason="partner revoked")
    return partner
