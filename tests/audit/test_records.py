"""Canonical JSON (RFC 8785) and the audit records built from events."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mshale_fl.audit.canonical import (
    CanonicalJSONError,
    canonical_json,
    is_canonical_json,
)
from mshale_fl.audit.records import (
    AuditRecord,
    RecordError,
    _time_text,
    parse_record,
    payload_sha256,
    record_for_event,
)

# Number serialisations from RFC 8785 appendix B (IEEE-754 bit pattern -> expected JSON text).
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), RFC8785_NUMBERS)
def test_numbers_are_written_as_ecmascript_does(bits: str, expected: str) -> None:
    value = float.fromhex(_bits_to_hex_float(bits))
    assert canonical_json(value).decode() == expected


def _bits_to_hex_float(bits: str) -> str:
    import struct

    return struct.unpack(">d", bytes.fromhex(bits))[0].hex()


def test_objects_are_sorted_by_utf16_code_units_without_whitespace() -> None:
    # RFC 8785 3.2.3 example: sorting by UTF-16 puts U+1D306 (a surrogate pair) before U+FB33.
    value = {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew", "1": "One", "\U0001f600": "Emoji", "\u0080": "Control", "\u00f6": "o"}
    text = canonical_json(value).decode("utf-8")
    keys = list(json.loads(text))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert ", " not in text and ": " not in text


def test_strings_escape_only_what_json_requires() -> None:
    assert canonical_json("\u20ac\n\"\\\u001f/") == '"\u20ac\\n\\"\\\\\\u001f/"'.encode()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 2**53 + 1, {1: "x"}, b"bytes", "\ud800"])
def test_values_json_cannot_represent_exactly_are_refused(bad: Any) -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_json(bad)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
        max_leaves=20,
    )
)
def test_canonical_json_round_trips(value: Any) -> None:
    data = canonical_json(value)
    assert is_canonical_json(data)
    assert canonical_json(json.loads(data, parse_float=float, parse_int=lambda t: float(t) if abs(int(t)) > 2**53 else int(t))) == data


def test_record_of_an_update_carries_round_budget_and_model_version(make_events: Any) -> None:
    event = make_events(1)[0]  # update.masked
    record = record_for_event(event)
    assert record.event_id == str(event.event_id)
    assert record.event_type == "update.masked"
    assert record.partner_id == "lab-a"
    assert (record.round, record.model_version) == (event.payload.round, 2)
    assert (record.dp_epsilon, record.dp_delta) == (event.payload.epsilon_spent, 1e-5)
    assert record.payload_sha256 == payload_sha256(event.payload)
    assert record.occurred_at.endswith("Z") and len(record.occurred_at) == 27


def test_only_updates_consume_budget(make_events: Any) -> None:
    for event in make_events(6)[1:]:
        record = record_for_event(event)
        assert record.dp_epsilon is None and record.dp_delta is None, event.type


def test_record_bytes_are_canonical_and_parse_back(make_events: Any) -> None:
    for event in make_events(6):
        data = record_for_event(event).to_bytes()
        assert data == canonical_json(json.loads(data))
        assert parse_record(data) == record_for_event(event)
    assert b'"dp_delta":0.00001' in record_for_event(make_events(1)[0]).to_bytes()


def test_record_is_independent_of_how_the_event_was_serialised(make_events: Any) -> None:
    from mshale_fl.schemas import parse_event

    event = make_events(1)[0]
    wire = json.dumps(json.loads(event.model_dump_json()), indent=3).encode()
    assert record_for_event(parse_event(wire)).to_bytes() == record_for_event(event).to_bytes()


@pytest.mark.parametrize(
    "mutation",
    [
        lambda d: d.replace(b'"v":1', b'"v":2'),
        lambda d: d.replace(b"{", b"{ ", 1),
        lambda d: d[:-1] + b',"extra":1}',
        lambda d: d.replace(b'"round":', b'"rounds":'),
        lambda d: d.replace(b'"dp_delta":0.00001', b'"dp_delta":1e-05'),
        lambda d: d + b"\n",
        lambda d: d.replace(b'"partner_id":"lab-a"', b'"partner_id":"Lab-A"'),
    ],
)
def test_parse_record_refuses_anything_but_the_canonical_form(make_events: Any, mutation: Any) -> None:
    data = record_for_event(make_events(1)[0]).to_bytes()
    with pytest.raises(RecordError):
        parse_record(mutation(data))


def test_record_validation_names_the_field() -> None:
    with pytest.raises(RecordError, match="event_id"):
        AuditRecord(event_id="nope", event_type="x", partner_id="p1", occurred_at="2025-01-01T00:00:00.000000Z", payload_sha256="0" * 64)
    with pytest.raises(RecordError, match="dp_epsilon"):
        AuditRecord(
            event_id=str(uuid.uuid4()),
            event_type="x",
            partner_id="p1",
            occurred_at="2025-01-01T00:00:00.000000Z",
            payload_sha256="0" * 64,
            dp_epsilon=-1.0,
        )


_records = st.builds(
    AuditRecord,
    event_id=st.uuids().map(str),
    event_type=st.from_regex(r"[a-z][a-z0-9._-]{0,20}", fullmatch=True),
    partner_id=st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}", fullmatch=True),
    occurred_at=st.datetimes(timezones=st.just(UTC)).map(_time_text),
    payload_sha256=st.binary(min_size=32, max_size=32).map(bytes.hex),
    round=st.none() | st.integers(0, 2**53 - 1),
    model_version=st.none() | st.integers(0, 2**53 - 1),
    dp_epsilon=st.none() | st.floats(0, 1e300, allow_nan=False) | st.integers(0, 2**53),
    dp_delta=st.none() | st.floats(0, 1, allow_nan=False),
)


@given(record=_records, position=st.integers(0, 10_000), mask=st.integers(1, 255))
def test_a_record_has_exactly_one_accepted_encoding(record: AuditRecord, position: int, mask: int) -> None:
    data = record.to_bytes()
    assert parse_record(data) == record
    assert is_canonical_json(data)
    position %= len(data)
    flipped = data[:position] + bytes([data[position] ^ mask]) + data[position + 1 :]
    try:
        parsed = parse_record(flipped)
    except RecordError:
        return
    assert parsed.to_bytes() == flipped and parsed != record  # accepted only as another canonical record
