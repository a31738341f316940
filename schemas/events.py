"""The event envelope and the typed events that travel on the bus.

Every event has the same envelope; `type` selects the payload model (a discriminated union),
so parsing a message yields exactly one concrete class or a precise validation error.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Generic, Literal, TypeVar, Union, get_args

from pydantic import BaseModel, Field, TypeAdapter

from mshale_fl.schemas import payloads as p
from mshale_fl.schemas.common import ExactlyOne, PartnerId, StrictModel, UtcDatetime, now_utc

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)

PayloadT = TypeVar("PayloadT", bound=BaseModel)


class EventEnvelope(StrictModel, Generic[PayloadT]):
    event_id: uuid.UUID
    type: str
    schema_version: ExactlyOne = SCHEMA_VERSION
    partner_id: PartnerId = Field(description="The partner the event is from or about; 'mishale' for system events")
    occurred_at: UtcDatetime
    correlation_id: uuid.UUID = Field(description="Shared by every event of one conversation (a submission, a run)")
    causation_id: uuid.UUID | None = Field(default=None, description="event_id of the event that caused this one")
    payload: PayloadT

    @property
    def routing_key(self) -> str:
        return f"{self.partner_id}.{self.type}"


def _event(type_name: str, payload: type[BaseModel], doc: str) -> type[EventEnvelope[Any]]:
    cls = type(
        "".join(part.capitalize() for part in type_name.replace(".", "_").split("_")) + "Event",
        (EventEnvelope[payload],),  # type: ignore[valid-type]
        {"__annotations__": {"type": Literal[type_name]}, "__doc__": doc, "__module__": __name__},
    )
    return cls


SpecSubmittedEvent = _event("spec.submitted", p.SpecSubmitted, "A Tier 1 partner sends one ProtocolSpec.")
VectorsSubmittedEvent = _event("vectors.submitted", p.VectorsSubmitted, "A Tier 2 partner sends a batch of feature vectors.")
SubmissionAcceptedEvent = _event("submission.accepted", p.SubmissionAccepted, "The validator accepted a submission.")
SubmissionRejectedEvent = _event("submission.rejected", p.SubmissionRejected, "The validator rejected a submission, with reasons.")
RoundStartedEvent = _event("round.started", p.RoundStarted, "The server started a training round with a cohort.")
UpdateMaskedEvent = _event("update.masked", p.UpdateMasked, "The server received one partner's masked, DP-noised update.")
RoundCompletedEvent = _event("round.completed", p.RoundCompleted, "A training round finished (or failed) with metrics.")
BudgetLowEvent = _event("budget.low", p.BudgetLow, "A partner's remaining privacy budget fell below 10 %.")
PartnerPausedEvent = _event("partner.paused", p.PartnerPaused, "A partner is excluded from training for a model version.")
ModelPublishedEvent = _event("model.published", p.ModelPublished, "A new model version was published.")
AuditCheckpointEvent = _event("audit.checkpoint", p.AuditCheckpoint, "A signed checkpoint of the audit log.")
PredictionRequestedEvent = _event("prediction.requested", p.PredictionRequested, "A partner asks for predictions.")
PredictionReadyEvent = _event("prediction.ready", p.PredictionReady, "Predictions answering a request.")
AccessDeniedEvent = _event("access.denied", p.AccessDenied, "A request was refused, with the reasons and the remedy.")
AccessGrantedEvent = _event("access.granted", p.AccessGranted, "A partner was granted a model version to download.")

EVENT_MODELS: dict[str, type[EventEnvelope[Any]]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in (
        SpecSubmittedEvent,
        VectorsSubmittedEvent,
        SubmissionAcceptedEvent,
        SubmissionRejectedEvent,
        RoundStartedEvent,
        UpdateMaskedEvent,
        RoundCompletedEvent,
        BudgetLowEvent,
        PartnerPausedEvent,
        ModelPublishedEvent,
        AuditCheckpointEvent,
        PredictionRequestedEvent,
        PredictionReadyEvent,
        AccessDeniedEvent,
        AccessGrantedEvent,
    )
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_MODELS)

Event = Annotated[Union[tuple(EVENT_MODELS.values())], Field(discriminator="type")]  # type: ignore[valid-type]
_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)

MAX_EVENT_BYTES = 16 * 1024 * 1024


def parse_event(data: bytes | str) -> EventEnvelope[Any]:
    """Parse one JSON-encoded event; raises `pydantic.ValidationError` with every problem found."""
    if len(data) > MAX_EVENT_BYTES:
        raise ValueError(f"event is {len(data)} bytes; the limit is {MAX_EVENT_BYTES}")
    return _EVENT_ADAPTER.validate_json(data)


def new_event(
    type_name: str,
    payload: BaseModel,
    *,
    partner_id: str,
    correlation_id: uuid.UUID | None = None,
    causation: EventEnvelope[Any] | None = None,
    event_id: uuid.UUID | None = None,
) -> EventEnvelope[Any]:
    """Build an event; a caused event inherits its cause's correlation id."""
    try:
        model = EVENT_MODELS[type_name]
    except KeyError:
        raise ValueError(f"unknown event type {type_name!r}; known: {', '.join(EVENT_TYPES)}") from None
    event_id = event_id or uuid.uuid4()
    if correlation_id is None:
        correlation_id = causation.correlation_id if causation is not None else event_id
    return model(
        event_id=event_id,
        type=type_name,
        partner_id=partner_id,
        occurred_at=now_utc(),
        correlation_id=correlation_id,
        causation_id=causation.event_id if causation is not None else None,
        payload=payload,
    )
