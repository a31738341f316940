"""How the accepted updates of one round become the next global weights: a small ABC.

`FederatedTraining` (server_app.py) owns the round: it reserves budgets, sends `train` to the cohort
and waits for the replies. An `Aggregation` decides the rest. `begin(round)` returns a
`RoundAggregation` holding that round's state; its `train_records()` are added to every `train`
instruction, and `finish(replies)` turns the replies (plus any further exchanges it needs on
`round.grid`) into a `RoundResult`. Two implementations:

* `PlainAggregation` (plain.py): partners send DP-noised weights, FedProx averages them.
* `SecureAggregation` (secure.py, the Tier 3 default): partners send only masked updates and the
  server learns the example-weighted sum.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid
from mshale_fl.schemas.events import EventEnvelope

from mshale_fl.federation import protocol as p
from mshale_fl.ledger import Mechanism

MAX_EPSILON = 1000.0  # the event contract's bound


@dataclass
class Reserved:
    """A cohort member: the partner behind a node and the mechanism reserved for it in the ledger."""

    partner_id: str
    mechanism: Mechanism
    delta: float


class PartnerDirectory(Protocol):
    def partner_of(self, node_id: int, reported: str | None) -> str | None:
        """The partner behind `node_id` if it is known and agrees with what the message reported."""


class RoundInterrupted(Exception):
    """The server is stopping; the round did not complete and runs again after a restart."""


@dataclass
class TrainingRound:
    """What an aggregation may know about the round it aggregates."""

    grid: Grid
    run_id: str
    model_version: int
    server_round: int
    arrays: ArrayRecord
    cohort: dict[int, Reserved]
    participants: PartnerDirectory
    min_clients: int
    stop: threading.Event
    update_event: Callable[[str, str, float, float], EventEnvelope[Any]]
    """(partner_id, digest of what was received, epsilon reported, delta) -> an `update.masked` event."""

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise RoundInterrupted


@dataclass
class RoundResult:
    participants: list[str]
    """Partners whose updates are in the new weights."""
    arrays: ArrayRecord | None
    """The new global weights; None if the round failed."""
    metrics: dict[str, float] = field(default_factory=dict)
    updates: list[EventEnvelope[Any]] = field(default_factory=list)
    """`update.masked` events, one per update received."""
    failure: str | None = None

    @property
    def failed(self) -> bool:
        return self.arrays is None


class RoundAggregation(ABC):
    """One round's aggregation state."""

    @abstractmethod
    def train_records(self) -> RecordDict:
        """Records added to every `train` instruction of the round (may be empty)."""

    @abstractmethod
    def finish(self, replies: list[Message]) -> RoundResult:
        """The round's result from the `train` replies; raises `RoundInterrupted` if the server stops."""


class Aggregation(ABC):
    """A way to aggregate rounds (see the module docstring)."""

    name: str

    @abstractmethod
    def begin(self, training_round: TrainingRound) -> RoundAggregation: ...


def check_train_reply(training_round: TrainingRound, reply: Message, reserved: Reserved) -> str | None:
    """Why a `train` reply cannot be accepted whatever the aggregation (identity, mechanism, epsilon), or None."""
    if reply.has_error():
        return f"error reply: {reply.error.reason}"
    if training_round.participants.partner_of(reply.metadata.src_node_id, p.reported_partner(reply)) != reserved.partner_id:
        return "the reply does not come from the reserved partner"
    metrics = reply.content.metric_records.get(p.METRICS_RECORD)
    if metrics is None:
        return "a train reply needs the 'metrics' MetricRecord"
    try:
        mechanism = p.mechanism_from(metrics)
        epsilon_spent = float(metrics[p.EPSILON_SPENT])  # type: ignore[arg-type]
    except (p.ProtocolError, KeyError, TypeError, ValueError) as error:
        return f"metrics incomplete: {error}"
    if mechanism != reserved.mechanism:
        return f"trained with {mechanism}, but {reserved.mechanism} was reserved"
    if not (math.isfinite(epsilon_spent) and 0 <= epsilon_spent <= MAX_EPSILON):
        return f"reported epsilon {epsilon_spent} is out of range"
    return None


def reported_epsilon(reply: Message) -> float:
    return float(reply.content[p.METRICS_RECORD][p.EPSILON_SPENT])  # type: ignore[arg-type]


__all__ = [
    "MAX_EPSILON",
    "Aggregation",
    "PartnerDirectory",
    "Reserved",
    "RoundAggregation",
    "RoundInterrupted",
    "RoundResult",
    "TrainingRound",
    "check_train_reply",
    "reported_epsilon",
]
