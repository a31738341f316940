"""Payload of each event type. One class per type; the envelope pairs them by `type`."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from mshale_fl.schemas.common import (
    MAX_LIST,
    Delta,
    Epsilon,
    ExactlyOne,
    ExactlyTwo,
    FiniteFloat,
    Message,
    ModelVersion,
    NonNegativeFloat,
    PartnerId,
    RoundNumber,
    Sha256Hex,
    ShortCode,
    StrictModel,
)
from mshale_fl.schemas.feature_vector import FeatureVector
from mshale_fl.schemas.protocol_spec import ProtocolSpec
from mshale_fl.schemas.vocabulary import Sensitivity

RunId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
MetricName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Metrics = Annotated[dict[MetricName, FiniteFloat], Field(max_length=64)]
Cohort = Annotated[list[PartnerId], Field(max_length=MAX_LIST)]


class Reason(StrictModel):
    """A machine-readable reason (`code`) with the field it concerns and an explanation."""

    code: ShortCode
    field: Annotated[str, Field(max_length=200)] | None = None
    message: Message


Reasons = Annotated[list[Reason], Field(min_length=1, max_length=100)]


class SpecSubmitted(StrictModel):
    tier: ExactlyOne = 1
    sensitivity: Sensitivity
    spec: ProtocolSpec


class VectorsSubmitted(StrictModel):
    tier: ExactlyTwo = 2
    sensitivity: Sensitivity
    vectors: Annotated[list[FeatureVector], Field(min_length=1, max_length=1_000)]


class SubmissionAccepted(StrictModel):
    submission_id: UUID = Field(description="event_id of the submission")
    kind: Literal["spec", "vectors"]
    items: Annotated[int, Field(ge=1, le=MAX_LIST)]


class SubmissionRejected(StrictModel):
    submission_id: UUID = Field(description="event_id of the submission (a nil UUID if unparseable)")
    kind: Literal["spec", "vectors", "unknown"]
    reasons: Reasons


class RoundStarted(StrictModel):
    run_id: RunId
    round: RoundNumber
    model_version: ModelVersion
    cohort: Cohort


class UpdateMasked(StrictModel):
    run_id: RunId
    round: RoundNumber
    model_version: ModelVersion
    digest: Sha256Hex = Field(description="SHA-256 of the masked update as received")
    epsilon_spent: Epsilon
    delta: Delta


class RoundCompleted(StrictModel):
    run_id: RunId
    round: RoundNumber
    model_version: ModelVersion
    participants: Cohort
    failed: bool = False
    metrics: Metrics = {}


class BudgetLow(StrictModel):
    model_version: ModelVersion
    epsilon_total: Epsilon
    epsilon_spent: Epsilon
    epsilon_remaining: Epsilon
    fraction_remaining: Annotated[float, Field(ge=0.0, le=1.0)]


class PartnerPaused(StrictModel):
    model_version: ModelVersion
    reason: ShortCode


class ModelPublished(StrictModel):
    model_version: ModelVersion
    parent_version: ModelVersion | None
    sha256: Sha256Hex
    rounds: Annotated[int, Field(ge=0, le=1_000_000)]
    metrics: Metrics = {}


class AuditCheckpoint(StrictModel):
    origin: Annotated[str, Field(pattern=r"^[\x21-\x7e]{1,200}$")]
    tree_size: Annotated[int, Field(ge=0)]
    root_hash: Sha256Hex
    note: Annotated[str, Field(max_length=4_096, description="The C2SP signed note, verbatim")]


class PredictionRequested(StrictModel):
    specs: Annotated[list[ProtocolSpec], Field(max_length=1_000)] = []
    vectors: Annotated[list[FeatureVector], Field(max_length=1_000)] = []


class Prediction(StrictModel):
    item_hash: Sha256Hex
    efficiency: FiniteFloat


class PredictionReady(StrictModel):
    request_id: UUID
    model_version: ModelVersion
    predictions: Annotated[list[Prediction], Field(max_length=2_000)]


class AccessDenied(StrictModel):
    request_id: UUID
    action: ShortCode
    reasons: Reasons
    remedy: Message


class AccessGranted(StrictModel):
    """A grant that is not itself an answer event: a model download (predictions are granted by `prediction.ready`)."""

    request_id: UUID = Field(description="The download the grant answers (chosen by the partner, one per download)")
    action: ShortCode
    model_version: ModelVersion
    sha256: Sha256Hex = Field(description="The registered digest of the weights granted")
