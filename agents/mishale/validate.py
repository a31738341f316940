"""The validate worker: answers every submission with `submission.accepted` or `submission.rejected`.

Runs as an `SqlHandler` (consumer name `validate`) through `InboxProcessor` on the ledger
database, so each submission is judged once: a repeated submission (same event id, which the
partner agent derives from partner, content hash and tier) gets the receipt recorded the first
time, with the same receipt id, and the ledger worker records the contribution once.

A message that does not parse never reaches the handler: the consumer runtime dead-letters it
with the reason. Everything that parses gets a receipt (partner_id = the submitter, causation =
the submission, receipt id = uuid5 of the submission id), rejected with every reason found:

| code | when |
|---|---|
| `sender.unverified` / `sender.mismatch` | the broker-checked `user_id` is absent / another user than the partner |
| `partner.unknown`, `partner.revoked`, `tier.not_granted`, `agreement.*` | `ledger.may_submit` says no (Tier 2 needs an active DPA) |
| `sensitivity.not_transmittable` | the label may not leave in this form (`full-ip` never; a spec only if `published`) |
| `spec.empty` | no step names a known operation, quantity or class: nothing to learn from |
| `spec.quantity_implausible` | a physically impossible value (below absolute zero, a negative volume, pH outside 0-14) |
| `vectors.duplicate` | the same spec hash twice in one batch |
| `vectors.all_zero` | a vector of zeros (a featurizer fault) |

The detailed vector checks come with the featurizer (issue 5).
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from sqlalchemy import Connection

from mshale_fl.agents.partner.policy import Agreements, Form, decide_form
from mshale_fl.broker import InboxProcessor, PermanentError, current_delivery
from mshale_fl.config import Settings
from mshale_fl.ledger import may_submit, open_ledger
from mshale_fl.logging import get_logger
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.payloads import Reason, SubmissionAccepted, SubmissionRejected
from mshale_fl.schemas.protocol_spec import ProtocolSpec
from mshale_fl.schemas.vocabulary import Operation, QuantityKind, Sensitivity

log = get_logger(__name__)

RECEIPT_NAMESPACE = uuid.UUID("0b3e7f5a-91c4-5e2d-8a6b-4c1d9e2f7a30")
"""Receipt ids are uuid5(RECEIPT_NAMESPACE, submission id): one receipt per submission, ever."""

ABSOLUTE_ZERO_C = -273.15
MAX_QUANTITY_REASONS = 20
MAX_REASONS = 100  # the contract's bound on a rejection's reasons

SUBMISSION_TYPES = {"spec.submitted": (Form.SPEC, 1, "spec"), "vectors.submitted": (Form.VECTORS, 2, "vectors")}
NON_NEGATIVE_KINDS = frozenset(QuantityKind) - {QuantityKind.TEMPERATURE, QuantityKind.PH}


def receipt_id(submission_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(RECEIPT_NAMESPACE, str(submission_id))


class ValidateHandler:
    """Judges one submission inside the inbox transaction; returns its receipt."""

    consumer_name: ClassVar[str] = "validate"

    def handle(self, event: EventEnvelope[Any], connection: Connection) -> Sequence[EventEnvelope[Any]]:
        if event.type not in SUBMISSION_TYPES:
            # The validate queue binds only submissions; anything else was routed here by mistake.
            raise PermanentError("validate.unexpected_event", f"the validate worker does not handle {event.type!r}")
        form, tier, kind = SUBMISSION_TYPES[event.type]
        reasons = self.reasons(event, connection, form=form, tier=tier)
        if reasons:
            payload: Any = SubmissionRejected(submission_id=event.event_id, kind=kind, reasons=reasons[:MAX_REASONS])
            receipt_type = "submission.rejected"
        else:
            items = 1 if form is Form.SPEC else len(event.payload.vectors)
            payload = SubmissionAccepted(submission_id=event.event_id, kind=kind, items=items)
            receipt_type = "submission.accepted"
        log.info(
            "submission_judged",
            partner_id=event.partner_id,
            submission_id=str(event.event_id),
            outcome=receipt_type,
            reasons=[reason.code for reason in reasons],
        )
        receipt = new_event(
            receipt_type, payload, partner_id=event.partner_id, causation=event, event_id=receipt_id(event.event_id)
        )
        return [receipt]

    def reasons(self, event: EventEnvelope[Any], connection: Connection, *, form: Form, tier: int) -> list[Reason]:
        """Every reason to reject the submission (empty: accept)."""
        reasons = list(_sender_reasons(event))
        decision = may_submit(connection, event.partner_id, tier)
        if not decision.allowed:
            reasons.append(decision.reason())
            if decision.code in ("partner.unknown", "partner.revoked"):
                return reasons  # nothing else matters for a partner that may not send at all
        reasons += _sensitivity_reasons(event.payload.sensitivity, form, agreements_ok=decision.allowed)
        if form is Form.SPEC:
            reasons += _spec_reasons(event.payload.spec)
        else:
            reasons += _vector_reasons(event.payload.vectors)
        return reasons


def _sender_reasons(event: EventEnvelope[Any]) -> Iterable[Reason]:
    delivery = current_delivery()
    if delivery is None:  # called outside the consumer runtime (tests, tools): no transport facts
        return
    if not delivery.user_id:
        yield Reason(
            code="sender.unverified",
            field="user_id",
            message="the message has no user_id property, so the broker did not verify the sender; the partner agent sets it",
        )
    elif delivery.user_id != event.partner_id:
        yield Reason(
            code="sender.mismatch",
            field="partner_id",
            message=f"sent by broker user {delivery.user_id!r}, not by partner {event.partner_id!r}",
        )


def _sensitivity_reasons(label: Sensitivity, form: Form, *, agreements_ok: bool) -> list[Reason]:
    # At this point the tier gate is checked; a partner cleared for Tier 2 holds an active DPA.
    agreements = Agreements(dpa=agreements_ok and form is not Form.SPEC)
    decision = decide_form(label, form, agreements)
    if decision.transmittable or decision.reason == "tier2_needs_dpa":  # the DPA is the tier gate's reason
        return []
    return [
        Reason(
            code="sensitivity.not_transmittable",
            field="sensitivity",
            message=f"a {label.value} protocol may not be sent as {form.value}: {decision.explanation}",
        )
    ]


def _spec_reasons(spec: ProtocolSpec) -> list[Reason]:
    reasons: list[Reason] = []
    informative = any(
        step.operation is not Operation.OTHER or step.quantities or step.equipment or step.labware or step.reagents
        for step in spec.steps
    )
    if not informative:
        reasons.append(
            Reason(code="spec.empty", field="spec.steps",
                   message="no step names a known operation, quantity or class: the spec carries nothing to learn from")
        )  # fmt: skip
    implausible = 0
    for s, step in enumerate(spec.steps):
        for q, quantity in enumerate(step.quantities):
            problem = _implausible(quantity.kind, [quantity.value, quantity.min, quantity.max])
            if problem is None:
                continue
            implausible += 1
            if implausible <= MAX_QUANTITY_REASONS:
                reasons.append(
                    Reason(code="spec.quantity_implausible", field=f"spec.steps[{s}].quantities[{q}]", message=problem)
                )
    if implausible > MAX_QUANTITY_REASONS:
        reasons.append(
            Reason(code="spec.quantity_implausible", field="spec.steps",
                   message=f"{implausible - MAX_QUANTITY_REASONS} more implausible quantities")
        )  # fmt: skip
    return reasons


def _implausible(kind: QuantityKind, values: list[float | None]) -> str | None:
    present = [value for value in values if value is not None]
    if kind is QuantityKind.TEMPERATURE and any(value < ABSOLUTE_ZERO_C for value in present):
        return "a temperature below absolute zero (-273.15 degC)"
    if kind is QuantityKind.PH and any(not 0 <= value <= 14 for value in present):
        return "a pH outside 0-14"
    if kind in NON_NEGATIVE_KINDS and any(value < 0 for value in present):
        return f"a negative {kind.value}"
    return None


def _vector_reasons(vectors: Sequence[Any]) -> list[Reason]:
    reasons: list[Reason] = []
    counts = Counter(vector.spec_hash for vector in vectors)
    for index, vector in enumerate(vectors):
        if counts[vector.spec_hash] > 1:
            reasons.append(
                Reason(code="vectors.duplicate", field=f"vectors[{index}].spec_hash",
                       message="the same spec hash appears more than once in this batch")
            )  # fmt: skip
        if not any(value != 0.0 and math.isfinite(value) for value in vector.values):
            reasons.append(
                Reason(code="vectors.all_zero", field=f"vectors[{index}].values",
                       message="every value is zero: the featurizer produced nothing")
            )  # fmt: skip
        if len(reasons) >= MAX_REASONS - 5:
            break
    return reasons


def validate_processor(settings: Settings) -> InboxProcessor:
    return InboxProcessor(ValidateHandler(), open_ledger(settings=settings))
