"""Who may do what right now: submit at a tier, train on a model version.

Decisions are computed from the ledger at the moment of asking (agreements expire, partners are
revoked, budgets pause), never cached in the partner record.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from mshale_fl.ledger.agreements import list_agreements
from mshale_fl.ledger.budgets import is_paused
from mshale_fl.ledger.partners import get_partner
from mshale_fl.ledger.tier_rules import Decision, tier_gate

__all__ = ["Decision", "may_submit", "may_train"]


def may_submit(connection: Connection, partner_id: str, tier: int, at: datetime | None = None) -> Decision:
    """Whether the partner may send a Tier `tier` contribution at `at` (default now), and why not."""
    partner = get_partner(connection, partner_id, required=False)
    if partner is None:
        return Decision(False, "partner.unknown", f"no partner {partner_id!r} is registered")
    if partner.status != "active":
        return Decision(False, "partner.revoked", f"partner {partner_id!r} was revoked")
    if tier > partner.tier:
        return Decision(
            False,
            "tier.not_granted",
            f"partner {partner_id!r} is registered for Tier {partner.tier}, not Tier {tier}",
        )
    return tier_gate(tier, academic=partner.academic, agreements=list_agreements(connection, partner_id), at=at)


def may_train(connection: Connection, partner_id: str, model_version: int, at: datetime | None = None) -> Decision:
    """Whether the partner may join training of `model_version`: Tier 3, agreement active, budget not paused."""
    decision = may_submit(connection, partner_id, 3, at)
    if not decision.allowed:
        return decision
    if is_paused(connection, partner_id, model_version):
        return Decision(
            False,
            "budget.paused",
            f"less than 10 % of the privacy budget for model version {model_version} remains; "
            "an operator must raise it, or the partner trains again from the next model version",
        )
    return decision
