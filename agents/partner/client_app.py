"""The Flower ClientApp a partner runs: plan its privacy spend, then train locally with DP-SGD.

Two handlers (the message protocol is in mshale_fl/federation/protocol.py):

* `query.dp_plan` — the mechanism this round would use. The partner's budget for the run is
  min(server epsilon, partner epsilon) (`effective_epsilon`); its accountant for
  `(partner_id, model_version)` (`PartnerAccountant`, on disk) holds what it already spent; the noise
  multiplier is planned so the rest of the schedule (this round and every later one) fits what
  remains (`plan_noise_multiplier`). A round that does not fit is refused with an error reply:
  the server leaves the partner out and nothing is trained.
* `train` — checks the reserved mechanism the server sends against its own data and budget
  (refusing, before any data is read, if it would exceed the budget or does not match), records
  the spend in its accountant *before* training, trains with `train_locally` (Opacus-equivalent
  DP-SGD with FedProx's proximal step). Under secure aggregation (a `secagg` record in the
  instruction, the default) it replies with the mechanism, the epsilon spent so far on this model
  version and its signed round keys, and its update enters a secure-aggregation session
  (secagg_participant.py) that the `train.secagg_*` stages advance; without it, it replies with the
  weights and `num-examples` as well.

A repeated `train` for the same round (the server restarted mid-round, or our reply was lost)
is answered from a reply cache on disk without training again: releasing the same update twice
costs nothing more, training twice would. If the round was recorded but no reply was cached
(we crashed mid-training), the partner trains again without recording again: the first attempt
released nothing. A repeated round on *different* global weights is refused: it would be a second
release the ledger (one reservation per round id) would not count.

The partner's settings come from Flower's node config (so the same app runs under
`flower-supernode --node-config ...`): `partner-id`, `corpus`, `dp-epsilon`, and optionally
`home` (default MSHALE_HOME) for the accountant and the reply cache, and `config` (the partner
config whose labels and agreements decide what trains; default `mshale.toml` at the corpus root).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict  # pylint: disable=no-name-in-module

from mshale_fl.config import get_settings
from mshale_fl.errors import UserFacingError
from mshale_fl.agents.partner.secagg_participant import SecAggParticipant, SecureAggregationRefused, flatten_update
from mshale_fl.federation import protocol as p
from mshale_fl.federation import secagg_protocol as s
from mshale_fl.fileio import write_atomic
from mshale_fl.ledger.accounting import Mechanism
from mshale_fl.ledger.budgets import round_id_for
from mshale_fl.logging import get_logger

log = get_logger(__name__)


class TrainingRefused(UserFacingError):
    """The partner will not take part in this round (budget, data or a mismatched instruction)."""


@dataclass(frozen=True)
class PartnerSettings:
    partner_id: str
    corpus: Path
    dp_epsilon: float
    home: Path
    config: Path | None = None

    @classmethod
    def from_node_config(cls, node_config: dict[str, Any]) -> PartnerSettings:
        try:
            partner_id = str(node_config["partner-id"])
            corpus = Path(str(node_config["corpus"]))
            dp_epsilon = float(node_config["dp-epsilon"])  # type: ignore[arg-type]
        except KeyError as error:
            raise UserFacingError(
                f"the node config lacks {error} (partner-id, corpus and dp-epsilon are required)"
            ) from None
        if not (math.isfinite(dp_epsilon) and dp_epsilon > 0):
            raise UserFacingError(f"dp-epsilon must be a number > 0, got {dp_epsilon}")
        home = Path(str(node_config.get("home") or get_settings().home))
        config = Path(str(node_config["config"])) if node_config.get("config") else None
        return cls(partner_id, corpus, dp_epsilon, home, config)


class ReplyCache:
    """Train replies by round id and global-weights digest, as Flower protobuf files under `home`."""

    def __init__(self, home: Path, partner_id: str) -> None:
        self.root = home / "federation" / "partner" / partner_id / "replies"

    def _dir(self, round_id: str) -> Path:
        run_id, _, server_round = round_id.rpartition("/")
        return self.root / run_id / server_round

    def get(self, round_id: str) -> tuple[str, RecordDict] | None:
        """(digest of the global weights it answered, reply content) or None."""
        directory = self._dir(round_id)
        for path in sorted(directory.glob("*.pb")) if directory.is_dir() else []:
            proto = ProtoRecordDict()
            proto.ParseFromString(path.read_bytes())
            return path.stem, recorddict_from_proto(proto)
        return None

    def put(self, round_id: str, global_digest: str, content: RecordDict) -> None:
        write_atomic(self._dir(round_id) / f"{global_digest}.pb", recorddict_to_proto(content).SerializeToString())


class PartnerTrainer:
    """What one partner process keeps between messages: its data (loaded once) and settings."""

    def __init__(self, settings: PartnerSettings) -> None:
        self.settings = settings
        self.cache = ReplyCache(settings.home, settings.partner_id)
        self._data: Any = None
        self._secagg: SecAggParticipant | None = None
        self._lock = threading.Lock()
        self._training = threading.Lock()

    @property
    def secagg(self) -> SecAggParticipant:
        """The partner's secure-aggregation side (its identity key is created on first use)."""
        with self._lock:
            if self._secagg is None:
                self._secagg = SecAggParticipant(self.settings.partner_id, self.settings.home)
            return self._secagg

    def warm_up(self) -> int:
        """Load the data and the training stack now; returns the number of examples.

        Run before joining: importing torch and Opacus and the first privacy plan take seconds of
        CPU, which, done on the first instruction, would also delay the node's heartbeats.
        """
        from mshale_fl.training.local import dp_round_shape
        from mshale_fl.training.planning import plan_noise_multiplier

        examples = len(self.data().targets)
        sample_rate, steps = dp_round_shape(examples, 32, 1)
        plan_noise_multiplier(1.0, 1e-5, sample_rate, steps, 1)
        return examples

    # -- data and accounting -------------------------------------------------------------------

    def data(self) -> Any:
        with self._lock:
            if self._data is None:
                self._data = load_partner_data(self.settings.corpus, self.settings.config)
            return self._data

    def accountant(self, model_version: int, delta: float) -> Any:
        from mshale_fl.training.planning import PartnerAccountant, PrivacyBudgetError

        try:
            return PartnerAccountant(self.settings.partner_id, model_version, delta=delta, home=self.settings.home)
        except PrivacyBudgetError as error:
            raise TrainingRefused(str(error)) from None

    def budget(self, server_epsilon: float) -> float:
        from mshale_fl.training.planning import effective_epsilon

        return effective_epsilon(server_epsilon, self.settings.dp_epsilon)

    def round_shape(self, batch_size: int, epochs: int) -> tuple[int, float, int]:
        from mshale_fl.training.local import dp_round_shape

        examples = len(self.data().targets)
        sample_rate, steps = dp_round_shape(examples, batch_size, epochs)
        return examples, sample_rate, steps

    # -- query.dp_plan -------------------------------------------------------------------------

    def plan(self, message: Message) -> Message:
        from mshale_fl.training.planning import PrivacyBudgetError, plan_noise_multiplier

        config = message.content[p.CONFIG_RECORD]
        run_id, server_round = str(config[p.RUN_ID]), int(config[p.ROUND])  # type: ignore[arg-type]
        rounds, model_version = int(config[p.NUM_ROUNDS]), int(config[p.MODEL_VERSION])  # type: ignore[arg-type]
        delta = float(config[p.DELTA])  # type: ignore[arg-type]
        budget = self.budget(float(config[p.SERVER_EPSILON]))  # type: ignore[arg-type]
        accountant = self.accountant(model_version, delta)
        round_id = round_id_for(run_id, server_round)
        _examples, sample_rate, steps = self.round_shape(int(config[p.BATCH_SIZE]), int(config[p.LOCAL_EPOCHS]))  # type: ignore[arg-type]
        if accountant.has_recorded(round_id):
            # Already (being) trained: the plan is what was recorded, so the reservation matches it.
            mechanism = accountant.history[accountant.round_ids.index(round_id)]
            epsilon_after = accountant.epsilon_spent
        else:
            remaining_rounds = max(rounds - server_round + 1, 1)
            try:
                noise = plan_noise_multiplier(
                    budget, delta, sample_rate, steps, remaining_rounds, already_spent=accountant.history
                )
            except PrivacyBudgetError as error:
                raise TrainingRefused(
                    f"round {server_round} does not fit the privacy budget (epsilon {budget:g}): {error}"
                ) from None
            mechanism = Mechanism(noise, sample_rate, steps)
            if accountant.would_exceed(mechanism, budget):
                raise TrainingRefused(
                    f"round {server_round} would take epsilon to {accountant.epsilon_after(mechanism):.4g}, "
                    f"above the budget {budget:g}"
                )
            epsilon_after = accountant.epsilon_after(mechanism)
        log.info(
            "partner.plan",
            partner_id=self.settings.partner_id,
            round=server_round,
            noise_multiplier=mechanism.noise_multiplier,
            sample_rate=mechanism.sample_rate,
            steps=mechanism.steps,
            epsilon_after=epsilon_after,
            budget=budget,
        )
        plan = MetricRecord({**p.mechanism_metrics(mechanism), p.EPSILON_SPENT: float(epsilon_after), p.DELTA: delta})
        return Message(RecordDict({p.PLAN_RECORD: plan, p.IDENTITY_RECORD: self._identity()}), reply_to=message)

    # -- train ---------------------------------------------------------------------------------

    def train(self, message: Message) -> Message:
        # One delivery at a time: a `train` delivered again while its first delivery still trains
        # (the connection was lost mid-training, so the broker returned the instruction) waits, then
        # is answered from the reply cache instead of training the same round a second time.
        with self._training:
            return self._train(message)

    def _train(self, message: Message) -> Message:
        from mshale_fl.training.local import LocalTrainingConfig, train_locally
        from mshale_fl.training.model import Mshale1

        content = message.content
        config = content[p.CONFIG_RECORD]
        arrays: ArrayRecord = content[p.ARRAYS_RECORD]
        run_id, server_round = str(config[p.RUN_ID]), int(config[p.ROUND])  # type: ignore[arg-type]
        model_version, delta = int(config[p.MODEL_VERSION]), float(config[p.DELTA])  # type: ignore[arg-type]
        round_id = round_id_for(run_id, server_round)
        mechanism = p.mechanism_from(config)
        global_digest = arrays.object_id

        cached = self.cache.get(round_id)
        if cached is not None:
            digest, reply_content = cached
            if digest != global_digest:
                raise TrainingRefused(
                    f"round {round_id} was already trained on other global weights; training it again would release "
                    "a second update the ledger would not count"
                )
            log.info("partner.reply_from_cache", partner_id=self.settings.partner_id, round=server_round)
            return self._reply(message, round_id, reply_content)

        batch_size, epochs = int(config[p.BATCH_SIZE]), int(config[p.LOCAL_EPOCHS])  # type: ignore[arg-type]
        examples, sample_rate, steps = self.round_shape(batch_size, epochs)
        if (mechanism.sample_rate, mechanism.steps) != (sample_rate, steps):
            raise TrainingRefused(
                f"the reserved mechanism (sample rate {mechanism.sample_rate}, {mechanism.steps} steps) does not match "
                f"this partner's round (sample rate {sample_rate}, {steps} steps)"
            )
        budget = self.budget(float(config[p.SERVER_EPSILON]))  # type: ignore[arg-type]
        accountant = self.accountant(model_version, delta)
        if accountant.has_recorded(round_id):
            recorded = accountant.history[accountant.round_ids.index(round_id)]
            if recorded != mechanism:
                raise TrainingRefused(f"round {round_id} was recorded with {recorded}, the server asks for {mechanism}")
        else:
            if accountant.would_exceed(mechanism, budget):
                raise TrainingRefused(
                    f"round {server_round} would take epsilon to {accountant.epsilon_after(mechanism):.4g}, "
                    f"above the budget {budget:g}; refused before any training"
                )
            # Recorded before any data is read: a crash from here on over-counts, never under-counts.
            accountant.record(mechanism, round_id=round_id)

        model = Mshale1()
        names = list(model.state_dict().keys())
        if list(arrays.keys()) != names:
            raise TrainingRefused(f"the global weights are not an mshale1 model (tensors {list(arrays.keys())[:4]}...)")
        data = self.data()
        training = LocalTrainingConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=float(config[p.LR]),  # type: ignore[arg-type]
            mu=float(config[p.PROXIMAL_MU]),  # type: ignore[arg-type]
            noise_multiplier=mechanism.noise_multiplier,
            max_grad_norm=float(config[p.MAX_GRAD_NORM]),  # type: ignore[arg-type]
            seed=None,  # the noise must be unpredictable: seeded from the OS's entropy
            dp=True,
        )
        result = train_locally(model, data.features, data.targets, [arrays[n].numpy() for n in names], training)
        if result.mechanism != mechanism:  # the accountant recorded `mechanism`; anything else is a bug
            raise RuntimeError(f"local training ran {result.mechanism}, {mechanism} was recorded")
        metrics = MetricRecord(
            {
                p.NUM_EXAMPLES: examples,
                p.EPSILON_SPENT: float(accountant.epsilon_spent),
                **p.mechanism_metrics(mechanism),
            }
        )
        reply_content = RecordDict(
            {
                p.ARRAYS_RECORD: ArrayRecord(model.state_dict()),
                p.METRICS_RECORD: metrics,
                p.IDENTITY_RECORD: self._identity(),
            }
        )
        self.cache.put(round_id, global_digest, reply_content)
        log.info(
            "partner.trained",
            partner_id=self.settings.partner_id,
            round=server_round,
            examples=examples,
            steps=result.steps,
            epsilon_spent=accountant.epsilon_spent,
            budget=budget,
        )
        return self._reply(message, round_id, reply_content)

    def _reply(self, message: Message, round_id: str, trained: RecordDict) -> Message:
        """The train reply: the trained weights themselves, or, under secure aggregation, only signed round keys.

        `trained` is what the reply cache holds (weights, metrics, identity). With a `secagg` record in
        the instruction the weights stay here: the update enters the secure-aggregation session and the
        reply carries the mechanism and epsilon (public to the ledger anyway) but not the example count,
        which is summed under the mask.
        """
        secagg_record = message.content.config_records.get(s.SECAGG_RECORD)
        if secagg_record is None:
            return Message(trained, reply_to=message)
        global_arrays: ArrayRecord = message.content[p.ARRAYS_RECORD]
        new_arrays: ArrayRecord = trained[p.ARRAYS_RECORD]
        names = list(global_arrays.keys())
        update = flatten_update([new_arrays[n].numpy() for n in names], [global_arrays[n].numpy() for n in names])
        metrics = trained[p.METRICS_RECORD]
        examples = int(metrics[p.NUM_EXAMPLES])  # type: ignore[arg-type]
        advertisement = self.secagg.start(round_id, secagg_record, update, examples)
        public_metrics = MetricRecord({k: v for k, v in metrics.items() if k != p.NUM_EXAMPLES})
        return Message(
            RecordDict(
                {
                    p.METRICS_RECORD: public_metrics,
                    p.IDENTITY_RECORD: self._identity(),
                    s.SECAGG_RECORD: advertisement,
                }
            ),
            reply_to=message,
        )

    # -- secure-aggregation stages (federation/secagg_protocol.py) ------------------------------

    def secagg_stage(self, message: Message) -> Message:
        stage = message.metadata.message_type
        handlers = {
            s.SHARE_KEYS_MESSAGE_TYPE: self.secagg.share_keys,
            s.MASKED_INPUT_MESSAGE_TYPE: self.secagg.masked_input,
            s.CONFIRM_MESSAGE_TYPE: self.secagg.confirm,
            s.UNMASK_MESSAGE_TYPE: self.secagg.unmask,
        }
        record = message.content.config_records.get(s.SECAGG_RECORD)
        if stage not in handlers or record is None:
            raise SecureAggregationRefused(f"{stage} is not a secure-aggregation stage this partner knows")
        reply = handlers[stage](record)
        return Message(RecordDict({s.SECAGG_RECORD: reply, p.IDENTITY_RECORD: self._identity()}), reply_to=message)

    def _identity(self) -> ConfigRecord:
        return ConfigRecord({p.PARTNER_ID: self.settings.partner_id, s.IDENTITY_KEY: self.secagg.identity_public_key})


def load_partner_data(corpus: Path, config: Path | None = None) -> Any:
    """The partner's Tier 3 training data (features and outcomes), extracted and featurised locally."""
    from mshale_fl.training.data import load_training_data

    data = load_training_data(corpus, config_path=config)
    if len(data.targets) == 0:
        reasons = ", ".join(f"{code} {count}" for code, count in sorted(data.skip_reasons().items()))
        raise UserFacingError(
            f"{corpus} holds no Tier 3 protocols with outcomes; nothing to train on"
            + (f" (left out: {reasons})" if reasons else "")
            + "; a protocol trains when it is labelled `efficiency`, has an `outcome` in [0, 1] "
            "and the policy allows Tier 3"
        )
    return data


_trainers: dict[tuple[Any, ...], PartnerTrainer] = {}
_trainers_lock = threading.Lock()


def trainer_for(context: Context) -> PartnerTrainer:
    """The process's trainer for this node config (one per partner; data is loaded once)."""
    return trainer_for_config(dict(context.node_config))


def trainer_for_config(node_config: dict[str, Any]) -> PartnerTrainer:
    settings = PartnerSettings.from_node_config(node_config)
    key = (settings.partner_id, str(settings.corpus), settings.dp_epsilon, str(settings.home), str(settings.config))
    with _trainers_lock:
        trainer = _trainers.get(key)
        if trainer is None:
            trainer = _trainers[key] = PartnerTrainer(settings)
        return trainer


app = ClientApp()


@app.query("dp_plan")
def dp_plan(message: Message, context: Context) -> Message:
    return trainer_for(context).plan(message)


@app.train()
def train(message: Message, context: Context) -> Message:
    return trainer_for(context).train(message)


@app.train("secagg_share_keys")
def secagg_share_keys(message: Message, context: Context) -> Message:
    return trainer_for(context).secagg_stage(message)


@app.train("secagg_masked_input")
def secagg_masked_input(message: Message, context: Context) -> Message:
    return trainer_for(context).secagg_stage(message)


@app.train("secagg_confirm")
def secagg_confirm(message: Message, context: Context) -> Message:
    return trainer_for(context).secagg_stage(message)


@app.train("secagg_unmask")
def secagg_unmask(message: Message, context: Context) -> Message:
    return trainer_for(context).secagg_stage(message)


__all__ = [
    "PartnerSettings",
    "PartnerTrainer",
    "ReplyCache",
    "TrainingRefused",
    "app",
    "load_partner_data",
    "trainer_for",
    "trainer_for_config",
]
