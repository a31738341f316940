"""The event contract: strict parsing, bounds, and exact round trips of every type."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import ValidationError

from mshale_fl.schemas import EVENT_MODELS, EVENT_TYPES, parse_event
from mshale_fl.schemas.events import new_event
from mshale_fl.testing.samples import sample_event, sample_payload


def _mutated(event, **changes) -> str:
    data = event.model_dump(mode="json")
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize("type_name", EVENT_TYPES)
def test_every_event_type_round_trips_through_json(type_name: str) -> None:
    event = sample_event(type_name)
    parsed = parse_event(event.model_dump_json())
    assert type(parsed) is EVENT_MODELS[type_name]
    assert parsed == event
    assert parsed.routing_key == f"lab-a.{type_name}"


def test_the_design_names_fourteen_event_types_and_access_granted() -> None:
    assert set(EVENT_TYPES) == {
        "spec.submitted", "vectors.submitted", "submission.accepted", "submission.rejected",
        "round.started", "update.masked", "round.completed", "budget.low", "partner.paused",
        "model.published", "audit.checkpoint", "prediction.requested", "prediction.ready", "access.denied",
        "access.granted",  # issue 9: a model download is a grant that no other event records
    }  # fmt: skip


def test_unknown_envelope_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        parse_event(_mutated(sample_event("budget.low"), note="free text"))


def test_unknown_payload_field_is_rejected() -> None:
    event = sample_event("spec.submitted")
    data = event.model_dump(mode="json")
    data["payload"]["spec"]["title"] = "Secret miniprep protocol"
    with pytest.raises(ValidationError, match="title"):
        parse_event(json.dumps(data))


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        parse_event(_mutated(sample_event("budget.low"), type="budget.gone"))


def test_unknown_schema_version_is_rejected() -> None:
    with pytest.raises(ValidationError, match="schema_version"):
        parse_event(_mutated(sample_event("budget.low"), schema_version=2))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_rejected(literal: str) -> None:
    text = sample_event("update.masked").model_dump_json().replace('"epsilon_spent":0.05', f'"epsilon_spent":{literal}')
    assert literal in text
    with pytest.raises(ValidationError):
        parse_event(text)


def test_non_finite_metric_is_rejected() -> None:
    text = sample_event("round.completed").model_dump_json().replace('"loss":0.25', '"loss":NaN')
    with pytest.raises(ValidationError, match="finite"):
        parse_event(text)


def test_timestamps_must_be_utc() -> None:
    with pytest.raises(ValidationError, match="UTC"):
        parse_event(_mutated(sample_event("budget.low"), occurred_at="2026-01-01T10:00:00+02:00"))
    with pytest.raises(ValidationError):
        parse_event(_mutated(sample_event("budget.low"), occurred_at="2026-01-01T10:00:00"))


@pytest.mark.parametrize(
    "partner_id", ["", "A", "Lab-A", "lab a", "lab.a", "x" * 64, "-lab", "lab-a#"]
)
def test_partner_ids_are_routing_key_safe(partner_id: str) -> None:
    with pytest.raises(ValidationError, match="partner_id"):
        parse_event(_mutated(sample_event("budget.low"), partner_id=partner_id))


def test_numbers_given_as_strings_are_not_coerced() -> None:
    event = sample_event("update.masked")
    data = event.model_dump(mode="json")
    data["payload"]["epsilon_spent"] = "0.05"
    with pytest.raises(ValidationError):
        parse_event(json.dumps(data))


def test_lists_are_bounded() -> None:
    event = sample_event("spec.submitted")
    data = event.model_dump(mode="json")
    data["payload"]["spec"]["steps"] = data["payload"]["spec"]["steps"] * 200
    with pytest.raises(ValidationError, match="at most 500"):
        parse_event(json.dumps(data))
    metrics = {f"m{i}": 1.0 for i in range(65)}
    data = sample_event("round.completed").model_dump(mode="json")
    data["payload"]["metrics"] = metrics
    with pytest.raises(ValidationError, match="at most 64"):
        parse_event(json.dumps(data))


def test_strings_are_bounded() -> None:
    data = sample_event("access.denied").model_dump(mode="json")
    data["payload"]["remedy"] = "x" * 501
    with pytest.raises(ValidationError, match="at most 500"):
        parse_event(json.dumps(data))


def test_feature_vectors_must_have_exactly_223_values() -> None:
    data = sample_event("vectors.submitted").model_dump(mode="json")
    for wrong in (222, 224):
        data["payload"]["vectors"][0]["values"] = [0.0] * wrong
        with pytest.raises(ValidationError, match="223"):
            parse_event(json.dumps(data))


def test_feature_values_must_fit_float32() -> None:
    data = sample_event("vectors.submitted").model_dump(mode="json")
    data["payload"]["vectors"][0]["values"][5] = 1e39
    with pytest.raises(ValidationError, match=r"values\[5\] does not fit in float32"):
        parse_event(json.dumps(data))


def test_oversized_message_is_refused_before_parsing() -> None:
    with pytest.raises(ValueError, match="limit"):
        parse_event(b" " * (16 * 1024 * 1024 + 1))


def test_caused_event_inherits_correlation() -> None:
    cause = sample_event("spec.submitted")
    effect = new_event("submission.accepted", sample_payload("submission.accepted"), partner_id="lab-a", causation=cause)
    assert effect.correlation_id == cause.correlation_id
    assert effect.causation_id == cause.event_id
    assert effect.event_id != cause.event_id


def test_new_event_names_the_known_types_when_given_an_unknown_one() -> None:
    with pytest.raises(ValueError, match="spec.submitted"):
        new_event("spec.sent", sample_payload("spec.submitted"), partner_id="lab-a")


def test_event_ids_must_be_uuids() -> None:
    with pytest.raises(ValidationError, match="event_id"):
        parse_event(_mutated(sample_event("budget.low"), event_id="not-a-uuid"))
    assert parse_event(_mutated(sample_event("budget.low"), event_id=str(uuid.uuid4())))
