"""The validator's judgement, applied directly to events (no broker): receipts and machine-readable reasons."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from mshale_fl.agents.mishale.validate import ValidateHandler, receipt_id
from mshale_fl.broker import PermanentError
from mshale_fl.ledger import register_partner, revoke_partner
from mshale_fl.ledger.agreements import AgreementKind, AgreementTerms
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.feature_vector import FEATURE_DIM, FeatureVector
from mshale_fl.schemas.payloads import SpecSubmitted, VectorsSubmitted
from mshale_fl.schemas.protocol_spec import ProtocolSpec, Quantity, Step
from mshale_fl.schemas.vocabulary import CanonicalUnit, Operation, QuantityKind, Sensitivity
from mshale_fl.testing.samples import sample_event, sample_spec

from .support import layout_vector, unique_partner_id


def dpa() -> AgreementTerms:
    today = date.today()
    return AgreementTerms(AgreementKind.DPA, valid_until=today + timedelta(days=365), valid_from=today - timedelta(days=1),
                          attorney_reviewed=True)  # fmt: skip


@pytest.fixture
def tier1(engine: Engine) -> str:
    return register_partner(engine, unique_partner_id(), tier=1, broker=None).partner.id


@pytest.fixture
def tier2(engine: Engine) -> str:
    return register_partner(engine, unique_partner_id(), tier=2, agreements=[dpa()], broker=None).partner.id


def judge(engine: Engine, event: EventEnvelope[Any]) -> EventEnvelope[Any]:
    with engine.begin() as connection:
        (receipt,) = ValidateHandler().handle(event, connection)
    return receipt


def spec_event(partner_id: str, label: Sensitivity = Sensitivity.PUBLISHED, spec: ProtocolSpec | None = None) -> EventEnvelope[Any]:
    return new_event("spec.submitted", SpecSubmitted(sensitivity=label, spec=spec or sample_spec()), partner_id=partner_id)


def vectors_event(partner_id: str, vectors: list[FeatureVector], label: Sensitivity = Sensitivity.INTERNAL) -> EventEnvelope[Any]:
    return new_event("vectors.submitted", VectorsSubmitted(sensitivity=label, vectors=vectors), partner_id=partner_id)


def codes(receipt: EventEnvelope[Any]) -> list[str]:
    assert receipt.type == "submission.rejected", receipt
    return [reason.code for reason in receipt.payload.reasons]


def test_a_valid_spec_is_accepted_with_a_receipt_tied_to_the_submission(engine: Engine, tier1: str) -> None:
    submission = spec_event(tier1)
    receipt = judge(engine, submission)
    assert receipt.type == "submission.accepted"
    assert receipt.partner_id == tier1
    assert receipt.routing_key == f"{tier1}.submission.accepted"
    assert receipt.causation_id == submission.event_id and receipt.correlation_id == submission.correlation_id
    assert receipt.payload.submission_id == submission.event_id
    assert (receipt.payload.kind, receipt.payload.items) == ("spec", 1)
    # One receipt id per submission, however often it is judged (redelivery, resubmission).
    assert receipt.event_id == receipt_id(submission.event_id) == judge(engine, submission).event_id


@pytest.mark.parametrize("label", [Sensitivity.FULL_IP, Sensitivity.INTERNAL, Sensitivity.EFFICIENCY])
def test_a_spec_whose_label_may_not_leave_as_a_spec_is_rejected(engine: Engine, tier1: str, label: Sensitivity) -> None:
    receipt = judge(engine, spec_event(tier1, label))
    assert codes(receipt) == ["sensitivity.not_transmittable"]
    (reason,) = receipt.payload.reasons
    assert reason.field == "sensitivity" and label.value in reason.message


def test_unknown_and_revoked_partners_are_rejected(engine: Engine, tier1: str) -> None:
    assert codes(judge(engine, spec_event(unique_partner_id()))) == ["partner.unknown"]
    revoke_partner(engine, tier1, broker=None)
    assert codes(judge(engine, spec_event(tier1, Sensitivity.FULL_IP))) == ["partner.revoked"]


def test_vectors_need_tier_2_and_a_dpa(engine: Engine, tier1: str, tier2: str) -> None:
    assert codes(judge(engine, vectors_event(tier1, [layout_vector(1)]))) == ["tier.not_granted"]
    accepted = judge(engine, vectors_event(tier2, [layout_vector(1), layout_vector(2)]))
    assert accepted.type == "submission.accepted" and (accepted.payload.kind, accepted.payload.items) == ("vectors", 2)
    # Efficiency data may leave as vectors under the DPA; full-ip never.
    assert judge(engine, vectors_event(tier2, [layout_vector(3)], Sensitivity.EFFICIENCY)).type == "submission.accepted"
    assert codes(judge(engine, vectors_event(tier2, [layout_vector(4)], Sensitivity.FULL_IP))) == ["sensitivity.not_transmittable"]


def test_vector_batches_are_sanity_checked(engine: Engine, tier2: str) -> None:
    zero = FeatureVector(spec_hash=layout_vector(9).spec_hash, values=[0.0] * FEATURE_DIM)
    receipt = judge(engine, vectors_event(tier2, [layout_vector(1), layout_vector(1), zero]))
    assert codes(receipt) == ["vectors.duplicate", "vectors.duplicate", "vectors.all_zero"]
    assert [reason.field for reason in receipt.payload.reasons] == [
        "vectors[0].spec_hash", "vectors[1].spec_hash", "vectors[2].values"]  # fmt: skip


def test_empty_and_implausible_specs_are_rejected_with_every_reason(engine: Engine, tier1: str) -> None:
    empty = ProtocolSpec(content_hash="a" * 64, steps=[Step(operation=Operation.OTHER)] * 3)
    assert codes(judge(engine, spec_event(tier1, spec=empty))) == ["spec.empty"]
    impossible = ProtocolSpec(
        content_hash="b" * 64,
        steps=[
            Step(operation=Operation.INCUBATE,
                 quantities=[Quantity(kind=QuantityKind.TEMPERATURE, unit=CanonicalUnit.CELSIUS, value=-300.0)]),
            Step(operation=Operation.ADD,
                 quantities=[Quantity(kind=QuantityKind.VOLUME, unit=CanonicalUnit.MICROLITRE, min=-5.0, max=10.0),
                             Quantity(kind=QuantityKind.PH, unit=CanonicalUnit.PH, value=15.5)]),
        ],
    )  # fmt: skip
    receipt = judge(engine, spec_event(tier1, Sensitivity.INTERNAL, spec=impossible))
    assert codes(receipt) == ["sensitivity.not_transmittable"] + ["spec.quantity_implausible"] * 3
    assert [r.field for r in receipt.payload.reasons[1:]] == [
        "spec.steps[0].quantities[0]", "spec.steps[1].quantities[0]", "spec.steps[1].quantities[1]"]  # fmt: skip


def test_events_other_than_submissions_are_refused_for_good(engine: Engine) -> None:
    with engine.begin() as connection, pytest.raises(PermanentError) as refused:
        ValidateHandler().handle(sample_event("round.started"), connection)
    assert refused.value.reason_code == "validate.unexpected_event"


def test_receipt_ids_differ_per_submission() -> None:
    assert receipt_id(uuid.UUID(int=1)) != receipt_id(uuid.UUID(int=2))
