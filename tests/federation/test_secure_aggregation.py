"""Secure aggregation over the real grid: the server unmasks only the sum, and survives dropouts at every stage.

Each test runs real partner nodes (DP-SGD on their corpora) and the real server over a throw-away
RabbitMQ vhost. Expected sums come from the partners' own reply caches, which hold the weights each
partner trained but never sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter
from pathlib import Path

import aio_pika
import numpy as np
import pytest
from flwr.app import Context, Message

from mshale_fl.agents.mishale.aggregation.secure import SecureAggregation, _SecureRound
from mshale_fl.agents.partner.client_app import ReplyCache
from mshale_fl.agents.partner.client_app import app as partner_app
from mshale_fl.federation import protocol as p
from mshale_fl.federation import secagg_protocol as s
from mshale_fl.federation.wire import decode_message
from mshale_fl.ledger import round_id_for
from mshale_fl.secagg import wire
from mshale_fl.training.model import load_model

from .harness import Federation, events_of
from .support import running_nodes

pytestmark = pytest.mark.rabbitmq

STAGES = [
    p.TRAIN_MESSAGE_TYPE,
    s.SHARE_KEYS_MESSAGE_TYPE,
    s.MASKED_INPUT_MESSAGE_TYPE,
    s.CONFIRM_MESSAGE_TYPE,
    s.UNMASK_MESSAGE_TYPE,
]
QUICK = s.SecAggSettings(stage_timeout=20.0)


class StageDropout:
    """A partner's ClientApp that stops answering (an error reply, as a crash mid-stage gives) at `stage`."""

    def __init__(self, stage: str | None = None) -> None:
        self.stage = stage
        self.received: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, message: Message, context: Context) -> Message:
        message_type = message.metadata.message_type
        with self.lock:
            self.received[message_type] += 1
        if message_type == self.stage:
            raise RuntimeError(f"partner dropped out at {message_type}")
        return partner_app(message, context)


def _nodes(federation: Federation, apps: dict[str, StageDropout]) -> list:
    nodes = []
    for partner, app in apps.items():
        node = federation.node(partner, dp_epsilon=2.0)
        node.app = app  # type: ignore[assignment]
        # Dropouts here are error replies, not silence: a slow heartbeat keeps a partner that is
        # merely slow (a loaded CI machine) from being taken for gone while it plans or trains.
        node.heartbeat_seconds = 2.0
        nodes.append(node)
    return nodes


def _run(federation: Federation, apps: dict[str, StageDropout], **config):  # type: ignore[no-untyped-def]
    for partner in apps:
        federation.register(partner)
    with federation.grid() as grid, running_nodes(_nodes(federation, apps)):
        grid.wait_for_partners(len(apps), timeout=20)
        settings = dict(rounds=1, min_clients=3, secagg=QUICK)
        settings.update(config)
        return federation.training(grid, federation.config(**settings)).run()


def _expected_weights(federation: Federation, run_id: str, server_round: int, partners: list[str], base) -> dict:  # type: ignore[no-untyped-def]
    """The example-weighted mean of what the partners trained (from their own reply caches)."""
    round_id = round_id_for(run_id, server_round)
    total_examples, weighted = 0, {}
    for partner in partners:
        cached = ReplyCache(federation.partner_home(partner), partner).get(round_id)
        assert cached is not None, f"{partner} trained nothing for {round_id}"
        _digest, content = cached
        examples = int(content[p.METRICS_RECORD][p.NUM_EXAMPLES])
        total_examples += examples
        for name, array in content[p.ARRAYS_RECORD].items():
            delta = array.numpy().astype(np.float64) - base[name].numpy().astype(np.float64)
            weighted[name] = weighted.get(name, 0.0) + examples * delta
    return {name: base[name].numpy().astype(np.float64) + value / total_examples for name, value in weighted.items()}


def _assert_round_model_is_the_mean(federation: Federation, outcome, partners: list[str]) -> None:  # type: ignore[no-untyped-def]
    from flwr.app import ArrayRecord

    base_model, _ = load_model(federation.model_path)
    base = ArrayRecord(base_model.state_dict())
    record = outcome.state.rounds[0]
    assert not record.failed and record.participants == sorted(partners)
    trained, _ = load_model(federation.server_home / "federation" / "runs" / outcome.state.run_id / record.model_file)
    expected = _expected_weights(federation, outcome.state.run_id, 1, partners, base)
    for name, tensor in trained.state_dict().items():
        # float32 storage and quantisation (resolution ~1e-7 here) are the only differences.
        np.testing.assert_allclose(tensor.numpy(), expected[name], atol=2e-6, rtol=0)
    assert record.metrics["num_examples"] == sum(
        int(ReplyCache(federation.partner_home(q), q).get(round_id_for(outcome.state.run_id, 1))[1]["metrics"][p.NUM_EXAMPLES])  # type: ignore[index]
        for q in partners
    )


def test_the_new_model_is_exactly_the_weighted_mean_of_the_updates_the_server_never_saw(federation: Federation) -> None:
    apps = {partner: StageDropout() for partner in ("lab-a", "lab-b", "lab-c")}
    holdout = federation.corpus("mishale-holdout")
    outcome = _run(federation, apps, eval_corpus=holdout)
    _assert_round_model_is_the_mean(federation, outcome, list(apps))
    # The loss operators see is the round model's, on Mishale's own hold-out data.
    from flwr.app import ArrayRecord

    from mshale_fl.training.evaluation import HoldoutEvaluation

    record = outcome.state.rounds[0]
    model, _ = load_model(federation.server_home / "federation" / "runs" / outcome.state.run_id / record.model_file)
    assert record.metrics["eval_loss"] == pytest.approx(HoldoutEvaluation(holdout).loss(ArrayRecord(model.state_dict())))
    for app in apps.values():
        # Every stage exactly once (the plan may be asked again while the cohort forms).
        assert {stage: app.received[stage] for stage in STAGES} == dict.fromkeys(STAGES, 1)


@pytest.mark.parametrize("stage", STAGES)
def test_a_partner_dropping_out_at_any_stage_is_survived(federation: Federation, stage: str) -> None:
    apps = {partner: StageDropout() for partner in ("lab-a", "lab-b", "lab-c", "lab-d")}
    apps["lab-d"].stage = stage
    outcome = _run(federation, apps)
    # Gone before its masked input arrived: not in the sum. Gone after: its update is in the sum,
    # unmasked from the others' shares of its self-mask seed.
    in_sum = ["lab-a", "lab-b", "lab-c"] + (
        ["lab-d"] if STAGES.index(stage) > STAGES.index(s.MASKED_INPUT_MESSAGE_TYPE) else []
    )
    _assert_round_model_is_the_mean(federation, outcome, in_sum)
    assert outcome.state.rounds[0].metrics["secagg_threshold"] == 3


@pytest.mark.parametrize("stage", [s.SHARE_KEYS_MESSAGE_TYPE, s.MASKED_INPUT_MESSAGE_TYPE, s.CONFIRM_MESSAGE_TYPE])
def test_below_the_threshold_the_round_fails_and_no_one_is_unmasked(federation: Federation, stage: str) -> None:
    apps = {partner: StageDropout() for partner in ("lab-a", "lab-b", "lab-c", "lab-d")}
    apps["lab-c"].stage = apps["lab-d"].stage = stage  # 2 left, threshold 3
    from mshale_fl.agents.mishale.server_app import TrainingFailed

    with pytest.raises(TrainingFailed, match="no successful round"):
        _run(federation, apps, min_clients=2)
    # No partner was ever asked to reveal a share.
    assert all(app.received[s.UNMASK_MESSAGE_TYPE] == 0 for app in apps.values())


class _Capture:
    """A queue bound to every grid reply: what an observer of the broker sees."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.name = "test.capture.grid-replies"

    async def _declare(self) -> None:
        connection = await aio_pika.connect(self.broker_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange("mshale.grid")
            queue = await channel.declare_queue(self.name)
            await queue.bind(exchange, routing_key="*.grid.reply")

    async def _drain(self) -> list[Message]:
        connection = await aio_pika.connect(self.broker_url)
        messages = []
        async with connection:
            channel = await connection.channel()
            queue = await channel.get_queue(self.name)
            while (delivery := await queue.get(no_ack=True, fail=False)) is not None:
                messages.append(decode_message(delivery.body))
        return messages

    def declare(self) -> None:
        asyncio.run(self._declare())

    def drain(self) -> list[Message]:
        return asyncio.run(self._drain())


def test_on_the_bus_partners_send_no_weights_and_masked_updates_look_uniform(federation: Federation, broker_url: str) -> None:
    partners = ("lab-a", "lab-b", "lab-c")
    for partner in partners:
        federation.register(partner)
    apps = {partner: StageDropout() for partner in partners}
    capture = _Capture(broker_url)
    with federation.grid() as grid, running_nodes(_nodes(federation, apps)):
        capture.declare()
        grid.wait_for_partners(3, timeout=20)
        outcome = federation.training(grid, federation.config(rounds=1, min_clients=3, secagg=QUICK)).run()
    replies = capture.drain()
    by_type = Counter(reply.metadata.message_type for reply in replies)
    assert by_type[p.TRAIN_MESSAGE_TYPE] == 3 and by_type[s.MASKED_INPUT_MESSAGE_TYPE] == 3
    masked_digests = set()
    for reply in replies:
        content = reply.content
        assert not content.array_records, "a partner sent weights"
        for record in content.metric_records.values():
            assert p.NUM_EXAMPLES not in record, "a partner sent its example count in the clear"
        if reply.metadata.message_type == s.MASKED_INPUT_MESSAGE_TYPE:
            data = content.config_records[s.SECAGG_RECORD][s.MASKED]
            masked_digests.add(hashlib.sha256(data).hexdigest())
            vector = wire.decode_vector(data, QUICK.modulus_bits, len(data) * 8 // QUICK.modulus_bits)
            # Uniform in Z_2^48: the top byte of each element takes all 256 values about equally.
            top = (vector >> np.uint64(QUICK.modulus_bits - 8)).astype(np.int64)
            counts = np.bincount(top, minlength=256)
            expected = len(top) / 256
            chi_square = float(((counts - expected) ** 2 / expected).sum())
            assert chi_square < 340, chi_square  # 255 degrees of freedom: p ~ 0.0003 at 340
            # The plain update's top bytes would be all 0x00 or 0xff (small two's-complement numbers).
            assert counts[0] + counts[255] < 0.05 * len(top)
    # update.masked events name exactly the masked bytes the broker carried.
    events = [e for e in events_of(broker_url) if e.type == "update.masked" and e.payload.run_id == outcome.state.run_id]
    assert {e.payload.digest for e in events} == masked_digests and len(events) == 3


class _SubstitutingRound(_SecureRound):
    """A dishonest server that swaps lab-b's round keys for its own, signed with a key it controls."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from mshale_fl.secagg.identity import public_key_bytes
        from mshale_fl.secagg.keys import RoundKeys

        self.fake_identity = Ed25519PrivateKey.generate()
        self.fake_public = public_key_bytes(self.fake_identity)
        self.fake_keys = RoundKeys.generate()

    def _advertisements(self, replies, epsilons):  # type: ignore[no-untyped-def]
        advertisements = super()._advertisements(replies, epsilons)  # checked against the real keys
        if "lab-b" in advertisements:
            # ... then swapped, with the identity key forwarded to the others swapped to match.
            advertisements["lab-b"] = self.fake_keys.advertise("lab-b", self.config.round_id, self.fake_identity)
            self.identity_keys = {**self.identity_keys, "lab-b": self.fake_public}
        return advertisements


class _SubstitutingAggregation(SecureAggregation):
    def begin(self, training_round):  # type: ignore[no-untyped-def]
        return _SubstitutingRound(self.settings, self.identities, training_round)


def test_a_server_substituting_a_partners_keys_is_caught_by_the_partners_pins(federation: Federation) -> None:
    from mshale_fl.agents.mishale.identities import LedgerIdentities
    from mshale_fl.agents.mishale.server_app import FederatedTraining, TrainingFailed

    partners = ("lab-a", "lab-b", "lab-c")
    apps = {partner: StageDropout() for partner in partners}
    for partner in partners:
        federation.register(partner)
    with federation.grid() as grid, running_nodes(_nodes(federation, apps)):
        grid.wait_for_partners(3, timeout=20)
        # An honest first run: every partner pins the others' identity keys.
        federation.training(grid, federation.config(rounds=1, min_clients=3, secagg=QUICK)).run()
        from mshale_fl.agents.mishale.server_app import AmqpParticipants, GridEvents, LedgerBudgets

        config = federation.config(rounds=1, min_clients=2, secagg=QUICK, model_path=_published(federation, 1))
        identities = LedgerIdentities(federation.engine)
        dishonest = FederatedTraining(
            grid,
            config,
            participants=AmqpParticipants(grid),
            budgets=LedgerBudgets(federation.engine),
            events=GridEvents(grid),
            identities=identities,
            aggregation=_SubstitutingAggregation(QUICK, identities),
        )
        with pytest.raises(TrainingFailed):
            dishonest.run()
    # lab-a and lab-c refused at the share-keys stage; nobody masked, nobody revealed anything.
    for partner in ("lab-a", "lab-c"):
        assert apps[partner].received[s.MASKED_INPUT_MESSAGE_TYPE] == 1  # the honest run's only
        assert apps[partner].received[s.UNMASK_MESSAGE_TYPE] == 1


def _published(federation: Federation, version: int) -> Path:
    path = federation.server_home / "models" / f"mshale1_v{version}.pt"
    assert path.exists()
    return path


def test_a_reply_with_keys_not_signed_by_the_registered_identity_is_a_dropout(federation: Federation) -> None:
    """The server checks advertisements too: keys re-signed by someone else never reach the other partners."""

    class ForgingApp(StageDropout):
        def __call__(self, message: Message, context: Context) -> Message:
            reply = super().__call__(message, context)
            if message.metadata.message_type == p.TRAIN_MESSAGE_TYPE:
                from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

                from mshale_fl.secagg.keys import RoundKeys

                record = reply.content.config_records[s.SECAGG_RECORD]
                forged = RoundKeys.generate().advertise("lab-d", record[s.ROUND_ID], Ed25519PrivateKey.generate())
                record[s.ADVERTISEMENT] = wire.encode_advertisement(forged)
            return reply

    apps = {partner: StageDropout() for partner in ("lab-a", "lab-b", "lab-c")}
    apps["lab-d"] = ForgingApp()
    outcome = _run(federation, apps)
    _assert_round_model_is_the_mean(federation, outcome, ["lab-a", "lab-b", "lab-c"])
    assert outcome.state.rounds[0].metrics["secagg_advertised"] == 3
    assert apps["lab-d"].received[s.SHARE_KEYS_MESSAGE_TYPE] == 0


def test_the_partner_refuses_a_minority_threshold() -> None:
    from flwr.app import ConfigRecord

    from mshale_fl.secagg.protocol import RoundConfig
    from mshale_fl.secagg.quantize import QuantizationConfig

    config = RoundConfig(round_id=b"r" * 32, partner_ids=("a", "b", "c", "d"), threshold=2, vector_length=5)
    record: ConfigRecord = s.round_record(config, QuantizationConfig())
    with pytest.raises(s.SecAggConfigError, match="not a strict majority"):
        s.parse_round_record(record, "a", vector_length=5)
    with pytest.raises(s.SecAggConfigError, match="not in the round's cohort"):
        s.parse_round_record(s.round_record(RoundConfig(b"r" * 32, ("b", "c", "d"), 2, 5), QuantizationConfig()), "a", 5)
    with pytest.raises(s.SecAggConfigError, match="strict majority"):
        s.SecAggSettings(threshold_fraction=0.5)

