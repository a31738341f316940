"""The validator's vector checks, applied directly (no broker): layout violations, and reasons for bodies that do not parse."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine
from tier1.support import unique_partner_id

from mshale_fl.agents.mishale.validate import MAX_REASONS, ValidateHandler, _grid_code, read_invalid_submission, reasons_from_error
from mshale_fl.agents.partner.featurize import FEATURES, GROUP_BY_KEY, featurize, grid_violations
from mshale_fl.ledger import register_partner
from mshale_fl.schemas.events import EventEnvelope, parse_event
from mshale_fl.schemas.feature_vector import FeatureVector
from mshale_fl.testing.samples import sample_spec

from .submission_support import dpa as dpa_terms
from .submission_support import first_vector, raw_body, vectors_event


@pytest.fixture
def tier2(engine: Engine) -> str:
    return register_partner(engine, unique_partner_id(), tier=2, agreements=[dpa_terms()], broker=None).partner.id


def judge(engine: Engine, event: EventEnvelope[Any]) -> EventEnvelope[Any]:
    with engine.begin() as connection:
        (receipt,) = ValidateHandler().handle(event, connection)
    return receipt


def with_values(seed: int, changes: dict[int, float]) -> FeatureVector:
    values = list(featurize(sample_spec(seed)).values)
    for index, value in changes.items():
        values[index] = value
    return FeatureVector(spec_hash=featurize(sample_spec(seed)).spec_hash, values=values)


def reasons(receipt: EventEnvelope[Any]) -> list[tuple[str, str | None]]:
    assert receipt.type == "submission.rejected", receipt
    return [(reason.code, reason.field) for reason in receipt.payload.reasons]


def test_featurizer_vectors_are_accepted_and_counted(engine: Engine, tier2: str) -> None:
    receipt = judge(engine, vectors_event(tier2, [featurize(sample_spec(seed)) for seed in range(5)]))
    assert receipt.type == "submission.accepted" and (receipt.payload.kind, receipt.payload.items) == ("vectors", 5)


def test_values_no_featurizer_produces_are_refused_by_feature(engine: Engine, tier2: str) -> None:
    step_count = GROUP_BY_KEY["step_count"]
    on = next(i for i in range(step_count.start, step_count.stop) if featurize(sample_spec(3)).values[i] == 1.0)
    fraction = GROUP_BY_KEY["step_content"].start  # a multiple of 1/8
    vectors = [
        featurize(sample_spec(1)),                                  # fine
        with_values(2, {fraction: 1.5}),                            # outside [0, 1]
        with_values(3, {on: 0.0}),                                  # a one-hot group without its one
        with_values(4, {fraction: 0.3}),                            # finer than 1/8
        with_values(5, {fraction: 0.125 + 1e-8}),                   # within grid_violations' tolerance: hides bits
    ]  # fmt: skip
    found = reasons(judge(engine, vectors_event(tier2, vectors)))
    assert found == [
        ("vector.out_of_range", f"vectors[1].values[{fraction}]"),
        ("vector.one_hot", "vectors[2].values"),
        ("vector.off_grid", f"vectors[3].values[{fraction}]"),
        ("vector.off_grid", f"vectors[4].values[{fraction}]"),
    ]


def test_every_kind_of_grid_violation_has_its_own_code() -> None:
    values = list(featurize(sample_spec(1)).values)
    one_hot = GROUP_BY_KEY["domain"]
    cases = {
        "vector.length": values[:3],
        "vector.value_type": ["x", *values[1:]],
        "vector.non_finite": [math.nan, *values[1:]],
        "vector.out_of_range": [*values[:7], 2.0, *values[8:]],
        "vector.off_grid": [*values[:7], 0.3, *values[8:]],
        "vector.one_hot": [*values[: one_hot.start], *([1.0] * (one_hot.stop - one_hot.start)), *values[one_hot.stop :]],
    }
    for code, bad in cases.items():
        violations = grid_violations(bad)
        assert violations and {_grid_code(violation) for violation in violations} == {code}, (code, violations)


def test_a_batch_of_bad_vectors_gets_at_most_100_reasons(engine: Engine, tier2: str) -> None:
    bad = [with_values(seed, {FEATURES[i].index: 0.3 for i in range(7, 40)}) for seed in range(60)]
    found = judge(engine, vectors_event(tier2, bad)).payload.reasons
    assert len(found) == MAX_REASONS and found[-1].code == "reasons.truncated"
    assert sum(reason.field == "vectors[0].values" for reason in found) == 1  # "N more values of this vector"


def refused(body: bytes) -> ValidationError:
    with pytest.raises(ValidationError) as error:
        parse_event(body)
    return error.value


BAD_VECTORS = {
    "vector.length": lambda data: first_vector(data).update(values=first_vector(data)["values"][:100]),
    "vector.non_finite": lambda data: first_vector(data)["values"].__setitem__(9, math.nan),
    "vector.out_of_range": lambda data: first_vector(data)["values"].__setitem__(9, 1e39),  # beyond float32
    "vector.value_type": lambda data: first_vector(data)["values"].__setitem__(9, "0.5"),
    "vector.schema_version": lambda data: first_vector(data).update(feature_schema_version=2),
    "vector.spec_hash": lambda data: first_vector(data).update(spec_hash="not-a-hash"),
    "vector.unknown_field": lambda data: first_vector(data).update(note="Kestrelwood buffer"),
    "vectors.empty": lambda data: data["payload"].update(vectors=[]),
    "vectors.batch_size": lambda data: data["payload"].update(vectors=data["payload"]["vectors"] * 1001),
    "event.schema_version": lambda data: data.update(schema_version=2),
    "sensitivity.unknown": lambda data: data["payload"].update(sensitivity="secret-ish"),
}
FIELDS = {
    "vector.length": "vectors[0].values", "vector.non_finite": "vectors[0].values[9]",
    "vector.out_of_range": "vectors[0].values", "vector.value_type": "vectors[0].values[9]",
    "vector.schema_version": "vectors[0].feature_schema_version", "vector.spec_hash": "vectors[0].spec_hash",
    "vector.unknown_field": "vectors[0].note", "vectors.empty": "vectors", "vectors.batch_size": "vectors",
    "event.schema_version": "schema_version", "sensitivity.unknown": "sensitivity",
}  # fmt: skip


@pytest.mark.parametrize("code", sorted(BAD_VECTORS))
def test_a_body_that_fails_strict_parsing_is_explained_by_code_and_field(code: str) -> None:
    event = vectors_event("lab-a", [featurize(sample_spec(1))])
    body = raw_body(event, BAD_VECTORS[code])
    found = reasons_from_error(refused(body))
    assert [(reason.code, reason.field) for reason in found] == [(code, FIELDS[code])]
    assert all(reason.message for reason in found)
    submission = read_invalid_submission(body, "lab-a.vectors.submitted", refused(body))
    assert submission is not None
    assert (submission.event_id, submission.kind, submission.claimed_partner_id) == (event.event_id, "vectors", "lab-a")


def test_bodies_that_cannot_be_answered_are_recognised() -> None:
    error = refused(b"{not json")
    assert read_invalid_submission(b"{not json", "lab-a.vectors.submitted", error) is None
    assert read_invalid_submission(b'{"event_id": "nope"}', "lab-a.vectors.submitted", error) is None
    assert read_invalid_submission(b'[1, 2]', "lab-a.vectors.submitted", error) is None
    # A body whose type is garbled is answered as the kind its routing key names.
    event = vectors_event("lab-a", [featurize(sample_spec(1))])
    body = raw_body(event, lambda data: data.update(type="vectors.submited"))
    submission = read_invalid_submission(body, "lab-a.vectors.submitted", refused(body))
    assert submission is not None and submission.kind == "vectors"
    assert [reason.code for reason in submission.reasons] == ["event.type_unknown"]

