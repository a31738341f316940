"""Plain aggregation: partners send their DP-noised weights and FedProx averages them by examples.

Kept for `serve --no-secure-aggregation` and for Flower's own deployment (`flwr run`), where the
ClientApp runs in a fresh process per message and so cannot hold a secure-aggregation session.
The server sees every partner's (noised) weights; `update.masked` then carries the digest of those.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp.strategy import FedProx

from mshale_fl.agents.mishale.aggregation.base import (
    Aggregation,
    RoundAggregation,
    RoundResult,
    TrainingRound,
    check_train_reply,
    reported_epsilon,
)
from mshale_fl.federation import protocol as p
from mshale_fl.logging import get_logger

log = get_logger(__name__)


class PlainAggregation(Aggregation):
    name = "plain"

    def __init__(self, strategy: FedProx) -> None:
        self.strategy = strategy

    def begin(self, training_round: TrainingRound) -> RoundAggregation:
        return _PlainRound(self.strategy, training_round)


class _PlainRound(RoundAggregation):
    def __init__(self, strategy: FedProx, training_round: TrainingRound) -> None:
        self.strategy = strategy
        self.round = training_round

    def train_records(self) -> RecordDict:
        return RecordDict()

    def finish(self, replies: list[Message]) -> RoundResult:
        training_round = self.round
        accepted: list[Message] = []
        events = []
        for reply in replies:
            reserved = training_round.cohort.get(reply.metadata.src_node_id)
            if reserved is None:
                continue
            problem = check_train_reply(training_round, reply, reserved) or self._check_weights(reply)
            if problem is not None:
                log.warning(
                    "server.dropout", round=training_round.server_round, partner_id=reserved.partner_id, reason=problem[:300]
                )
                continue
            digest = reply.content[p.ARRAYS_RECORD].object_id
            events.append(training_round.update_event(reserved.partner_id, digest, reported_epsilon(reply), reserved.delta))
            accepted.append(reply)
        participants = sorted(training_round.cohort[r.metadata.src_node_id].partner_id for r in accepted)
        if len(accepted) < training_round.min_clients:
            return RoundResult(participants, None, updates=events, failure=f"{len(accepted)} updates, fewer than min-clients")
        arrays, aggregated = self.strategy.aggregate_train(training_round.server_round, accepted)
        metrics: dict[str, float] = {}
        if aggregated is not None:
            metrics["num_examples"] = float(aggregated[p.NUM_EXAMPLES])  # type: ignore[arg-type]
            metrics["epsilon_spent_max"] = float(aggregated[p.EPSILON_SPENT])  # type: ignore[arg-type]
        return RoundResult(participants, arrays, metrics, events, None if arrays is not None else "FedProx returned nothing")

    def _check_weights(self, reply: Message) -> str | None:
        content, arrays = reply.content, self.round.arrays
        if set(content.array_records) != {p.ARRAYS_RECORD} or set(content.metric_records) != {p.METRICS_RECORD}:
            return "a train reply needs exactly the 'arrays' ArrayRecord and the 'metrics' MetricRecord"
        update: ArrayRecord = content[p.ARRAYS_RECORD]
        if list(update.keys()) != list(arrays.keys()):
            return "the update's tensors are not the model's"
        for key in arrays.keys():
            received = update[key]
            if tuple(received.shape) != tuple(arrays[key].shape) or not np.all(np.isfinite(received.numpy())):
                return f"tensor {key} has the wrong shape or non-finite values"
        examples = content[p.METRICS_RECORD].get(p.NUM_EXAMPLES)
        if not isinstance(examples, int) or examples < 1:
            return "num-examples must be a positive integer"
        return None



__all__ = ["PlainAggregation"]
