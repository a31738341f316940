"""The Flower ServerApp of mshale-fl: FedProx rounds under privacy budgets, with events and resumable state.

`FederatedTraining(grid, config, ...)` runs a whole training run on any `flwr.serverapp.Grid`:
our `AmqpGrid` (`mshale-fl serve`) or Flower's own (`flwr run`, through `app` below). Per round:

1. wait until at least `min_clients` partners are eligible (present, `may_train` in the ledger);
2. ask each for its DP plan (`query.dp_plan`, protocol.py) and reserve it in the ledger under
   `round_id_for(run_id, round)`; partners that refuse or whose reservation does not fit are left
   out. Fewer than `min_clients` reserved: release, wait for the partner set to change, ask again;
3. publish `round.started` (the cohort), then FedProx's `configure_train` on a `CohortGrid` of
   exactly the reserved partners, each instruction carrying that partner's reserved mechanism;
4. wait for the replies (`--round-timeout`); a partner that errs, refuses, vanishes or sends an
   update that does not match its reservation is a dropout;
5. hand the replies to the round's `Aggregation` (aggregation/): by default `SecureAggregation`,
   which runs the secure-aggregation stages with the partners still in and unmasks only the sum of
   their masked updates; `PlainAggregation` (`--no-secure-aggregation`, and Flower's deployment)
   averages plain DP-noised weights with FedProx. Each update received gets an `update.masked`
   event (the partner, the SHA-256 of what was received: masked bytes under secure aggregation, the
   epsilon the partner reported). With at least `min_clients` updates in the result, save the
   round's model atomically and publish `round.completed`; otherwise publish it with `failed=true`
   and keep the model.

A failed round still uses its round number: its reservations were started, so the ledger commits
them and the same round id must never train again. At the end the model is saved under
`MSHALE_HOME/models/mshale1_v<version>.pt` and `model.published` announces its digest.

Every event id is derived from (run, round, what), so after a restart the same fact gets the same
id and the consumers' inboxes apply it once. State on disk: federation/runs.py.

Identity keys: every `query.dp_plan` reply carries the partner's Ed25519 identity public key; the
server registers it on first sight (`IdentityRegistry`, the ledger under `serve`) and leaves out a
partner presenting a different one. Secure aggregation checks round keys against these.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedProx
from flwr.supercore.run import Run
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.payloads import ModelPublished, RoundCompleted, RoundStarted, UpdateMasked
from sqlalchemy import Engine

from mshale_fl.agents.mishale.aggregation import (
    Aggregation,
    PlainAggregation,
    Reserved,
    RoundInterrupted,
    SecureAggregation,
    TrainingRound,
)
from mshale_fl.agents.mishale.identities import IdentityRegistry, LedgerIdentities, MemoryIdentities
from mshale_fl.errors import UserFacingError
from mshale_fl.federation import protocol as p
from mshale_fl.federation import secagg_protocol as secagg
from mshale_fl.federation.grid import AmqpGrid, CohortGrid
from mshale_fl.federation.runs import RoundRecord, RunSettings, RunState, RunStore
from mshale_fl.ledger import BudgetExceeded, LedgerError, Mechanism, get_partner, round_id_for
from mshale_fl.ledger import budgets as ledger_budgets
from mshale_fl.logging import get_logger

log = get_logger(__name__)

SYSTEM_PARTNER = "mishale"
"""partner_id of events about the whole federation rather than one partner."""

DEFAULT_DELTA = 1e-5
EVENT_NAMESPACE = uuid.UUID("6f1c3a52-9a0e-4b7e-9d55-3c1f1d9c2b10")
MAX_EPSILON = 1000.0  # the event contract's bound


class TrainingFailed(UserFacingError):
    """The run ended without a model to publish (no round succeeded)."""


# -- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeConfig:
    model_path: Path
    rounds: int
    min_clients: int
    dp_epsilon: float
    home: Path
    mu: float = 0.01
    round_timeout: float = 600.0
    plan_timeout: float = 60.0
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    max_grad_norm: float = 1.0
    new_run: bool = False
    retry_seconds: float = 5.0
    """After a round could not gather `min_clients` reservations: how long to wait before asking again
    (sooner when a partner joins or leaves)."""
    eval_corpus: Path | None = None
    """Mishale's own hold-out protocols with outcomes: each round's model is scored on them (`eval_loss`)."""
    secure_aggregation: bool = True
    secagg: secagg.SecAggSettings = field(default_factory=secagg.SecAggSettings)

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise UserFacingError(f"--rounds must be at least 1, got {self.rounds}")
        if self.min_clients < 1:
            raise UserFacingError(f"--min-clients must be at least 1, got {self.min_clients}")
        if not (math.isfinite(self.dp_epsilon) and 0 < self.dp_epsilon <= MAX_EPSILON):
            raise UserFacingError(f"--dp-epsilon must be in (0, {MAX_EPSILON:g}], got {self.dp_epsilon}")
        if not (math.isfinite(self.mu) and self.mu >= 0):
            raise UserFacingError(f"--mu must be >= 0, got {self.mu}")
        if self.lr * self.mu > 1:
            raise UserFacingError(f"lr * mu must be <= 1 (got {self.lr} * {self.mu}): lower --mu")
        if self.round_timeout <= 0 or self.plan_timeout <= 0:
            raise UserFacingError("timeouts must be > 0 seconds")

    @property
    def settings(self) -> RunSettings:
        return RunSettings(
            rounds=self.rounds,
            min_clients=self.min_clients,
            dp_epsilon=self.dp_epsilon,
            mu=self.mu,
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            max_grad_norm=self.max_grad_norm,
        )

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any], home: Path) -> ServeConfig:
        """From Flower's run config (`flwr run --run-config ...`), keys as the CLI options without dashes."""

        def get(key: str, default: Any) -> Any:
            return run_config.get(key, default)

        return cls(
            model_path=Path(str(get("model", "models/mshale1_v0.pt"))),
            rounds=int(get("rounds", 3)),
            min_clients=int(get("min-clients", 2)),
            dp_epsilon=float(get("dp-epsilon", 1.0)),
            home=Path(str(get("home", home))),
            mu=float(get("mu", 0.01)),
            round_timeout=float(get("round-timeout", 600)),
            plan_timeout=float(get("plan-timeout", 60)),
            local_epochs=int(get("local-epochs", 1)),
            batch_size=int(get("batch-size", 32)),
            lr=float(get("lr", 0.05)),
            max_grad_norm=float(get("max-grad-norm", 1.0)),
            new_run=bool(get("new-run", False)),
            # Off by default here: Flower's deployment runs the ClientApp in a new process per message,
            # which cannot keep a secure-aggregation session between stages.
            secure_aggregation=bool(get("secure-aggregation", False)),
        )


# -- collaborators (each has an AMQP/ledger version and a plain one for Flower's deployment) ------


class Participants(Protocol):
    def wait_for(self, count: int, stop: threading.Event) -> list[int]:
        """Node ids of eligible partners once at least `count` are (fewer if `stop` was set)."""

    def partner_of(self, node_id: int, reported: str | None) -> str | None:
        """The partner behind a node, given the id it reported (None: reject its message)."""

    def wait_for_change(self, seconds: float, stop: threading.Event) -> None: ...


class AmqpParticipants:
    """Partners as the AMQP grid knows them: authenticated by the broker, eligibility from the ledger."""

    def __init__(self, grid: AmqpGrid) -> None:
        self.grid = grid

    def wait_for(self, count: int, stop: threading.Event) -> list[int]:
        from mshale_fl.federation.nodes import node_id_for

        return [node_id_for(partner) for partner in self.grid.wait_for_partners(count, stop=stop)]

    def partner_of(self, node_id: int, reported: str | None) -> str | None:
        partner = self.grid.partner_of(node_id)
        if partner is None or (reported is not None and reported != partner):
            log.warning("server.identity_mismatch", node_id=node_id, authenticated=partner, reported=reported)
            return None
        return partner

    def wait_for_change(self, seconds: float, stop: threading.Event) -> None:
        deadline = time.monotonic() + seconds
        while not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            self.grid.directory.wait_for_change(min(remaining, 1.0))
            if self.grid.interrupted:
                return


class GridParticipants:
    """Any Flower grid (Flower's own deployment): node ids from the grid, partner ids as the nodes report them."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def wait_for(self, count: int, stop: threading.Event) -> list[int]:
        while True:
            nodes = list(self.grid.get_node_ids())
            if len(nodes) >= count or stop.is_set():
                return nodes
            stop.wait(1.0)  # Flower's Grid API offers no notification; its own strategies sleep 1 s too

    def partner_of(self, node_id: int, reported: str | None) -> str | None:
        return reported

    def wait_for_change(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(seconds)


class Budgets(Protocol):
    def delta_for(self, partner_id: str) -> float: ...

    def reserve(self, partner_id: str, model_version: int, round_id: str, mechanism: Mechanism) -> str | None:
        """Reserve; None on success, else why not (the partner is left out of the round)."""

    def release(self, partner_id: str, round_id: str) -> None: ...


class LedgerBudgets:
    """The ledger's reservations (`reserve` / `release`); commits are the ledger worker's, from events."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def delta_for(self, partner_id: str) -> float:
        with self.engine.connect() as connection:
            partner = get_partner(connection, partner_id, required=False)
        return partner.delta if partner is not None else DEFAULT_DELTA

    def reserve(self, partner_id: str, model_version: int, round_id: str, mechanism: Mechanism) -> str | None:
        try:
            with self.engine.begin() as connection:
                ledger_budgets.reserve(
                    connection,
                    partner_id=partner_id,
                    model_version=model_version,
                    round_id=round_id,
                    mechanism=mechanism,
                )
        except BudgetExceeded as error:
            return f"budget: {error}"
        except LedgerError as error:
            return f"ledger: {error}"
        return None

    def release(self, partner_id: str, round_id: str) -> None:
        try:
            with self.engine.begin() as connection:
                ledger_budgets.release(connection, partner_id=partner_id, round_id=round_id)
        except LedgerError as error:
            log.warning("server.release_failed", partner_id=partner_id, round_id=round_id, error=str(error))


class UnmeteredBudgets:
    """No ledger (Flower's deployment in a test): every plan is accepted; partners still enforce their own budget."""

    def delta_for(self, partner_id: str) -> float:
        return DEFAULT_DELTA

    def reserve(self, partner_id: str, model_version: int, round_id: str, mechanism: Mechanism) -> str | None:
        return None

    def release(self, partner_id: str, round_id: str) -> None:
        return None


class EventSink(Protocol):
    def publish(self, events: Sequence[EventEnvelope[Any]]) -> None: ...


class GridEvents:
    """Events to `mshale.events` over the AMQP grid's connection, confirmed before the round moves on."""

    def __init__(self, grid: AmqpGrid) -> None:
        self.grid = grid

    def publish(self, events: Sequence[EventEnvelope[Any]]) -> None:
        self.grid.publish_events(events)


class LoggedEvents:
    """No broker for events: each is logged, and kept for inspection."""

    def __init__(self) -> None:
        self.events: list[EventEnvelope[Any]] = []

    def publish(self, events: Sequence[EventEnvelope[Any]]) -> None:
        for event in events:
            log.info("server.event", type=event.type, partner_id=event.partner_id)
        self.events.extend(events)


def aggregate_train_metrics(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Round metrics from the replies: examples summed, epsilon as the largest any partner reported."""
    metrics = [next(iter(record.metric_records.values())) for record in records]
    return MetricRecord(
        {
            weighted_by_key: sum(int(m[weighted_by_key]) for m in metrics),  # type: ignore[arg-type]
            p.EPSILON_SPENT: max(float(m[p.EPSILON_SPENT]) for m in metrics),  # type: ignore[arg-type]
        }
    )


# -- the run --------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    state: RunState
    published_path: Path | None = None
    published_digest: str | None = None
    interrupted: bool = False
    resumed: bool = False
    round_records: list[RoundRecord] = field(default_factory=list)


class FederatedTraining:
    """One training run on `grid`; `run()` returns when every round is done (or `stop` is set)."""

    def __init__(
        self,
        grid: Grid,
        config: ServeConfig,
        *,
        participants: Participants,
        budgets: Budgets,
        events: EventSink,
        identities: IdentityRegistry | None = None,
        aggregation: Aggregation | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.grid = grid
        self.config = config
        self.participants = participants
        self.budgets = budgets
        self.events = events
        self.stop = stop or threading.Event()
        self.store = RunStore(config.home)
        self.strategy = FedProx(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=config.min_clients,
            min_available_nodes=config.min_clients,
            proximal_mu=config.mu,
            train_metrics_aggr_fn=aggregate_train_metrics,
        )
        self.identities = identities or MemoryIdentities()
        if aggregation is None:
            aggregation = (
                SecureAggregation(config.secagg, self.identities)
                if config.secure_aggregation
                else PlainAggregation(self.strategy)
            )
        self.aggregation = aggregation
        self.evaluation = None
        if config.eval_corpus is not None:
            from mshale_fl.training.evaluation import HoldoutEvaluation

            self.evaluation = HoldoutEvaluation(config.eval_corpus)

    # -- the whole run ---------------------------------------------------------------------------

    def run(self) -> RunOutcome:
        from mshale_fl.training.model import load_model, model_digest

        base_model, base_meta = load_model(self.config.model_path)
        state, resumed = self.store.open(
            base_model=self.config.model_path,
            base_digest=model_digest(base_model),
            base_version=base_meta.version,
            settings=self.config.settings,
            new_run=self.config.new_run,
        )
        published = self.store.published_model_path(state.model_version)
        if published.exists():
            raise UserFacingError(
                f"model version {state.model_version} is already published ({published}); "
                f"train the next version from it: serve --model {published}"
            )
        self.grid.set_run(Run.create_empty(state.flower_run_id))
        model = base_model
        if state.current_model_file is not None:
            model, _ = load_model(self.store.run_dir(state.run_id) / state.current_model_file)
        log.info(
            "server.run_resumed" if resumed else "server.run_started",
            run_id=state.run_id,
            model_version=state.model_version,
            next_round=state.last_round + 1,
            rounds=self.config.rounds,
        )
        arrays = ArrayRecord(model.state_dict())
        outcome = RunOutcome(state=state, resumed=resumed)
        for server_round in range(state.last_round + 1, self.config.rounds + 1):
            result = self._round(state, server_round, arrays)
            if result is None:
                outcome.interrupted = True
                log.info("server.interrupted", run_id=state.run_id, round=server_round)
                return outcome
            record, new_arrays = result
            state = self.store.record_round(state, record)
            outcome.state = state
            outcome.round_records.append(record)
            if new_arrays is not None:
                arrays = new_arrays
        return self._publish(state, outcome)

    def _publish(self, state: RunState, outcome: RunOutcome) -> RunOutcome:
        from mshale_fl.training.model import ModelMetadata, load_model, save_model

        if state.successful_rounds == 0 or state.current_model_file is None:
            self.store.finish(state, digest=None, path=None)
            raise TrainingFailed(
                f"training run {state.run_id} ended with no successful round "
                "(too few partners replied in every round); no model was published"
            )
        model, _ = load_model(self.store.run_dir(state.run_id) / state.current_model_file)
        path = self.store.published_model_path(state.model_version)
        metadata = ModelMetadata(version=state.model_version, parent=state.base_version, rounds=state.successful_rounds)
        digest = save_model(path, model, metadata)
        last = next(record for record in reversed(state.rounds) if not record.failed)
        self.events.publish(
            [
                self._event(
                    "model.published",
                    ModelPublished(
                        model_version=state.model_version,
                        parent_version=state.base_version,
                        sha256=digest,
                        rounds=state.successful_rounds,
                        metrics=last.metrics,
                    ),
                    run_id=state.run_id,
                    key=f"published/{digest}",
                )
            ]
        )
        outcome.state = self.store.finish(state, digest=digest, path=path)
        outcome.published_path, outcome.published_digest = path, digest
        log.info("server.model_published", model_version=state.model_version, sha256=digest, path=str(path))
        return outcome

    # -- one round -------------------------------------------------------------------------------

    def _round(
        self, state: RunState, server_round: int, arrays: ArrayRecord
    ) -> tuple[RoundRecord, ArrayRecord | None] | None:
        round_id = round_id_for(state.run_id, server_round)
        cohort = self._gather_cohort(state, server_round, round_id)
        if cohort is None:
            return None
        names = sorted(reserved.partner_id for reserved in cohort.values())
        self.events.publish(
            [
                self._event(
                    "round.started",
                    RoundStarted(
                        run_id=state.run_id, round=server_round, model_version=state.model_version, cohort=names
                    ),
                    run_id=state.run_id,
                    key=f"{server_round}/started/{','.join(names)}",
                )
            ]
        )
        log.info("server.round_started", round=server_round, cohort=names)
        training_round = TrainingRound(
            grid=self.grid,
            run_id=state.run_id,
            model_version=state.model_version,
            server_round=server_round,
            arrays=arrays,
            cohort=cohort,
            participants=self.participants,
            min_clients=self.config.min_clients,
            stop=self.stop,
            update_event=lambda partner, digest, eps, delta: self._update_event(state, server_round, partner, digest, eps, delta),
        )
        round_aggregation = self.aggregation.begin(training_round)
        messages = self._train_messages(state, server_round, arrays, cohort, round_aggregation.train_records())
        replies = list(self.grid.send_and_receive(messages, timeout=self.config.round_timeout))
        if self.stop.is_set():
            return None  # not completed: a restart runs this round again under the same round id
        try:
            result = round_aggregation.finish(replies)
        except RoundInterrupted:
            return None
        self.events.publish(result.updates)
        participants = result.participants
        new_arrays = result.arrays
        metrics: dict[str, float] = {
            "cohort": float(len(cohort)),
            "updates": float(len(participants)),
            "dropouts": float(len(cohort) - len(participants)),
            **result.metrics,
        }
        failed = result.failed or len(participants) < self.config.min_clients
        if not failed and new_arrays is not None:
            metrics["update_norm"] = _distance(arrays, new_arrays)
        if self.evaluation is not None:
            metrics["eval_loss"] = self.evaluation.loss(arrays if failed or new_arrays is None else new_arrays)
        model_file, digest = (None, None)
        if not failed and new_arrays is not None:
            model_file, digest, new_arrays = self._save_round_model(state, server_round, new_arrays)
        self.events.publish(
            [
                self._event(
                    "round.completed",
                    RoundCompleted(
                        run_id=state.run_id,
                        round=server_round,
                        model_version=state.model_version,
                        participants=participants,
                        failed=failed,
                        metrics=metrics,
                    ),
                    run_id=state.run_id,
                    key=f"{server_round}/completed",
                )
            ]
        )
        log.info(
            "server.round_failed" if failed else "server.round_completed",
            round=server_round,
            participants=participants,
            needed=self.config.min_clients,
            aggregation=self.aggregation.name,
            reason=result.failure,
            **metrics,
        )
        from datetime import UTC, datetime

        record = RoundRecord(
            round=server_round,
            failed=failed,
            participants=participants,
            cohort=names,
            metrics=metrics,
            model_file=model_file,
            digest=digest,
            completed_at=datetime.now(UTC).isoformat(),
        )
        return record, (None if failed else new_arrays)

    def _gather_cohort(self, state: RunState, server_round: int, round_id: str) -> dict[int, Reserved] | None:
        """Reserved partners (node id -> reservation), at least `min_clients` of them; None if stopped."""
        cohort: dict[int, Reserved] = {}
        while not self.stop.is_set():
            candidates = self.participants.wait_for(self.config.min_clients, self.stop)
            if self.stop.is_set():
                return None
            plans = self._ask_plans(state, server_round, candidates)
            if self.stop.is_set():
                return None
            cohort: dict[int, Reserved] = {}
            for node_id, plan in plans.items():
                refusal = self.budgets.reserve(plan.partner_id, state.model_version, round_id, plan.mechanism)
                if refusal is not None:
                    log.info("server.partner_left_out", round=server_round, partner_id=plan.partner_id, reason=refusal)
                    continue
                cohort[node_id] = Reserved(plan.partner_id, plan.mechanism, plan.delta)
            if len(cohort) >= self.config.min_clients and not self.stop.is_set():
                return cohort
            if self.stop.is_set():
                break
            log.warning(
                "server.cohort_too_small",
                round=server_round,
                reserved=sorted(r.partner_id for r in cohort.values()),
                needed=self.config.min_clients,
                retry_in_s=self.config.retry_seconds,
            )
            for reserved in cohort.values():
                self.budgets.release(reserved.partner_id, round_id)
            self.participants.wait_for_change(self.config.retry_seconds, self.stop)
        for reserved in cohort.values():  # stopped between reserving and training: nothing was used
            self.budgets.release(reserved.partner_id, round_id)
        return None

    def _ask_plans(self, state: RunState, server_round: int, node_ids: list[int]) -> dict[int, p.DpPlan]:
        messages = []
        for node_id in node_ids:
            config = ConfigRecord(
                {
                    p.RUN_ID: state.run_id,
                    p.ROUND: server_round,
                    p.NUM_ROUNDS: self.config.rounds,
                    p.MODEL_VERSION: state.model_version,
                    p.SERVER_EPSILON: self.config.dp_epsilon,
                    p.LOCAL_EPOCHS: self.config.local_epochs,
                    p.BATCH_SIZE: self.config.batch_size,
                }
            )
            partner = self.participants.partner_of(node_id, None)
            config[p.DELTA] = self.budgets.delta_for(partner) if partner else DEFAULT_DELTA
            messages.append(
                Message(
                    RecordDict({p.CONFIG_RECORD: config}),
                    node_id,
                    p.PLAN_MESSAGE_TYPE,
                    group_id=str(server_round),
                    ttl=self.config.plan_timeout,
                )
            )
        plans: dict[int, p.DpPlan] = {}
        for reply in self.grid.send_and_receive(messages, timeout=self.config.plan_timeout):
            node_id = reply.metadata.src_node_id
            if reply.has_error():
                log.info("server.plan_refused", round=server_round, node_id=node_id, reason=reply.error.reason[:300])
                continue
            try:
                plan = p.parse_plan(reply)
            except p.ProtocolError as error:
                log.warning("server.bad_plan", node_id=node_id, error=str(error))
                continue
            if self.participants.partner_of(node_id, plan.partner_id) is None:
                continue
            refusal = self._register_identity(reply, plan.partner_id)
            if refusal is not None:
                log.warning("server.partner_left_out", round=server_round, partner_id=plan.partner_id, reason=refusal[:300])
                continue
            plans[node_id] = plan
        return plans

    def _register_identity(self, reply: Message, partner_id: str) -> str | None:
        identity = reply.content.config_records.get(p.IDENTITY_RECORD)
        key = identity.get(secagg.IDENTITY_KEY) if identity is not None else None
        if not isinstance(key, bytes):
            if self.config.secure_aggregation:
                return "the plan carries no identity key, which secure aggregation needs"
            return None
        return self.identities.register(partner_id, key)

    def _train_messages(
        self,
        state: RunState,
        server_round: int,
        arrays: ArrayRecord,
        cohort: dict[int, Reserved],
        extra_records: RecordDict,
    ) -> list[Message]:
        shared = ConfigRecord(
            {
                p.RUN_ID: state.run_id,
                p.NUM_ROUNDS: self.config.rounds,
                p.MODEL_VERSION: state.model_version,
                p.SERVER_EPSILON: self.config.dp_epsilon,
                p.LOCAL_EPOCHS: self.config.local_epochs,
                p.BATCH_SIZE: self.config.batch_size,
                p.LR: self.config.lr,
                p.MAX_GRAD_NORM: self.config.max_grad_norm,
            }
        )
        # FedProx samples the nodes (all of the cohort view) and adds proximal-mu and server-round.
        drafts = self.strategy.configure_train(server_round, arrays, shared, CohortGrid(self.grid, list(cohort)))
        messages = []
        for draft in drafts:
            node_id = draft.metadata.dst_node_id
            reserved = cohort[node_id]
            config = ConfigRecord(dict(draft.content[self.strategy.configrecord_key]))
            config.update(p.mechanism_metrics(reserved.mechanism))
            config[p.DELTA] = reserved.delta
            content = RecordDict({self.strategy.arrayrecord_key: arrays, self.strategy.configrecord_key: config})
            for name, record in extra_records.items():
                content[name] = record
            messages.append(
                Message(
                    content,
                    node_id,
                    draft.metadata.message_type,
                    group_id=str(server_round),
                    ttl=self.config.round_timeout + self.config.plan_timeout,
                )
            )
        return messages

    def _update_event(
        self, state: RunState, server_round: int, partner_id: str, digest: str, epsilon_spent: float, delta: float
    ) -> EventEnvelope[Any]:
        return self._event(
            "update.masked",
            UpdateMasked(
                run_id=state.run_id,
                round=server_round,
                model_version=state.model_version,
                digest=digest,
                epsilon_spent=epsilon_spent,
                delta=delta,
            ),
            run_id=state.run_id,
            key=f"{server_round}/update/{partner_id}/{digest}",
            partner_id=partner_id,
        )

    def _save_round_model(
        self, state: RunState, server_round: int, arrays: ArrayRecord
    ) -> tuple[str, str, ArrayRecord]:
        """Save the round's model; returns its file name, digest and the arrays to send next.

        The next round's arrays are rebuilt from the model, exactly as a resumed server rebuilds
        them from the saved file, so the instructions of a round are byte-identical before and
        after a restart (partners recognise a repeated round by the digest of its weights).
        """
        from mshale_fl.training.model import ModelMetadata, Mshale1, save_model

        model = Mshale1()
        model.load_state_dict(arrays.to_torch_state_dict())
        name = f"round-{server_round}.pt"
        metadata = ModelMetadata(
            version=state.model_version, parent=state.base_version, rounds=state.successful_rounds + 1
        )
        digest = save_model(self.store.run_dir(state.run_id) / name, model, metadata)
        return name, digest, ArrayRecord(model.state_dict())

    def _event(
        self, type_name: str, payload: Any, *, run_id: str, key: str, partner_id: str = SYSTEM_PARTNER
    ) -> EventEnvelope[Any]:
        return new_event(
            type_name,
            payload,
            partner_id=partner_id,
            correlation_id=uuid.uuid5(EVENT_NAMESPACE, f"run/{run_id}"),
            event_id=uuid.uuid5(EVENT_NAMESPACE, f"{run_id}/{type_name}/{key}"),
        )


def _distance(before: ArrayRecord, after: ArrayRecord) -> float:
    total = 0.0
    for key in before.keys():
        difference = after[key].numpy().astype(np.float64) - before[key].numpy().astype(np.float64)
        total += float(np.sum(difference * difference))
    return math.sqrt(total)


# -- Flower's deployment entry point (`flwr run`) ------------------------------------------------

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Under Flower's SuperLink: the same rounds; no ledger or events unless this process is given them."""
    from mshale_fl.config import get_settings

    config = ServeConfig.from_run_config(dict(context.run_config), get_settings().home)
    FederatedTraining(
        grid, config, participants=GridParticipants(grid), budgets=UnmeteredBudgets(), events=LoggedEvents()
    ).run()


__all__ = [
    "AmqpParticipants",
    "FederatedTraining",
    "GridEvents",
    "GridParticipants",
    "LedgerBudgets",
    "LoggedEvents",
    "RunOutcome",
    "ServeConfig",
    "TrainingFailed",
    "UnmeteredBudgets",
    "app",
]
