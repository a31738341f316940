"""What the ServerApp and the ClientApp say to each other inside Flower messages (any Grid).

A round is two exchanges:

1. `query.dp_plan` (server -> every eligible partner). Config: run id, round, number of rounds,
   model version, the server's epsilon, the partner's delta (from the ledger), and the local
   schedule (epochs, batch size). The partner answers with the mechanism it will run this round
   (noise multiplier, sample rate, steps), planned so its whole remaining schedule fits
   min(server epsilon, partner epsilon), and the epsilon it will have spent after the round; or
   with an error if even this round does not fit (a refusal: nothing was trained).
2. The server reserves that mechanism in the ledger for every partner that planned, and sends
   `train` to those whose reservation succeeded (the cohort). Config: FedProx's `proximal-mu`
   and `server-round`, the run id, the local schedule and hyper-parameters, and the reserved
   mechanism, which the partner checks against its own budget before it touches any data. The
   reply carries the new weights (`arrays`), `metrics` (`num-examples` and the mechanism and
   epsilon actually spent) and `identity` (the partner id, which the AMQP grid also authenticates).

Nothing else leaves the partner: no loss, no per-example anything (a training loss is not DP).
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import ConfigRecord, Message, MetricRecord

from mshale_fl.ledger.accounting import Mechanism

PLAN_MESSAGE_TYPE = "query.dp_plan"
TRAIN_MESSAGE_TYPE = "train"

# -- config keys, server -> partner ---------------------------------------------------------------
RUN_ID = "run-id"
ROUND = "server-round"  # FedAvg/FedProx set it on train messages; we set it on plan messages too
NUM_ROUNDS = "num-rounds"
MODEL_VERSION = "model-version"
SERVER_EPSILON = "dp-epsilon"
DELTA = "dp-delta"
LOCAL_EPOCHS = "local-epochs"
BATCH_SIZE = "batch-size"
LR = "lr"
MAX_GRAD_NORM = "max-grad-norm"
PROXIMAL_MU = "proximal-mu"  # set by FedProx.configure_train
NOISE_MULTIPLIER = "dp-noise-multiplier"
SAMPLE_RATE = "dp-sample-rate"
STEPS = "dp-steps"

# -- reply records and metric keys, partner -> server ---------------------------------------------
PLAN_RECORD = "plan"
METRICS_RECORD = "metrics"
ARRAYS_RECORD = "arrays"
CONFIG_RECORD = "config"
IDENTITY_RECORD = "identity"
PARTNER_ID = "partner-id"
NUM_EXAMPLES = "num-examples"
EPSILON_SPENT = "dp-epsilon-spent"
"""Epsilon the partner has spent on this model version after the round (its accountant, composed)."""


class ProtocolError(ValueError):
    """A message whose content does not follow this protocol."""


@dataclass(frozen=True)
class DpPlan:
    """A partner's answer to `query.dp_plan`."""

    partner_id: str
    mechanism: Mechanism
    epsilon_after: float
    delta: float


def mechanism_metrics(mechanism: Mechanism) -> dict[str, float | int]:
    return {
        NOISE_MULTIPLIER: float(mechanism.noise_multiplier),
        SAMPLE_RATE: float(mechanism.sample_rate),
        STEPS: int(mechanism.steps),
    }


def mechanism_from(record: MetricRecord | ConfigRecord) -> Mechanism:
    try:
        return Mechanism(float(record[NOISE_MULTIPLIER]), float(record[SAMPLE_RATE]), int(record[STEPS]))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as error:
        raise ProtocolError(f"no valid DP mechanism in the message: {error}") from None


def reported_partner(reply: Message) -> str | None:
    identity = reply.content.config_records.get(IDENTITY_RECORD)
    value = identity.get(PARTNER_ID) if identity is not None else None
    return value if isinstance(value, str) else None


def parse_plan(reply: Message) -> DpPlan:
    content = reply.content
    plan = content.metric_records.get(PLAN_RECORD)
    partner_id = reported_partner(reply)
    if plan is None or partner_id is None:
        raise ProtocolError("a dp_plan reply needs a 'plan' MetricRecord and an 'identity' ConfigRecord")
    try:
        return DpPlan(partner_id, mechanism_from(plan), float(plan[EPSILON_SPENT]), float(plan[DELTA]))  # type: ignore[arg-type]
    except KeyError as error:
        raise ProtocolError(f"dp_plan reply lacks {error}") from None


__all__ = [name for name in dir() if name.isupper()] + [
    "DpPlan",
    "ProtocolError",
    "mechanism_from",
    "mechanism_metrics",
    "parse_plan",
    "reported_partner",
]
