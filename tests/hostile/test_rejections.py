"""The validator's answer to a submission that does not parse: precise reasons, none of the sender's text.

The `submission.rejected` receipt for an unparseable body is kept in the ledger's inbox and sent
on the bus (so the stream and the audit trail see it). It names the path and the rule broken, but
never quotes what the sender wrote there: an unknown key is `<unknown>`, a wrong version is only
its type, a claimed partner id that is not a partner id is not repeated. Fuzzed with the marker
word planted in keys, values, versions, the claimed partner id and the event type.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mshale_fl.agents.mishale.validate import UNKNOWN_NAME, ValidateProcessor, read_invalid_submission, reasons_from_error
from mshale_fl.broker import Delivery
from mshale_fl.ledger import open_ledger, register_partner
from mshale_fl.schemas.events import parse_event
from mshale_fl.testing.samples import sample_event

from .budget import budget
from .strategies import MARKER, Mutation, events, mutations

PARTNER = "lab-000000000001"
SUBMISSIONS = st.sampled_from(["spec.submitted", "vectors.submitted"])


def planted(change: Any, type_name: str = "spec.submitted") -> bytes:
    data = sample_event(type_name, partner_id=PARTNER).model_dump(mode="json")
    change(data)
    return json.dumps(data).encode()


PLANTED = [
    planted(lambda d: d.update(schema_version=f"{MARKER} 2")),
    planted(lambda d: d.update(schema_version={"v": MARKER})),
    planted(lambda d: d.update(partner_id=f"{MARKER}-lab")),
    planted(lambda d: d.update(type=f"spec.{MARKER}")),
    planted(lambda d: d["payload"].update({MARKER: 1})),
    planted(lambda d: d["payload"]["spec"].update(title=f"{MARKER} miniprep")),
    planted(lambda d: d["payload"]["spec"]["steps"][0].update({f"{MARKER} buffer": "secret"})),
    planted(lambda d: d["payload"].update(sensitivity=MARKER)),
    planted(lambda d: d["payload"]["spec"].update(content_hash=MARKER)),
    planted(lambda d: d["payload"]["spec"]["steps"][0].update(operation=MARKER)),
    planted(lambda d: d["payload"]["vectors"][0].update(feature_schema_version=MARKER), "vectors.submitted"),
    planted(lambda d: d["payload"]["vectors"][0]["values"].__setitem__(3, MARKER), "vectors.submitted"),
]


@pytest.fixture(scope="module")
def processor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ValidateProcessor, Path]]:
    """A validator on a ledger that knows the sender (one for the module: hypothesis examples share it)."""
    path = tmp_path_factory.mktemp("ledger") / "ledger.sqlite3"
    engine = open_ledger(f"sqlite:///{path}")
    register_partner(engine, PARTNER, tier=1, broker=None)
    processor = ValidateProcessor(engine)
    yield processor, path
    processor.close()
    engine.dispose()


def answer(processor: ValidateProcessor, body: bytes, type_name: str) -> list[Any]:
    try:
        parse_event(body)
    except ValueError as error:
        delivery = Delivery(queue="mshale.validate", routing_key=f"{PARTNER}.{type_name}", user_id=PARTNER,
                            redelivered=False, delivery_count=0)  # fmt: skip
        return list(asyncio.run(processor.reject_invalid(body, delivery, error)))
    return []  # parses: the handler judges it, not this hook


@given(mutations(events(SUBMISSIONS)))
@budget(80)
def test_reasons_for_a_mutated_submission_never_quote_it(mutation: Mutation) -> None:
    try:
        parse_event(mutation.body)
        return
    except ValueError as error:
        refusal = error
    reasons = reasons_from_error(refusal)
    assert reasons, "a refusal has at least one reason"
    for reason in reasons:
        text = f"{reason.field or ''} {reason.message}".lower()
        assert MARKER.lower() not in text, reason
    read_invalid_submission(mutation.body, f"{PARTNER}.spec.submitted", refusal)  # never raises


@pytest.mark.parametrize("body", PLANTED, ids=range(len(PLANTED)))
def test_the_receipt_for_a_planted_body_names_the_problem_without_the_text(
    processor: tuple[ValidateProcessor, Path], body: bytes
) -> None:
    validator, ledger_file = processor
    type_name = json.loads(body)["type"] if json.loads(body)["type"].endswith("submitted") else "spec.submitted"
    (receipt,) = answer(validator, body, type_name)
    assert receipt.type == "submission.rejected" and receipt.partner_id == PARTNER
    text = receipt.model_dump_json()
    assert MARKER.lower() not in text.lower(), text
    assert all(reason.code and reason.message for reason in receipt.payload.reasons)
    assert MARKER.lower().encode() not in ledger_file.read_bytes().lower(), "nor is it kept in the inbox"


def test_unknown_keys_are_located_but_not_named(processor: tuple[ValidateProcessor, Path]) -> None:
    body = planted(lambda d: d["payload"]["spec"]["steps"][0].update({f"{MARKER} buffer": "secret"}))
    (receipt,) = answer(processor[0], body, "spec.submitted")
    assert [(r.code, r.field) for r in receipt.payload.reasons] == [("spec.unknown_field", f"spec.steps[0].{UNKNOWN_NAME}")]


def test_a_claimed_partner_id_is_repeated_only_when_it_is_one(processor: tuple[ValidateProcessor, Path]) -> None:
    def claims(partner_id: str) -> str:
        body = planted(lambda d: (d.update(partner_id=partner_id), d["payload"].update(sensitivity="secret")))
        (receipt,) = answer(processor[0], body, "spec.submitted")
        (mismatch,) = [r for r in receipt.payload.reasons if r.code == "sender.mismatch"]
        return mismatch.message

    assert "'lab-b'" in claims("lab-b")
    assert "not a valid partner id" in claims(f"{MARKER} lab")


@given(body=st.binary(max_size=512) | st.text(max_size=300).map(str.encode))
@example(body=b"[" * 100_000 + b"]" * 100_000)  # json.loads in the hook: a RecursionError before the fix
@example(body=b'{"event_id": "00000000-0000-0000-0000-000000000001", "payload": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
@budget(60)
def test_the_invalid_submission_hook_never_raises(body: bytes) -> None:
    try:
        parse_event(body)
        return
    except ValueError as error:
        read_invalid_submission(body, f"{PARTNER}.spec.submitted", error)


def test_a_type_that_is_a_list_or_object_is_answered_not_raised() -> None:
    """Found by the fuzzer in CI: `"type": [[1]]` made the rejection hook raise TypeError (unhashable)."""
    from mshale_fl.agents.mishale.validate import read_invalid_submission

    for claimed in ([[1]], {"a": 1}):
        body = json.dumps(
            {"event_id": "e3e70682-c209-4cac-629f-6fbed82c07cd", "type": claimed, "schema_version": 1, "payload": {}}
        ).encode()
        answer = read_invalid_submission(body, "lab-1.spec.submitted", ValueError("invalid"))
        assert answer is not None and answer.kind == "spec"  # the routing key names the type
