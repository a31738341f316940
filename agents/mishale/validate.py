"""The validate worker: answers every submission with `submission.accepted` or `submission.rejected`.

Runs as an `SqlHandler` (consumer name `validate`) through `InboxProcessor` on the ledger
database, so each submission is judged once: a repeated submission (same event id, which the
partner agent derives from partner, content hash and tier) gets the receipt recorded the first
time, with the same receipt id, and the ledger worker records the contribution once.

Everything that parses gets a receipt (partner_id = the submitter, causation = the submission,
receipt id = uuid5 of the submission id), rejected with every reason found (at most 100):

| code | when |
|---|---|
| `sender.unverified` / `sender.mismatch` | the broker-checked `user_id` is absent / another user than the partner |
| `partner.unknown`, `partner.revoked`, `tier.not_granted`, `agreement.*` | `ledger.may_submit` says no (Tier 2 needs an active DPA) |
| `sensitivity.not_transmittable` | the label may not leave in this form (`full-ip` never; a spec only if `published`) |
| `spec.empty` | no step names a known operation, quantity or class: nothing to learn from |
| `spec.quantity_implausible` | a physically impossible value (below absolute zero, a negative volume, pH outside 0-14) |
| `vectors.duplicate` | the same spec hash twice in one batch |
| `vectors.all_zero` | a vector of zeros (a featurizer fault) |
| `vector.out_of_range`, `vector.off_grid`, `vector.one_hot` | a value no featurizer of this layout produces (`featurize.grid_violations`): outside [0, 1], not exactly a multiple of its feature's grid (1, 1/4 or 1/8: a finer value could smuggle an exact number), a one-hot group without exactly one 1 |

A message that does not parse never reaches the handler. The consumer runtime offers it to
`ValidateProcessor.reject_invalid` and then dead-letters it with the reason. If the raw JSON has a
usable `event_id` and the broker-verified sender (`user_id`) is a registered partner, that partner
gets a `submission.rejected` receipt (same receipt id rule, recorded in the inbox like any other, so
one submission id never gets two different answers) with reasons derived from the validation
errors: `vector.length`, `vector.non_finite`, `vector.out_of_range` (beyond float32),
`vector.value_type`, `vector.schema_version` (an unknown `feature_schema_version`),
`vector.spec_hash`, `vectors.empty`, `vectors.batch_size`, `event.schema_version`,
`event.unknown_field`, `spec.unknown_field`, `sensitivity.unknown`, ... (`field` is the path, e.g.
`vectors[2].values[17]`), plus `sender.mismatch` when the body names another partner and the
ledger's `may_submit` reason when the partner may not send at that tier. The receipt is addressed
to the `user_id`, never to a partner id read from the body. Bodies that are not JSON, lack an
event id, or come from a user that is not a partner are only dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, Engine

from mshale_fl.agents.partner.featurize import FEATURES, grid_violations
from mshale_fl.agents.partner.policy import Agreements, Form, decide_form
from mshale_fl.broker import Delivery, InboxProcessor, PermanentError, current_delivery
from mshale_fl.config import Settings
from mshale_fl.ledger import get_partner, may_submit, open_ledger
from mshale_fl.logging import get_logger
from mshale_fl.schemas import payloads
from mshale_fl.schemas.common import now_utc
from mshale_fl.schemas.events import EVENT_MODELS, MAX_EVENT_BYTES, EventEnvelope, new_event
from mshale_fl.schemas.feature_vector import FEATURE_DIM, FEATURE_SCHEMA_VERSION, FeatureVector
from mshale_fl.schemas.payloads import Reason, SubmissionAccepted, SubmissionRejected
from mshale_fl.schemas.protocol_spec import ProtocolSpec, Quantity, Step
from mshale_fl.schemas.vocabulary import Operation, QuantityKind, Sensitivity

log = get_logger(__name__)

RECEIPT_NAMESPACE = uuid.UUID("0b3e7f5a-91c4-5e2d-8a6b-4c1d9e2f7a30")
"""Receipt ids are uuid5(RECEIPT_NAMESPACE, submission id): one receipt per submission, ever."""

ABSOLUTE_ZERO_C = -273.15
MAX_QUANTITY_REASONS = 20
MAX_REASONS = 100  # the contract's bound on a rejection's reasons
MAX_REASONS_PER_VECTOR = 5
MAX_MESSAGE = 500
MAX_FIELD = 200
PARTNER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")

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
            payload: Any = SubmissionRejected(submission_id=event.event_id, kind=kind, reasons=_capped(reasons))
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


def _capped(reasons: list[Reason]) -> list[Reason]:
    """At most MAX_REASONS, the last one saying how many more there were."""
    if len(reasons) <= MAX_REASONS:
        return reasons
    more = len(reasons) - (MAX_REASONS - 1)
    return [*reasons[: MAX_REASONS - 1], Reason(code="reasons.truncated", field=None,
                                                message=f"{more} more problems like the ones above are not listed")]  # fmt: skip


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
        else:
            reasons += _layout_reasons(index, vector.values)
        if len(reasons) > MAX_REASONS:
            break
    return reasons


# What `grid_violations` says, by the words of its sentences (tested: a rewording fails a test).
_GRID_CODES = (
    ("values, not", "vector.length"),
    ("is not a number", "vector.value_type"),
    ("is not finite", "vector.non_finite"),
    ("is outside", "vector.out_of_range"),
    ("is not a multiple of", "vector.off_grid"),
    ("is one-hot", "vector.one_hot"),
)
_INDEX = re.compile(r"\(index (\d+)\)")


def _grid_code(violation: str) -> str:
    return next((code for words, code in _GRID_CODES if words in violation), "vector.layout")


def _layout_reasons(index: int, values: Sequence[float]) -> list[Reason]:
    """Reasons a vector is not one this layout can produce: `grid_violations`, plus exactness.

    `grid_violations` allows a tolerance of 1e-6 around each grid point, room enough to hide about
    seven bits per feature; a genuine vector is exact (every value is k/1, k/4 or k/8, exact in
    float32 and JSON), so anything else is refused as off the grid.
    """
    found = [(_grid_code(violation), violation) for violation in grid_violations(list(values))]
    flagged = {int(match.group(1)) for _, violation in found if (match := _INDEX.search(violation))}
    for feature, value in zip(FEATURES, values, strict=False):
        if feature.index not in flagged and math.isfinite(value) and not (value * feature.grid).is_integer():
            found.append(("vector.off_grid", f"{feature.name} (index {feature.index}) = {value!r} is not exactly a "
                                             f"multiple of 1/{feature.grid}"))  # fmt: skip
    reasons = []
    for code, violation in found[:MAX_REASONS_PER_VECTOR]:
        match = _INDEX.search(violation)
        field = f"vectors[{index}].values" + (f"[{match.group(1)}]" if match else "")
        reasons.append(Reason(code=code, field=field, message=violation[:MAX_MESSAGE]))
    if len(found) > MAX_REASONS_PER_VECTOR:
        reasons.append(Reason(code=found[MAX_REASONS_PER_VECTOR][0], field=f"vectors[{index}].values",
                              message=f"{len(found) - MAX_REASONS_PER_VECTOR} more values of this vector are "
                                      "not ones the featurizer produces"))  # fmt: skip
    return reasons


# -- messages that do not parse ---------------------------------------------------------------------


@dataclass(frozen=True)
class InvalidSubmission:
    """What can be trusted of an unparseable submission: its claimed id and kind, and why it failed."""

    event_id: uuid.UUID
    correlation_id: uuid.UUID
    kind: str  # "spec", "vectors" or "unknown"
    claimed_partner_id: str | None
    reasons: list[Reason]


def _uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def read_invalid_submission(body: bytes, routing_key: str, error: ValueError) -> InvalidSubmission | None:
    """The parts of a body that failed `parse_event` needed to answer it, or None if it cannot be answered."""
    if len(body) > MAX_EVENT_BYTES:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nested deeper than the stack: not answerable
        return None
    if not isinstance(data, dict) or (event_id := _uuid(data.get("event_id"))) is None:
        return None
    routed_type = routing_key.split(".", 1)[1] if "." in routing_key else ""
    claimed = data.get("type")
    # `in` on a set hashes its operand: a list or object as "type" must not raise here.
    claimed_type = claimed if isinstance(claimed, str) and claimed in SUBMISSION_TYPES else routed_type
    kind = SUBMISSION_TYPES[claimed_type][2] if claimed_type in SUBMISSION_TYPES else "unknown"
    claimed_partner = data.get("partner_id") if isinstance(data.get("partner_id"), str) else None
    return InvalidSubmission(
        event_id=event_id,
        correlation_id=_uuid(data.get("correlation_id")) or event_id,
        kind=kind,
        claimed_partner_id=claimed_partner,
        reasons=reasons_from_error(error),
    )


def reasons_from_error(error: ValueError) -> list[Reason]:
    """Machine-readable reasons for a body that failed strict parsing (field = the path in the payload)."""
    if not isinstance(error, ValidationError):
        return [Reason(code="event.invalid", field=None, message=str(error)[:MAX_MESSAGE] or "the event is invalid")]
    return [_reason_of(item) for item in error.errors(include_url=False)]


def _contract_names() -> frozenset[str]:
    """Every field name of the event contract: the only words a rejection's `field` path may quote."""
    models = [EventEnvelope, ProtocolSpec, Quantity, Step, FeatureVector]
    models += [value for value in vars(payloads).values() if isinstance(value, type) and issubclass(value, BaseModel)]
    return frozenset(name for model in models for name in model.model_fields)


_CONTRACT_NAMES = _contract_names()
UNKNOWN_NAME = "<unknown>"


def _path(location: Sequence[str | int]) -> str:
    # A key the contract does not define (an extra field, a metric name) is the sender's own text:
    # the receipt, kept in the inbox and sent on the bus, says where it was but never quotes it.
    text = ""
    for part in location:
        name = part if isinstance(part, int) or part in _CONTRACT_NAMES else UNKNOWN_NAME
        text += f"[{name}]" if isinstance(name, int) else (f".{name}" if text else name)
    return text


def _quoted(value: object) -> str:
    """A rejected value as a receipt may quote it: an integer (a version number), else only its kind."""
    if type(value) is int and abs(value) < 10**9:
        return repr(value)
    return f"({type(value).__name__})"


def _reason_of(item: Any) -> Reason:
    location = list(item.get("loc", ()))
    if location and location[0] in EVENT_MODELS:  # the discriminator's tag, not a field
        location = location[1:]
    in_payload = location[:1] == ["payload"]
    path = location[1:] if in_payload else location
    code, explanation = _classify(path, in_payload, str(item.get("type", "")), str(item.get("msg", "")), item.get("input"))
    return Reason(code=code, field=_path(path)[:MAX_FIELD] or None, message=explanation[:MAX_MESSAGE])


def _classify(path: list[Any], in_payload: bool, kind: str, msg: str, value: object) -> tuple[str, str]:
    """(code, message) for one validation error at `path` (inside the payload or the envelope)."""
    if not in_payload:
        if path == ["schema_version"]:
            return "event.schema_version", (f"event schema_version {_quoted(value)} is not supported "
                                            f"(this Mishale reads 1): {msg}")  # fmt: skip
        if kind.startswith("union_tag"):
            return "event.type_unknown", "the event type is not one of the contract's"
        if kind == "extra_forbidden":
            return "event.unknown_field", "the envelope has a field the contract does not define"
        return "event.invalid", msg
    head = path[0] if path else None
    if head == "vectors":
        if len(path) == 1:
            if kind == "too_short":
                return "vectors.empty", "a vectors.submitted batch holds at least one vector"
            if kind == "too_long":
                return "vectors.batch_size", f"a vectors.submitted batch holds at most 1000 vectors: {msg}"
            return "vectors.invalid", msg
        member = path[2] if len(path) > 2 else None
        if member == "values":
            if len(path) == 3 and kind in ("too_short", "too_long"):
                return "vector.length", f"a feature vector has exactly {FEATURE_DIM} values: {msg}"
            if kind == "finite_number" or "finite" in msg:
                return "vector.non_finite", "NaN or infinity is not a feature value (every value is in [0, 1])"
            if "float32" in msg:
                return "vector.out_of_range", f"{msg.removeprefix('Value error, ')} (every value is in [0, 1])"
            if kind in ("float_type", "float_parsing"):
                return "vector.value_type", "a feature value must be a number"
            return "vector.invalid", msg
        if member == "feature_schema_version":
            return "vector.schema_version", (f"feature_schema_version {_quoted(value)} is unknown; this Mishale accepts "
                                             f"{FEATURE_SCHEMA_VERSION} (update the partner agent)")  # fmt: skip
        if member == "spec_hash":
            return "vector.spec_hash", "spec_hash must be the spec's salted content hash (64 lower-case hex digits)"
        if kind == "extra_forbidden":
            return "vector.unknown_field", "a feature vector has only feature_schema_version, spec_hash and values"
        return "vector.invalid", msg
    if kind == "extra_forbidden":
        if head == "spec":
            return "spec.unknown_field", "a spec has no such field (free text is never part of a spec)"
        return "event.unknown_field", "the payload has a field the contract does not define"
    if head == "spec":
        return "spec.invalid", msg
    if head == "sensitivity":
        return "sensitivity.unknown", "sensitivity must be published, internal, efficiency or full-ip"
    return "event.invalid", msg


class _NotAPartner(Exception):
    """Raised inside the inbox transaction to leave no trace: the sender is not a registered partner."""


class ValidateProcessor(InboxProcessor):
    """The validate worker: `ValidateHandler` through the inbox, and receipts for submissions that do not parse."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(ValidateHandler(), engine)

    async def reject_invalid(self, body: bytes, delivery: Delivery, error: ValueError) -> Sequence[EventEnvelope[Any]]:
        """The `submission.rejected` receipt for an unparseable submission (see the module docstring), or nothing."""
        sender = delivery.user_id
        if not sender or not PARTNER_ID.match(sender):
            return []
        submission = read_invalid_submission(body, delivery.routing_key, error)
        if submission is None:
            return []
        loop = asyncio.get_running_loop()
        # The processor's own thread: one transaction at a time, as for every other event.
        return await loop.run_in_executor(self._executor, self._record_rejection, submission, sender)

    def _record_rejection(self, submission: InvalidSubmission, sender: str) -> list[EventEnvelope[Any]]:
        def effect(connection: Connection) -> list[EventEnvelope[Any]]:
            if get_partner(connection, sender, required=False) is None:
                raise _NotAPartner(sender)
            reasons = list(submission.reasons)
            claimed = submission.claimed_partner_id
            if claimed is not None and claimed != sender:
                named = repr(claimed) if PARTNER_ID.fullmatch(claimed) else "(not a valid partner id)"
                reasons.insert(0, Reason(code="sender.mismatch", field="partner_id",
                                         message=f"sent by broker user {sender!r}, not by partner {named}"))  # fmt: skip
            if submission.kind in ("spec", "vectors"):
                decision = may_submit(connection, sender, 1 if submission.kind == "spec" else 2)
                if not decision.allowed:
                    reasons.insert(0, decision.reason())
            return [_rejection(submission, sender, reasons)]

        try:
            applied_now, outputs = self.inbox.apply_once(submission.event_id, effect)
        except _NotAPartner:
            log.info("invalid_submission_not_answered", sender=sender, submission_id=str(submission.event_id))
            return []
        log.info("invalid_submission_rejected", partner_id=sender, submission_id=str(submission.event_id),
                 reasons=[reason.code for reason in submission.reasons][:20], new=applied_now)  # fmt: skip
        return outputs


def _rejection(submission: InvalidSubmission, sender: str, reasons: list[Reason]) -> EventEnvelope[Any]:
    payload = SubmissionRejected(submission_id=submission.event_id, kind=submission.kind, reasons=_capped(reasons))
    return EVENT_MODELS["submission.rejected"](
        event_id=receipt_id(submission.event_id),
        type="submission.rejected",
        partner_id=sender,
        occurred_at=now_utc(),
        correlation_id=submission.correlation_id,
        causation_id=submission.event_id,
        payload=payload,
    )


def validate_processor(settings: Settings) -> ValidateProcessor:
    return ValidateProcessor(open_ledger(settings=settings))
