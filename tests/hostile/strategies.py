"""Hypothesis strategies: a valid event of every type, and hostile mutations of its JSON.

Valid events are drawn over the whole contract (every field, its full range, any Unicode where
the contract allows free text), so `parse(serialize(e)) == e` is tested beyond the samples.
A mutation takes the JSON of a valid event and breaks one thing; `Mutation.must_fail` says whether
the contract leaves no way for the result to be valid (else the test asks only for "parses to a
round-trippable event, or is refused with a ValidationError").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from hypothesis import strategies as st

from mshale_fl.schemas import payloads as p
from mshale_fl.schemas.common import MAX_LIST
from mshale_fl.schemas.events import EVENT_MODELS, EVENT_TYPES, EventEnvelope
from mshale_fl.schemas.feature_vector import FEATURE_DIM, FeatureVector
from mshale_fl.schemas.protocol_spec import ProtocolSpec, Quantity, Step
from mshale_fl.schemas.vocabulary import (
    UNIT_OF_KIND,
    Domain,
    EquipmentClass,
    LabwareClass,
    Operation,
    Organism,
    QuantityKind,
    ReagentClass,
    Sensitivity,
)

MARKER = "Zanthoxylum"
"""A word no part of the contract uses: hostile content carries it, and it must show up nowhere."""

# -- building blocks -----------------------------------------------------------------------------

hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
partner_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{1,62}", fullmatch=True)
short_codes = st.from_regex(r"[a-z][a-z0-9_.-]{0,63}", fullmatch=True)
run_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,63}", fullmatch=True)
metric_names = st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)
# Any Unicode the contract allows in Mishale-written prose: RTL marks, zero-width joiners, combining
# marks and NUL included (hypothesis draws every code point but surrogates, which JSON cannot carry).
prose = st.text(max_size=500)
finite = st.floats(allow_nan=False, allow_infinity=False)
float32s = st.one_of(
    st.sampled_from([0.0, 1.0, 0.125, 0.25, 0.5]),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)
model_versions = st.integers(0, 1_000_000)
rounds = st.integers(1, 1_000_000)
epsilons = st.floats(0.0, 1_000.0)
deltas = st.floats(0.0, 1.0, exclude_max=True)
cohorts = st.lists(partner_ids, max_size=4)
metrics = st.dictionaries(metric_names, finite, max_size=4)


@st.composite
def quantities(draw: st.DrawFn) -> Quantity:
    kind = draw(st.sampled_from(QuantityKind))
    low, high = sorted((draw(finite), draw(finite)))
    shape = draw(st.sampled_from(("value", "range", "min", "max", "all")))
    fields: dict[str, float] = {}
    if shape in ("value", "all"):
        fields["value"] = draw(finite)
    if shape in ("range", "min", "all"):
        fields["min"] = low
    if shape in ("range", "max", "all"):
        fields["max"] = high
    return Quantity(kind=kind, unit=UNIT_OF_KIND[kind], approx=draw(st.booleans()), **fields)


def _classes(vocabulary: Any) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.sampled_from(vocabulary), unique=True, max_size=3)


steps = st.builds(
    Step,
    operation=st.sampled_from(Operation),
    quantities=st.lists(quantities(), max_size=3),
    equipment=_classes(EquipmentClass),
    labware=_classes(LabwareClass),
    reagents=_classes(ReagentClass),
)
specs = st.builds(
    ProtocolSpec,
    content_hash=hex64,
    domain=st.sampled_from(Domain),
    organism=st.sampled_from(Organism),
    steps=st.lists(steps, min_size=1, max_size=4),
)
vectors = st.builds(FeatureVector, spec_hash=hex64, values=st.lists(float32s, min_size=FEATURE_DIM, max_size=FEATURE_DIM))
reasons = st.lists(
    st.builds(p.Reason, code=short_codes, field=st.none() | st.text(max_size=200), message=prose), min_size=1, max_size=3
)

PAYLOADS: dict[str, st.SearchStrategy[Any]] = {
    "spec.submitted": st.builds(p.SpecSubmitted, sensitivity=st.sampled_from(Sensitivity), spec=specs),
    "vectors.submitted": st.builds(
        p.VectorsSubmitted, sensitivity=st.sampled_from(Sensitivity), vectors=st.lists(vectors, min_size=1, max_size=2)
    ),
    "submission.accepted": st.builds(
        p.SubmissionAccepted, submission_id=st.uuids(), kind=st.sampled_from(["spec", "vectors"]),
        items=st.integers(1, 10_000),
    ),  # fmt: skip
    "submission.rejected": st.builds(
        p.SubmissionRejected, submission_id=st.uuids(), kind=st.sampled_from(["spec", "vectors", "unknown"]), reasons=reasons
    ),
    "round.started": st.builds(p.RoundStarted, run_id=run_ids, round=rounds, model_version=model_versions, cohort=cohorts),
    "update.masked": st.builds(
        p.UpdateMasked, run_id=run_ids, round=rounds, model_version=model_versions, digest=hex64,
        epsilon_spent=epsilons, delta=deltas,
    ),  # fmt: skip
    "round.completed": st.builds(
        p.RoundCompleted, run_id=run_ids, round=rounds, model_version=model_versions, participants=cohorts,
        failed=st.booleans(), metrics=metrics,
    ),  # fmt: skip
    "budget.low": st.builds(
        p.BudgetLow, model_version=model_versions, epsilon_total=epsilons, epsilon_spent=epsilons,
        epsilon_remaining=epsilons, fraction_remaining=st.floats(0.0, 1.0),
    ),  # fmt: skip
    "partner.paused": st.builds(p.PartnerPaused, model_version=model_versions, reason=short_codes),
    "model.published": st.builds(
        p.ModelPublished, model_version=model_versions, parent_version=st.none() | model_versions, sha256=hex64,
        rounds=st.integers(0, 1_000_000), metrics=metrics,
    ),  # fmt: skip
    "audit.checkpoint": st.builds(
        p.AuditCheckpoint, origin=st.from_regex(r"[\x21-\x7e]{1,200}", fullmatch=True),
        tree_size=st.integers(min_value=0), root_hash=hex64, note=st.text(max_size=4_096),
    ),  # fmt: skip
    "prediction.requested": st.builds(
        p.PredictionRequested, specs=st.lists(specs, max_size=2), vectors=st.lists(vectors, max_size=1)
    ),
    "prediction.ready": st.builds(
        p.PredictionReady, request_id=st.uuids(), model_version=model_versions,
        predictions=st.lists(st.builds(p.Prediction, item_hash=hex64, efficiency=finite), max_size=3),
    ),  # fmt: skip
    "access.denied": st.builds(p.AccessDenied, request_id=st.uuids(), action=short_codes, reasons=reasons, remedy=prose),
    "access.granted": st.builds(
        p.AccessGranted, request_id=st.uuids(), action=short_codes, model_version=model_versions, sha256=hex64
    ),
}
assert set(PAYLOADS) == set(EVENT_TYPES), "a new event type needs a strategy here"


@st.composite
def events(draw: st.DrawFn, types: st.SearchStrategy[str] = st.sampled_from(EVENT_TYPES)) -> EventEnvelope[Any]:
    """A valid event of any type (or of the types drawn from `types`)."""
    type_name = draw(types)
    return EVENT_MODELS[type_name](
        event_id=draw(st.uuids()),
        type=type_name,
        partner_id=draw(partner_ids),
        occurred_at=draw(st.datetimes(timezones=st.just(UTC))),
        correlation_id=draw(st.uuids()),
        causation_id=draw(st.none() | st.uuids()),
        payload=draw(PAYLOADS[type_name]),
    )


# -- mutations -----------------------------------------------------------------------------------

FREE_TEXT_FIELDS = frozenset({"message", "remedy", "note", "field"})
"""String fields bounded only by length (Mishale-written prose): odd Unicode is valid there."""
ODD_UNICODE = [
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\ufeff",  # byte-order mark / zero-width no-break space
    "e\u0301\u0301\u0301",  # stacked combining accents
    "\x00",  # NUL
    "\u0627\u0644\u0639",  # Arabic letters
    "\U0001f9ec",  # an astral-plane emoji
    "\ufdd0",  # a non-character
]
REQUIRED_ENVELOPE_FIELDS = frozenset(
    (name,) for name, field in EventEnvelope.model_fields.items() if field.is_required()
) | {("type",)}
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]
_RAW = "\x01raw\x01"  # replaced in the serialised text by a literal JSON cannot express with json.dumps


@dataclass(frozen=True)
class Mutation:
    name: str
    body: bytes
    must_fail: bool

    def __repr__(self) -> str:  # hypothesis prints it on failure: keep it readable
        return f"Mutation({self.name}, must_fail={self.must_fail}, body={self.body[:300]!r}...)"


Path = tuple[str | int, ...]


def json_nodes(node: Any, path: Path = ()) -> list[tuple[Path, Any]]:
    """(path, value) of every node below the root, depth first."""
    found: list[tuple[Path, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append(((*path, key), value))
            found += json_nodes(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.append(((*path, index), value))
            found += json_nodes(value, (*path, index))
    return found


def set_node(data: Any, path: Path, value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def get_node(data: Any, path: Path) -> Any:
    for part in path:
        data = data[part]
    return data


def _encode(data: Any, raw: str | None = None) -> bytes:
    text = json.dumps(data, ensure_ascii=False)
    if raw is not None:
        text = text.replace(json.dumps(_RAW), raw, 1)
    return text.encode("utf-8", errors="surrogatepass")


def _in_metrics(path: Path) -> bool:
    return "metrics" in path


def _last_key(path: Path) -> str | int:
    return next((part for part in reversed(path) if isinstance(part, str)), "")


@st.composite
def mutations(draw: st.DrawFn, event_strategy: st.SearchStrategy[EventEnvelope[Any]] | None = None) -> Mutation:
    """One hostile variant of a valid event's JSON (see the module docstring)."""
    event = draw(events() if event_strategy is None else event_strategy)
    data = event.model_dump(mode="json")
    nodes = json_nodes(data)
    scalars = [(path, value) for path, value in nodes if not isinstance(value, dict | list)]
    strings = [(path, value) for path, value in scalars if isinstance(value, str)]
    numbers = [(path, value) for path, value in scalars if isinstance(value, int | float) and not isinstance(value, bool)]
    dicts = [()] + [path for path, value in nodes if isinstance(value, dict)]
    kind = draw(st.sampled_from([
        "drop_field", "extra_field", "retype", "non_finite", "huge_string", "huge_number", "odd_unicode",
        "invalid_utf8", "non_utc_time", "naive_time", "unknown_type", "schema_version", "deep_nesting",
        "truncated", "not_an_object", "duplicate_key", "huge_list",
    ]))  # fmt: skip

    if kind == "drop_field":
        keyed = [path for path, _ in nodes if isinstance(path[-1], str)]
        path = draw(st.sampled_from(keyed))
        del get_node(data, path[:-1])[path[-1]]
        # Fields with defaults (causation_id, metrics, failed, tier, ...) may go; required ones may not.
        return Mutation(f"drop {path}", _encode(data), must_fail=path in REQUIRED_ENVELOPE_FIELDS)
    if kind == "extra_field":
        path = draw(st.sampled_from(dicts))
        key = draw(st.sampled_from([MARKER, MARKER.lower(), "title", "notes", "text"]))
        get_node(data, path)[key] = draw(st.sampled_from([f"{MARKER} miniprep", 1, None, [], {}]))
        # A metrics dict takes any well-formed name with a number; everything else forbids extras.
        return Mutation(f"extra {key!r} at {path}", _encode(data), must_fail=not (path and path[-1] == "metrics"))
    if kind == "retype" and scalars:
        path, _ = draw(st.sampled_from(scalars))
        set_node(data, path, draw(st.sampled_from([{}, [], {"a": MARKER}, [MARKER]])))
        return Mutation(f"retype {path}", _encode(data), must_fail=True)
    if kind == "non_finite" and numbers:
        path, _ = draw(st.sampled_from(numbers))
        literal = draw(st.sampled_from(NON_FINITE))
        set_node(data, path, _RAW)
        return Mutation(f"{literal} at {path}", _encode(data, literal), must_fail=True)
    if kind == "huge_string" and strings:
        path, _ = draw(st.sampled_from(strings))
        set_node(data, path, MARKER * draw(st.integers(400, 2_000)))
        # Longer than any string of the contract (the longest, a checkpoint note, is 4096).
        return Mutation(f"huge string at {path}", _encode(data), must_fail=True)
    if kind == "huge_number" and numbers:
        path, _ = draw(st.sampled_from(numbers))
        literal = draw(st.sampled_from(["1" + "0" * 400, "-" + "9" * 400, "1e308", "-1e308", "1.7976931348623157e309"]))
        set_node(data, path, _RAW)
        # An unbounded integer (a checkpoint's tree size) may take a huge value; everything else is bounded.
        return Mutation(f"{literal[:12]}... at {path}", _encode(data, literal), must_fail=False)
    if kind == "odd_unicode" and strings:
        path, value = draw(st.sampled_from(strings))
        odd = draw(st.sampled_from(ODD_UNICODE))
        at = draw(st.integers(0, len(value)))
        set_node(data, path, value[:at] + odd + value[at:])
        return Mutation(f"{odd!r} in {path}", _encode(data), must_fail=_last_key(path) not in FREE_TEXT_FIELDS)
    if kind == "invalid_utf8" and strings:
        path, value = draw(st.sampled_from(strings))
        set_node(data, path, _RAW)
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]))
        body = _encode(data).replace(json.dumps(_RAW).encode(), b'"' + value[:8].encode() + bad + b'"', 1)
        return Mutation(f"invalid UTF-8 {bad!r} in {path}", body, must_fail=True)
    if kind == "non_utc_time":
        offset = draw(st.sampled_from(["+02:00", "-05:30", "+00:01", "+14:00"]))
        data["occurred_at"] = data["occurred_at"].replace("Z", offset)
        return Mutation(f"occurred_at {offset}", _encode(data), must_fail=True)
    if kind == "naive_time":
        data["occurred_at"] = data["occurred_at"].replace("Z", "")
        return Mutation("naive occurred_at", _encode(data), must_fail=True)
    if kind == "unknown_type":
        data["type"] = draw(st.text(max_size=40).filter(lambda text: text not in EVENT_TYPES))
        return Mutation(f"type {data['type']!r}", _encode(data), must_fail=True)
    if kind == "schema_version":
        data["schema_version"] = draw(st.sampled_from([0, 2, -1, "1", 1.5, None, True, 10**30]))
        return Mutation(f"schema_version {data['schema_version']!r}", _encode(data), must_fail=True)
    if kind == "deep_nesting":
        path, _ = draw(st.sampled_from(scalars or [(("payload",), None)]))
        depth = draw(st.integers(50, 5_000))  # deeper in test_deep_nesting_is_refused_...
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        set_node(data, path, _RAW)
        return Mutation(f"nested {depth} deep at {path}", _encode(data, opener * depth + "1" + closer * depth), must_fail=True)
    if kind == "truncated":
        body = _encode(data)
        return Mutation("truncated", body[: draw(st.integers(0, len(body) - 1))], must_fail=True)
    if kind == "not_an_object":
        body = draw(st.sampled_from([b"[]", b"null", b"1", b'"event"', b"true", b"", b" ", b"\x00"]))
        return Mutation(f"not an object: {body!r}", body, must_fail=True)
    if kind == "duplicate_key":
        # Two values for one key: whichever the parser keeps, the event must be valid or refused.
        key = draw(st.sampled_from(["type", "partner_id", "event_id", "payload"]))
        text = _encode(data).decode("utf-8")
        body = ("{" + json.dumps(key) + ": " + json.dumps(MARKER) + ", " + text[1:]).encode()
        return Mutation(f"duplicate {key}", body, must_fail=False)
    # huge_list (also the fallback when the event has no node of the kind drawn)
    lists = [path for path, value in nodes if isinstance(value, list)]
    if lists:
        path = draw(st.sampled_from(lists))
        items = get_node(data, path)
        filler = items[0] if items else MARKER
        length = draw(st.sampled_from([101, 501, 1_001, 2_001, 10_001]))
        set_node(data, path, [filler] * length)
        # The longest list the contract allows is a cohort of MAX_LIST partners.
        return Mutation(f"{length} items at {path}", _encode(data), must_fail=length > MAX_LIST)
    data["payload"] = [data["payload"]] * 3
    return Mutation("payload as a list", _encode(data), must_fail=True)

