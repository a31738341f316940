"""Mishale's answers to partners' access requests, computed inside one ledger transaction.

- `answer_prediction(connection, request, ...)` turns a `prediction.requested` event into its one
  answer event: `prediction.ready` (the quota is charged in the same transaction) or
  `access.denied` with every reason and what would grant access.
- `model_list(connection, partner_id, ...)` is the partner's view of its access: each action now,
  and each registered version with its download decision (the `model list` RPC).

Which action a request is: one spec is `predict.spec`, one vector `predict.vectors`, anything with
more than one item `predict.batch` (a Tier 2 privilege). Predictions always come from the newest
registered version whose file checks out against the registry (`ModelFiles`); if that file is
missing or altered, the next older one answers (the answer names its version) and the fault is logged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Connection

from mshale_fl.access.model_files import ModelFiles, ModelUnavailable
from mshale_fl.access.policy import (
    DEFAULT_POLICY,
    PREDICT_ACTIONS,
    AccessAction,
    AccessDecision,
    AccessPolicy,
    AccessReason,
    authorize,
    decide_access,
    download_overview,
    usage_today,
)
from mshale_fl.access.registry import list_model_versions
from mshale_fl.access.wire import ActionAccess, ModelListReply, VersionAccess
from mshale_fl.ledger._sql import now_utc, utc_date
from mshale_fl.ledger.partners import get_partner
from mshale_fl.logging import get_logger
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.payloads import AccessDenied, Prediction, PredictionReady, PredictionRequested

log = get_logger(__name__)

__all__ = [
    "ANSWER_NAMESPACE",
    "DEFAULT_MAX_REQUEST_AGE",
    "action_access",
    "answer_event_id",
    "answer_prediction",
    "denial_event",
    "model_list",
    "request_action",
]

ANSWER_NAMESPACE = uuid.UUID("3d7f0c1e-8a52-5b69-a4e3-1f6c2d9b7e40")
"""Answer ids are uuid5(ANSWER_NAMESPACE, request id): one answer per request, ever."""
DEFAULT_MAX_REQUEST_AGE = timedelta(minutes=10)
"""Generous on purpose: the age is measured against the partner's clock, which may be behind ours."""
FALLBACK_VERSIONS = 3
ORDERED_PREDICT_ACTIONS = (AccessAction.PREDICT_SPEC, AccessAction.PREDICT_VECTORS, AccessAction.PREDICT_BATCH)


def answer_event_id(request_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(ANSWER_NAMESPACE, str(request_id))


def request_action(payload: PredictionRequested) -> tuple[AccessAction, int]:
    """The action a request asks for and how many predictions (items) it counts as."""
    items = len(payload.specs) + len(payload.vectors)
    if items > 1:
        return AccessAction.PREDICT_BATCH, items
    if payload.vectors:
        return AccessAction.PREDICT_VECTORS, items
    return AccessAction.PREDICT_SPEC, items


def denial_event(
    request: EventEnvelope[Any], action: str, reasons: Iterable[AccessReason], *, event_id: uuid.UUID | None = None
) -> EventEnvelope[Any]:
    """The `access.denied` answer to `request`, listing every reason and joining the remedies."""
    reasons = list(reasons)
    remedy = "; ".join(dict.fromkeys(reason.remedy for reason in reasons))[:500]
    payload = AccessDenied(
        request_id=request.event_id, action=action, reasons=[reason.as_reason() for reason in reasons], remedy=remedy
    )
    return new_event(
        "access.denied",
        payload,
        partner_id=request.partner_id,
        causation=request,
        event_id=event_id or answer_event_id(request.event_id),
    )


def _request_reasons(
    request: EventEnvelope[Any], sender: str | None, now: datetime, max_age: timedelta
) -> list[AccessReason]:
    """Reasons that concern the message rather than the partner's access (who sent it, when)."""
    reasons = []
    if sender is not None and sender != request.partner_id:
        reasons.append(
            AccessReason(
                "sender.mismatch",
                f"sent by broker user {sender!r}, not by partner {request.partner_id!r}",
                "send requests as your own partner user (`mshale-fl predict` does)",
            )
        )
    age = now - request.occurred_at
    if age > max_age:
        reasons.append(
            AccessReason(
                "request.stale",
                f"the request waited {age.total_seconds():.0f} s for a predict worker, longer than "
                f"{max_age.total_seconds():.0f} s, so nobody is waiting for its answer (or your clock is that far "
                "behind Mishale's); nothing was charged",
                "send the request again",
            )
        )
    return reasons


def _serving_model(connection: Connection, models: ModelFiles) -> tuple[int, Any] | AccessReason:
    """The newest registered version whose file checks out (and the model), or why there is none.

    A version whose file is missing or altered is skipped (and logged): an older version still
    answers, and the answer names the version it came from. At most `FALLBACK_VERSIONS` are tried.
    """
    versions = list_model_versions(connection)
    if not versions:
        return AccessReason(
            "model.unavailable",
            "no model version is registered yet",
            "wait until Mishale publishes the first model version",
        )
    problems = []
    for model in reversed(versions[-FALLBACK_VERSIONS:]):
        try:
            return model.version, models.get(model.version, model.sha256).model
        except ModelUnavailable as error:
            log.error("access.model_unavailable", model_version=model.version, error=str(error))
            problems.append(str(error))
    return AccessReason(
        "model.unavailable", "; ".join(problems)[:500], "try again later (Mishale's operators are alerted)"
    )


def answer_prediction(
    connection: Connection,
    request: EventEnvelope[Any],
    *,
    models: ModelFiles,
    policy: AccessPolicy = DEFAULT_POLICY,
    sender: str | None = None,
    verify_sender: bool = True,
    max_request_age: timedelta = DEFAULT_MAX_REQUEST_AGE,
    now: datetime | None = None,
) -> EventEnvelope[Any]:
    """The one answer to a `prediction.requested` event (see the module docstring).

    `sender` is the broker-checked user id of the request (`verify_sender=False` only outside the
    consumer runtime, where there is no transport). Nothing is charged unless predictions are
    returned; the charge commits with the caller's transaction.
    """
    now = now or now_utc()
    action, items = request_action(request.payload)
    if verify_sender and sender is None:
        reasons = [
            AccessReason(
                "sender.unverified",
                "the message has no user_id property, so the broker did not verify who sent it",
                "send requests with the partner agent (`mshale-fl predict`), which sets it",
            )
        ]
        return denial_event(request, action.value, reasons)
    reasons = _request_reasons(request, sender, now, max_request_age)
    if reasons:
        return denial_event(request, action.value, reasons)

    serving = _serving_model(connection, models)
    if isinstance(serving, AccessReason):
        return denial_event(request, action.value, [serving])
    version, model = serving

    decision = authorize(connection, request.partner_id, action, items=items, at=now, policy=policy)
    if not decision.allowed:
        return denial_event(request, action.value, decision.reasons)

    specs, vectors = request.payload.specs, request.payload.vectors
    from mshale_fl.agents.partner.featurize import feature_values

    rows = [feature_values(spec) for spec in specs] + [vector.as_array() for vector in vectors]
    efficiencies = model.predict(np.stack(rows))
    hashes = [spec.content_hash for spec in specs] + [vector.spec_hash for vector in vectors]
    ready = PredictionReady(
        request_id=request.event_id,
        model_version=version,
        predictions=[
            Prediction(item_hash=item_hash, efficiency=float(efficiency))
            for item_hash, efficiency in zip(hashes, efficiencies, strict=True)
        ],
    )
    return new_event(
        "prediction.ready",
        ready,
        partner_id=request.partner_id,
        causation=request,
        event_id=answer_event_id(request.event_id),
    )


def action_access(
    action: AccessAction | str, decision: AccessDecision, *, quota_remaining: int | None = None
) -> ActionAccess:
    return ActionAccess(
        action=str(action),
        allowed=decision.allowed,
        reasons=[reason.as_reason() for reason in decision.reasons],
        remedy=decision.remedy or None,
        quota_remaining=quota_remaining,
    )


def model_list(
    connection: Connection, partner_id: str, *, policy: AccessPolicy = DEFAULT_POLICY, at: datetime | None = None
) -> ModelListReply:
    """Everything a partner may do now and every registered version with its download decision."""
    at = at or now_utc()
    partner = get_partner(connection, partner_id, required=False)
    remaining = None
    if partner is not None and partner.active:
        remaining = max(policy.quota(partner.tier) - usage_today(connection, partner_id, utc_date(at)), 0)
    actions = [
        action_access(
            action,
            decide_access(connection, partner_id, action, at=at, policy=policy),
            quota_remaining=remaining if action in PREDICT_ACTIONS else None,
        )
        for action in ORDERED_PREDICT_ACTIONS
    ]
    versions = []
    for model, decision in download_overview(connection, partner_id, at=at, policy=policy):
        own = model.contributors.get(partner_id)
        versions.append(
            VersionAccess(
                version=model.version,
                parent_version=model.parent_version,
                sha256=model.sha256,
                rounds=model.rounds,
                metrics=model.metrics,
                published_at=model.published_at,
                contributors=len(model.contributors),
                you_contributed=own is not None,
                your_epsilon=own.epsilon if own is not None else None,
                download=action_access(AccessAction.MODEL_DOWNLOAD, decision),
            )
        )
    if not versions:
        # Still say what a download needs, so a partner without any version learns the rule.
        general = decide_access(
            connection, partner_id, AccessAction.MODEL_DOWNLOAD, model_version=None, at=at, policy=policy
        )
        reasons = [r for r in general.reasons if r.code != "model.version_required"]
        reasons.append(
            AccessReason("model.unknown", "no model version is registered yet", "wait until Mishale publishes one")
        )
        decision = AccessDecision(False, tuple(reasons), "; ".join(dict.fromkeys(r.remedy for r in reasons)))
        actions.append(action_access(AccessAction.MODEL_DOWNLOAD, decision))
    else:
        allowed = [v.version for v in versions if v.download.allowed]
        actions.append(
            ActionAccess(
                action=AccessAction.MODEL_DOWNLOAD.value,
                allowed=bool(allowed),
                remedy=None if allowed else versions[-1].download.remedy,
                reasons=[] if allowed else versions[-1].download.reasons,
            )
        )
    return ModelListReply(
        status="ok",
        partner_id=partner_id,
        tier=partner.tier if partner is not None else None,
        actions=actions,
        versions=versions,
    )
