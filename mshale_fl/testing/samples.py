"""One valid sample event of every type, for round-trip tests, fuzzing seeds and benchmarks."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from mshale_fl.schemas import payloads as p
from mshale_fl.schemas.events import EVENT_TYPES, EventEnvelope, new_event
from mshale_fl.schemas.feature_vector import FEATURE_DIM, FeatureVector
from mshale_fl.schemas.protocol_spec import ProtocolSpec, Quantity, Step
from mshale_fl.schemas.vocabulary import (
    CanonicalUnit,
    Domain,
    EquipmentClass,
    LabwareClass,
    Operation,
    Organism,
    QuantityKind,
    ReagentClass,
    Sensitivity,
)


def digest(seed: object) -> str:
    return hashlib.sha256(repr(seed).encode()).hexdigest()


def sample_spec(seed: int = 0) -> ProtocolSpec:
    return ProtocolSpec(
        content_hash=digest(("spec", seed)),
        domain=Domain.MOLECULAR_BIOLOGY,
        organism=Organism.E_COLI,
        steps=[
            Step(
                operation=Operation.ADD,
                quantities=[Quantity(kind=QuantityKind.VOLUME, unit=CanonicalUnit.MICROLITRE, value=50.0 + seed)],
                reagents=[ReagentClass.BUFFER],
                labware=[LabwareClass.MICROTUBE],
            ),
            Step(
                operation=Operation.CENTRIFUGE,
                quantities=[
                    Quantity(kind=QuantityKind.SPEED_RCF, unit=CanonicalUnit.TIMES_G, value=14000.0),
                    Quantity(kind=QuantityKind.DURATION, unit=CanonicalUnit.SECOND, min=60.0, max=120.0),
                ],
                equipment=[EquipmentClass.MICROCENTRIFUGE],
            ),
            Step(
                operation=Operation.INCUBATE,
                quantities=[Quantity(kind=QuantityKind.TEMPERATURE, unit=CanonicalUnit.CELSIUS, value=22.0, approx=True)],
            ),
        ],
    )


def sample_vector(seed: int = 0) -> FeatureVector:
    return FeatureVector(spec_hash=digest(("spec", seed)), values=[float((i + seed) % 7) / 7.0 for i in range(FEATURE_DIM)])


def sample_payload(type_name: str, seed: int = 0) -> Any:
    run = "run-1"
    reasons = [p.Reason(code="vector.length", field="vectors[0].values", message="expected 223 values, got 3")]
    payloads: dict[str, Any] = {
        "spec.submitted": lambda: p.SpecSubmitted(sensitivity=Sensitivity.PUBLISHED, spec=sample_spec(seed)),
        "vectors.submitted": lambda: p.VectorsSubmitted(sensitivity=Sensitivity.INTERNAL, vectors=[sample_vector(seed)]),
        "submission.accepted": lambda: p.SubmissionAccepted(submission_id=uuid.UUID(int=seed + 1), kind="spec", items=1),
        "submission.rejected": lambda: p.SubmissionRejected(submission_id=uuid.UUID(int=seed + 1), kind="vectors", reasons=reasons),
        "round.started": lambda: p.RoundStarted(run_id=run, round=seed + 1, model_version=1, cohort=["lab-a", "lab-b"]),
        "update.masked": lambda: p.UpdateMasked(
            run_id=run, round=seed + 1, model_version=1, digest=digest(seed), epsilon_spent=0.05, delta=1e-5
        ),
        "round.completed": lambda: p.RoundCompleted(
            run_id=run, round=seed + 1, model_version=1, participants=["lab-a"], metrics={"loss": 0.25}
        ),
        "budget.low": lambda: p.BudgetLow(
            model_version=1, epsilon_total=1.0, epsilon_spent=0.95, epsilon_remaining=0.05, fraction_remaining=0.05
        ),
        "partner.paused": lambda: p.PartnerPaused(model_version=1, reason="budget.low"),
        "model.published": lambda: p.ModelPublished(model_version=2, parent_version=1, sha256=digest(seed), rounds=3),
        "audit.checkpoint": lambda: p.AuditCheckpoint(
            origin="mshale.bio/audit", tree_size=seed, root_hash=digest(seed), note="mshale.bio/audit\n0\nAAAA\n"
        ),
        "prediction.requested": lambda: p.PredictionRequested(specs=[sample_spec(seed)]),
        "prediction.ready": lambda: p.PredictionReady(
            request_id=uuid.UUID(int=seed + 1),
            model_version=1,
            predictions=[p.Prediction(item_hash=digest(seed), efficiency=0.7)],
        ),
        "access.denied": lambda: p.AccessDenied(
            request_id=uuid.UUID(int=seed + 1), action="model.pull", reasons=reasons, remedy="sign a Tier 3 agreement"
        ),
        "access.granted": lambda: p.AccessGranted(
            request_id=uuid.UUID(int=seed + 1), action="model.download", model_version=1, sha256=digest(seed)
        ),
    }
    return payloads[type_name]()


def sample_event(type_name: str, seed: int = 0, partner_id: str = "lab-a") -> EventEnvelope[Any]:
    return new_event(type_name, sample_payload(type_name, seed), partner_id=partner_id)


def sample_events(seed: int = 0) -> list[EventEnvelope[Any]]:
    return [sample_event(type_name, seed) for type_name in EVENT_TYPES]
