"""Every event schema under fuzzing: valid events round-trip; hostile bodies get a ValidationError, nothing else.

`parse_event` is the one door into every worker. Its contract: a `ValidationError` naming the
problem (or a `ValueError` for a body over the size limit, refused before parsing), never another
exception, never a RecursionError, and never an event that smuggles content the contract does not
define (it would come back out when the event is re-serialised).
"""

from __future__ import annotations

import json
from functools import cache

import jsonschema
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from mshale_fl.schemas import EVENT_MODELS, EVENT_TYPES, parse_event
from mshale_fl.schemas.events import MAX_EVENT_BYTES
from mshale_fl.schemas.export import json_schemas
from mshale_fl.testing.samples import sample_event

from .budget import budget
from .strategies import MARKER, Mutation, events, get_node, json_nodes, mutations, set_node, specs, vectors


def refusal(body: bytes | str) -> ValueError:
    """The error parse_event raises for `body`; fails the test if it parses or raises anything else."""
    try:
        event = parse_event(body)
    except ValidationError as error:
        assert error.error_count() >= 1
        return error
    except ValueError as error:
        # Only the size check raises a plain ValueError, before any parsing.
        assert len(body) > MAX_EVENT_BYTES, f"a plain ValueError for a body under the limit: {error}"
        assert "limit" in str(error)
        return error
    pytest.fail(f"parsed into {type(event).__name__}: {event!r:.300}")


@cache
def published_contract() -> jsonschema.protocols.Validator:
    """The exported JSON Schema of the event union: what a partner validates with before sending."""
    schema = json_schemas()["event.schema.json"]
    return jsonschema.Draft202012Validator(schema)


@given(events())
@budget(60)
def test_every_valid_event_round_trips_through_json(event) -> None:
    parsed = parse_event(event.model_dump_json())
    assert type(parsed) is EVENT_MODELS[event.type]
    assert parsed == event
    assert parse_event(parsed.model_dump_json().encode()) == event
    published_contract().validate(event.model_dump(mode="json"))


@pytest.mark.parametrize("type_name", EVENT_TYPES)
@given(data=st.data())
@budget(6)
def test_every_event_type_has_a_strategy_that_round_trips(type_name: str, data: st.DataObject) -> None:
    event = data.draw(events(st.just(type_name)))
    assert parse_event(event.model_dump_json()) == event


@given(mutations())
@budget(120)
def test_a_mutated_event_is_refused_with_a_validation_error_or_is_still_a_valid_event(mutation: Mutation) -> None:
    try:
        event = parse_event(mutation.body)
    except ValidationError:
        return
    except ValueError as error:
        assert len(mutation.body) > MAX_EVENT_BYTES, error
        return
    assert not mutation.must_fail, f"{mutation.name}: the contract should have refused it"
    # Whatever parsed is a complete, valid event that carries nothing the contract does not define,
    # and the published JSON Schema accepts it too: Mishale never takes what the contract forbids.
    text = event.model_dump_json()
    assert parse_event(text) == event
    assert MARKER not in text and MARKER.lower() not in text
    published_contract().validate(json.loads(mutation.body))


@given(mutations().filter(lambda mutation: mutation.must_fail))
@budget(60)
def test_mutations_the_contract_cannot_accept_are_refused(mutation: Mutation) -> None:
    refusal(mutation.body)


@pytest.mark.parametrize(
    ("field", "value"), [("schema_version", True), ("schema_version", 1.0), ("tier", True), ("spec_schema_version", 1.0)]
)
def test_version_numbers_must_be_integers(field: str, value: object) -> None:
    """Found by the fuzzer: pydantic matched `true` (and `1.0`) to `Literal[1]`, which the published schema
    refuses (`true`) and every other integer field of the strict models refuses (`1.0`)."""
    data = sample_event("spec.submitted").model_dump(mode="json")
    target = {"schema_version": data, "tier": data["payload"], "spec_schema_version": data["payload"]["spec"]}[field]
    target[field] = value
    if value is True:
        with pytest.raises(jsonschema.ValidationError):
            published_contract().validate(data)
    error = refusal(json.dumps(data))
    assert "must be an integer" in str(error)


@given(document=st.one_of(specs, vectors), data=st.data())
@budget(80)
def test_free_text_in_any_position_of_a_spec_or_vector_file_is_refused(document, data: st.DataObject) -> None:
    """What `extract` writes and `submit` reads back: no field of a spec or a vector takes prose."""
    model = type(document)
    tree = document.model_dump(mode="json")
    leaves = [path for path, value in json_nodes(tree) if not isinstance(value, dict | list)]
    dicts = [()] + [path for path, value in json_nodes(tree) if isinstance(value, dict)]
    if data.draw(st.booleans()):
        set_node(tree, data.draw(st.sampled_from(leaves)), f"{MARKER} miniprep, 250 µl of the house buffer")
    else:
        get_node(tree, data.draw(st.sampled_from(dicts)))[data.draw(st.sampled_from(["title", "note", MARKER]))] = MARKER
    with pytest.raises(ValidationError):
        model.model_validate_json(json.dumps(tree))


@given(st.binary(max_size=2_048))
@example(b"\xff\xfe{\x00}")
@example(b"\xef\xbb\xbf{}")  # a UTF-8 byte-order mark
@example(json.dumps(sample_event("budget.low").model_dump(mode="json")).encode("utf-16"))
@budget(100)
def test_random_bytes_are_refused(body: bytes) -> None:
    refusal(body)


@given(st.text(max_size=2_000))
@budget(80)
def test_random_text_is_refused(body: str) -> None:
    refusal(body)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children,
                                                                                       max_size=4),
                    max_leaves=40))  # fmt: skip
@budget(80)
def test_arbitrary_json_documents_are_refused(document: object) -> None:
    refusal(json.dumps(document))


@pytest.mark.parametrize("depth", [1_000, 100_000, 1_000_000])
def test_deep_nesting_is_refused_without_exhausting_the_stack(depth: int) -> None:
    for body in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        error = refusal(body)
        assert "recursion" in str(error).lower()


def test_a_body_over_the_size_limit_is_refused_before_parsing() -> None:
    error = refusal(b"[" * (MAX_EVENT_BYTES + 1))
    assert not isinstance(error, ValidationError)
    assert str(MAX_EVENT_BYTES) in str(error)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400])
def test_non_finite_and_oversized_numbers_are_refused_in_feature_vectors(literal: str) -> None:
    text = sample_event("vectors.submitted").model_dump_json()
    first_value = text.index('"values":[') + len('"values":[')
    refusal(text[:first_value] + literal + text[text.index(",", first_value) :])


@pytest.mark.parametrize("length", [0, 1, 222, 224, 10_000])
def test_feature_vectors_of_the_wrong_length_are_refused(length: int) -> None:
    data = sample_event("vectors.submitted").model_dump(mode="json")
    data["payload"]["vectors"][0]["values"] = [0.5] * length
    refusal(json.dumps(data))
