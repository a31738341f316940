"""Who gets what back: the access policy, computed from the ledger at the moment of asking.

`decide_access` answers one question (may this partner do this action now?) from the partner row,
its agreements, its contributions, the model registry and today's usage; nothing is cached, because
agreements expire and contributions age. A refusal lists *every* reason that applies, each with a
machine-readable code and what would lift it, so a partner can fix everything in one go.

`authorize` is the form the predict worker uses: the same decision, and if it allows, the request's
items are counted against today's quota in the same transaction by a conditional update, so two
concurrent requests cannot both take the last of a quota.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from types import MappingProxyType

from sqlalchemy import Connection, func, select, update

from mshale_fl.access.registry import (
    ModelVersion,
    find_model_version,
    list_model_versions,
    versions_contributed_to,
)
from mshale_fl.access.tables import access_usage
from mshale_fl.ledger._sql import insert_if_absent, now_utc, utc_date
from mshale_fl.ledger.agreements import list_agreements
from mshale_fl.ledger.partners import get_partner
from mshale_fl.ledger.tables import contributions
from mshale_fl.ledger.tier_rules import tier_gate
from mshale_fl.schemas.payloads import Reason


class AccessAction(StrEnum):
    PREDICT_SPEC = "predict.spec"
    PREDICT_VECTORS = "predict.vectors"
    PREDICT_BATCH = "predict.batch"
    MODEL_DOWNLOAD = "model.download"


REQUIRED_TIER: Mapping[AccessAction, int] = MappingProxyType(
    {
        AccessAction.PREDICT_SPEC: 1,
        AccessAction.PREDICT_VECTORS: 2,
        AccessAction.PREDICT_BATCH: 2,
        AccessAction.MODEL_DOWNLOAD: 3,
    }
)

QUALIFYING_KINDS: Mapping[AccessAction, tuple[str, ...]] = MappingProxyType(
    {
        # What keeps an action's access alive: giving at (at least) the level the action rewards.
        AccessAction.PREDICT_SPEC: ("spec", "vectors", "update"),
        AccessAction.PREDICT_VECTORS: ("vectors", "update"),
        AccessAction.PREDICT_BATCH: ("vectors", "update"),
        AccessAction.MODEL_DOWNLOAD: ("update",),
    }
)

PREDICT_ACTIONS = frozenset({AccessAction.PREDICT_SPEC, AccessAction.PREDICT_VECTORS, AccessAction.PREDICT_BATCH})
"""Actions that count against the daily quota (downloads are limited to contributed versions instead)."""

_CONTRIBUTE_HOW = {
    ("spec", "vectors", "update"): "submit a ProtocolSpec (`mshale-fl submit`)",
    ("vectors", "update"): "submit a Tier 2 batch of feature vectors",
    ("update",): "take part in a training round",
}


@dataclass(frozen=True)
class AccessPolicy:
    """The knobs of the policy; the defaults are the documented access table (README.md)."""

    lapse_after: timedelta = timedelta(days=90)
    daily_items: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({1: 100, 2: 10_000, 3: 10_000}))

    def quota(self, tier: int) -> int:
        return self.daily_items[tier]


DEFAULT_POLICY = AccessPolicy()


@dataclass(frozen=True)
class AccessReason:
    code: str
    message: str
    remedy: str

    def as_reason(self) -> Reason:
        """As a `Reason` of an `access.denied` payload."""
        return Reason(code=self.code, message=self.message)


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    reasons: tuple[AccessReason, ...] = ()
    remedy: str = ""
    quota_remaining: int | None = None

    @property
    def codes(self) -> list[str]:
        return [reason.code for reason in self.reasons]


def _deny(reasons: Iterable[AccessReason]) -> AccessDecision:
    reasons = tuple(reasons)
    remedies = list(dict.fromkeys(reason.remedy for reason in reasons))
    return AccessDecision(False, reasons, "; ".join(remedies)[:500])


def _aware(at: datetime | None) -> datetime:
    at = at or now_utc()
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def usage_today(connection: Connection, partner_id: str, day: date) -> int:
    used = connection.execute(
        select(access_usage.c.item_count).where(access_usage.c.partner_id == partner_id, access_usage.c.day == day)
    ).scalar()
    return int(used or 0)


def _last_contribution(connection: Connection, partner_id: str, kinds: tuple[str, ...]) -> datetime | None:
    latest = connection.execute(
        select(func.max(contributions.c.occurred_at)).where(
            contributions.c.partner_id == partner_id, contributions.c.kind.in_(kinds)
        )
    ).scalar()
    if latest is None:
        return None
    if isinstance(latest, str):  # SQLite returns max() of a DateTime column as text
        latest = datetime.fromisoformat(latest)
    return _aware(latest)


def _agreement_reason(
    tier: int, academic: bool, connection: Connection, partner_id: str, at: datetime
) -> AccessReason | None:
    gate = tier_gate(tier, academic=academic, agreements=list_agreements(connection, partner_id), at=at)
    if gate.allowed:
        return None
    kind = "DPA" if tier == 2 else "Tier 3 training agreement"
    if gate.code.endswith("_inactive") and "expired" in gate.message:
        return AccessReason("agreement.expired", gate.message, f"renew the {kind} with Mishale")
    if gate.code.endswith("_inactive"):
        return AccessReason("agreement.not_yet_valid", gate.message, f"wait until the {kind} starts")
    if gate.code == "agreement.dpa_not_reviewed":
        return AccessReason(gate.code, gate.message, "have an attorney review the DPA and record it")
    return AccessReason("agreement.missing", gate.message, f"sign a {kind} with Mishale")


def decide_access(
    connection: Connection,
    partner_id: str,
    action: AccessAction | str,
    *,
    model_version: int | None = None,
    at: datetime | None = None,
    items: int = 1,
    policy: AccessPolicy = DEFAULT_POLICY,
) -> AccessDecision:
    """May `partner_id` do `action` (on `model_version`, for `items` predictions) at `at` (default now)?"""
    try:
        action = AccessAction(action)
    except ValueError:
        known = ", ".join(a.value for a in AccessAction)
        return _deny([AccessReason("action.unknown", f"unknown action {action!r}", f"ask for one of: {known}")])
    if items < 1:
        return _deny([AccessReason("request.empty", "the request asks for no predictions", "send at least one item")])
    at = _aware(at)
    partner = get_partner(connection, partner_id, required=False)
    if partner is None:
        return _deny(
            [AccessReason("partner.unknown", f"no partner {partner_id!r} is registered", "register with Mishale")]
        )
    if not partner.active:
        return _deny(
            [
                AccessReason(
                    "partner.revoked", f"partner {partner_id!r} was revoked", "a revoked partner gets nothing back"
                )
            ]
        )

    reasons: list[AccessReason] = []
    required = REQUIRED_TIER[action]
    if partner.tier < required:
        needs = "a DPA" if required == 2 else "a Tier 3 training agreement"
        reasons.append(
            AccessReason(
                "tier.insufficient",
                f"{action.value} needs Tier {required}; partner {partner_id!r} is Tier {partner.tier}",
                f"sign {needs} and move to Tier {required}",
            )
        )
    elif required > 1:
        # Held to the agreement the *action's* tier needs: Tier 1 actions need none, whatever the partner's tier.
        agreement = _agreement_reason(required, partner.academic, connection, partner_id, at)
        if agreement is not None:
            reasons.append(agreement)

    kinds = QUALIFYING_KINDS[action]
    last = _last_contribution(connection, partner_id, kinds)
    if last is None:
        reasons.append(
            AccessReason(
                "contribution.none",
                f"{action.value} is given in return for contributions of kind {'/'.join(kinds)}; none is on record",
                _CONTRIBUTE_HOW[kinds],
            )
        )
    elif at - last > policy.lapse_after:
        reasons.append(
            AccessReason(
                "contribution.lapsed",
                f"the last {'/'.join(kinds)} contribution was on {last.date()}, more than "
                f"{policy.lapse_after.days} days before {at.date()}",
                f"{_CONTRIBUTE_HOW[kinds]} again",
            )
        )

    if model_version is not None:
        model = find_model_version(connection, model_version)
        if model is None:
            reasons.append(
                AccessReason(
                    "model.unknown",
                    f"model version {model_version} is not in the registry",
                    "list the versions with `mshale-fl model list`",
                )
            )
        elif action is AccessAction.MODEL_DOWNLOAD and partner_id not in model.contributors:
            helped = versions_contributed_to(connection, partner_id)
            which = f" ({', '.join(map(str, helped))})" if helped else ""
            reasons.append(
                AccessReason(
                    "model.not_contributed",
                    f"partner {partner_id!r} contributed no training to model version {model_version}",
                    f"download a version you helped train{which}, or join the training of the next one",
                )
            )
    elif action is AccessAction.MODEL_DOWNLOAD:
        reasons.append(
            AccessReason("model.version_required", "a download names one model version", "name the version to download")
        )

    remaining: int | None = None
    if action in PREDICT_ACTIONS:
        quota = policy.quota(partner.tier)
        remaining = quota - usage_today(connection, partner_id, utc_date(at))
        if items > remaining:
            reset = datetime.combine(utc_date(at) + timedelta(days=1), time(), tzinfo=UTC)
            upgrade = f" or move to Tier 2 ({policy.quota(2)} a day)" if partner.tier == 1 else ""
            reasons.append(
                AccessReason(
                    "quota.exhausted",
                    f"the daily quota is {quota} predictions; {max(remaining, 0)} remain today and {items} were asked",
                    f"wait until {reset.isoformat()}{upgrade}",
                )
            )

    if reasons:
        return _deny(reasons)
    return AccessDecision(True, quota_remaining=remaining)


def authorize(
    connection: Connection,
    partner_id: str,
    action: AccessAction | str,
    *,
    model_version: int | None = None,
    at: datetime | None = None,
    items: int = 1,
    policy: AccessPolicy = DEFAULT_POLICY,
) -> AccessDecision:
    """`decide_access`, and if allowed, charge `items` to today's quota in this transaction."""
    decision = decide_access(
        connection, partner_id, action, model_version=model_version, at=at, items=items, policy=policy
    )
    if not decision.allowed or AccessAction(action) not in PREDICT_ACTIONS:
        return decision
    at = _aware(at)
    day = utc_date(at)
    partner = get_partner(connection, partner_id)
    assert partner is not None
    quota = policy.quota(partner.tier)
    insert_if_absent(
        connection, access_usage, {"partner_id": partner_id, "day": day, "item_count": 0, "updated_at": at}
    )
    # Conditional: a concurrent request that took the quota first makes this update match no row.
    charged = connection.execute(
        update(access_usage)
        .where(
            access_usage.c.partner_id == partner_id,
            access_usage.c.day == day,
            access_usage.c.item_count + items <= quota,
        )
        .values(item_count=access_usage.c.item_count + items, updated_at=at)
    ).rowcount
    if charged != 1:
        return decide_access(
            connection, partner_id, action, model_version=model_version, at=at, items=items, policy=policy
        )
    return AccessDecision(True, quota_remaining=quota - usage_today(connection, partner_id, day))


def download_overview(
    connection: Connection,
    partner_id: str,
    *,
    at: datetime | None = None,
    policy: AccessPolicy = DEFAULT_POLICY,
) -> list[tuple[ModelVersion, AccessDecision]]:
    """Every registered version with whether this partner may download it now (for `model list`)."""
    return [
        (
            model,
            decide_access(
                connection, partner_id, AccessAction.MODEL_DOWNLOAD, model_version=model.version, at=at, policy=policy
            ),
        )
        for model in list_model_versions(connection)
    ]
