"""Audit records: the canonical JSON bytes that become the leaves of the Merkle tree.

One record per event. It carries what an auditor needs to account for the event without the
event itself: ids, type, partner, round, the privacy budget the event consumed, the model
version, when it happened, and the SHA-256 of the event payload in canonical JSON (so a
replayed event can be matched to its record byte for byte).

    {"dp_delta":null,"dp_epsilon":null,"event_id":"…","event_type":"spec.submitted",
     "model_version":null,"occurred_at":"2025-01-02T03:04:05.000006Z","partner_id":"lab-a",
     "payload_sha256":"…","round":null,"v":1}

Every field is always present (null when the event type has no such thing), so a record has
one fixed shape. The bytes are RFC 8785 canonical JSON; `parse_record` refuses anything that
does not re-encode to exactly the same bytes, so a record has exactly one valid encoding.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from mshale_fl.audit.canonical import CanonicalJSONError, canonical_json

__all__ = [
    "MAX_RECORD_BYTES",
    "RECORD_VERSION",
    "AuditRecord",
    "RecordError",
    "parse_record",
    "payload_sha256",
    "record_for_event",
]

RECORD_VERSION = 1
MAX_RECORD_BYTES = 65_535
"""Entry bundles prefix each record with a big-endian uint16 length (C2SP tlog-tiles)."""

_FIELDS = (
    "dp_delta",
    "dp_epsilon",
    "event_id",
    "event_type",
    "model_version",
    "occurred_at",
    "partner_id",
    "payload_sha256",
    "round",
    "v",
)
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TOKEN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


class RecordError(ValueError):
    """Bytes are not a valid canonical audit record, or an event cannot be recorded."""


def _time_text(moment: datetime) -> str:
    if moment.utcoffset() is None:
        raise RecordError("event time must be timezone-aware")
    moment = moment.astimezone(UTC)
    # Not strftime: its %Y does not zero-pad years below 1000 on every platform.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def _number_text(value: float | None) -> str:
    if value is None:
        return "null"
    if type(value) is int:
        return str(value)
    return _float_text(value)


@lru_cache(maxsize=4096)
def _float_text(value: float) -> str:
    # Budgets repeat (the same epsilon per round), so the ECMAScript formatting is cached.
    return canonical_json(value).decode("ascii")


_INT = r"(null|0|[1-9][0-9]{0,15})"
_NUM = r"(null|(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:e[+-][0-9]+)?)"
_TOKEN_TEXT = r"([a-z0-9][a-z0-9._-]{0,99})"
_CANONICAL_RECORD = re.compile(
    r'\{"dp_delta":' + _NUM
    + r',"dp_epsilon":' + _NUM
    + r',"event_id":"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"'
    + r',"event_type":"' + _TOKEN_TEXT
    + r'","model_version":' + _INT
    + r',"occurred_at":"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z)"'
    + r',"partner_id":"' + _TOKEN_TEXT
    + r'","payload_sha256":"([0-9a-f]{64})"'
    + r',"round":' + _INT
    + r',"v":1\}'
)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    event_id: str
    event_type: str
    partner_id: str
    occurred_at: str
    payload_sha256: str
    round: int | None = None
    model_version: int | None = None
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    v: int = RECORD_VERSION

    def __post_init__(self) -> None:
        _validate(self)

    def to_bytes(self) -> bytes:
        """The canonical JSON encoding (keys in sorted order, written out directly for speed)."""
        text = (
            f'{{"dp_delta":{_number_text(self.dp_delta)},"dp_epsilon":{_number_text(self.dp_epsilon)},'
            f'"event_id":"{self.event_id}","event_type":"{self.event_type}",'
            f'"model_version":{_number_text(self.model_version)},"occurred_at":"{self.occurred_at}",'
            f'"partner_id":"{self.partner_id}","payload_sha256":"{self.payload_sha256}",'
            f'"round":{_number_text(self.round)},"v":{self.v}}}'
        )
        return text.encode("utf-8")

    @property
    def event_uuid(self) -> uuid.UUID:
        return uuid.UUID(self.event_id)


def _validate(record: AuditRecord) -> None:
    if record.v != RECORD_VERSION:
        raise RecordError(f"record version {record.v!r} is not {RECORD_VERSION}")
    try:
        canonical_id = str(uuid.UUID(record.event_id))
    except (ValueError, TypeError, AttributeError) as exc:
        raise RecordError(f"event_id {record.event_id!r} is not a UUID") from exc
    if canonical_id != record.event_id:
        raise RecordError(f"event_id {record.event_id!r} is not in canonical lower-case form")
    for name in ("event_type", "partner_id"):
        value = getattr(record, name)
        if not isinstance(value, str) or not _TOKEN.match(value):
            raise RecordError(f"{name} {value!r} is not a short lower-case token")
    if not isinstance(record.occurred_at, str) or not _TIME.match(record.occurred_at):
        raise RecordError(f"occurred_at {record.occurred_at!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    if not isinstance(record.payload_sha256, str) or not _HEX64.match(record.payload_sha256):
        raise RecordError("payload_sha256 is not 64 lower-case hex digits")
    for name in ("round", "model_version"):
        value = getattr(record, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53):
            raise RecordError(f"{name} {value!r} is not a non-negative integer or null")
    for name in ("dp_epsilon", "dp_delta"):
        value = getattr(record, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise RecordError(f"{name} {value!r} is not a finite non-negative number or null")


def parse_record(data: bytes) -> AuditRecord:
    """Parse leaf bytes back into a record; refuses anything but the one canonical encoding."""
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError(f"record is {len(data)} bytes; the limit is {MAX_RECORD_BYTES}")
    # Fast path (the verifier parses every entry): one anchored pattern accepts exactly the
    # canonical layout; only the numbers need a closer look.
    try:
        match = _CANONICAL_RECORD.fullmatch(data.decode("ascii"))
    except UnicodeDecodeError:
        match = None
    if match is None:
        _explain_non_canonical(data)
    delta, epsilon, event_id, event_type, model_version, occurred_at, partner_id, payload, round_ = match.groups()
    record = _new_record(AuditRecord)
    _set(record, "event_id", event_id)
    _set(record, "event_type", event_type)
    _set(record, "partner_id", partner_id)
    _set(record, "occurred_at", occurred_at)
    _set(record, "payload_sha256", payload)
    _set(record, "round", None if round_ == "null" else _parse_int(round_, "round"))
    _set(record, "model_version", None if model_version == "null" else _parse_int(model_version, "model_version"))
    _set(record, "dp_epsilon", None if epsilon == "null" else _parse_number(epsilon, "dp_epsilon"))
    _set(record, "dp_delta", None if delta == "null" else _parse_number(delta, "dp_delta"))
    _set(record, "v", RECORD_VERSION)
    return record


# The pattern has already validated every field, so the record is built without re-validating.
_new_record = object.__new__
_set = object.__setattr__


def _parse_int(text: str, name: str) -> int:
    value = int(text)
    if value >= 2**53:
        raise RecordError(f"{name} {value} is beyond 2**53")
    return value


def _parse_number(text: str, name: str) -> float | int:
    value = float(text)
    if not math.isfinite(value) or _float_text(value) != text:
        raise RecordError(f"{name} {text} is not in canonical JSON (RFC 8785) number form")
    return int(value) if value.is_integer() and "e" not in text and "." not in text else value


def _explain_non_canonical(data: bytes) -> None:
    """Raise a `RecordError` that says what is wrong with bytes the canonical pattern refused."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"record is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise RecordError("record is not a JSON object")
    if tuple(sorted(value)) != _FIELDS:
        missing = sorted(set(_FIELDS) - set(value))
        extra = sorted(set(value) - set(_FIELDS))
        raise RecordError(f"record fields differ from version {RECORD_VERSION}: missing {missing}, unexpected {extra}")
    try:
        record = AuditRecord(**value)
    except TypeError as exc:
        raise RecordError(str(exc)) from exc
    raise RecordError(
        "record is not in canonical JSON form (RFC 8785)"
        if record.to_bytes() != data
        else "record is not in the canonical layout"
    )


def payload_sha256(payload: Any) -> str:
    """SHA-256 (hex) of a payload's canonical JSON (pydantic models are dumped in JSON mode)."""
    if hasattr(payload, "model_dump"):
        payload = payload.model_dump(mode="json")
    try:
        return hashlib.sha256(canonical_json(payload)).hexdigest()
    except CanonicalJSONError as exc:
        raise RecordError(f"payload cannot be written as canonical JSON: {exc}") from exc


def record_for_event(event: Any) -> AuditRecord:
    """Build the audit record of an `EventEnvelope` (of `mshale_fl.schemas`).

    The round and model version come from the payload when its type has them. The privacy
    budget is what the event itself consumed: only `update.masked` spends budget (a
    `budget.low` event reports a running total, which is not a new expense).
    """
    payload = event.payload
    epsilon = delta = None
    if event.type == "update.masked":
        epsilon, delta = float(payload.epsilon_spent), float(payload.delta)
    return AuditRecord(
        event_id=str(event.event_id),
        event_type=event.type,
        partner_id=event.partner_id,
        occurred_at=_time_text(event.occurred_at),
        payload_sha256=payload_sha256(payload),
        round=getattr(payload, "round", None),
        model_version=getattr(payload, "model_version", None),
        dp_epsilon=epsilon,
        dp_delta=delta,
    )
