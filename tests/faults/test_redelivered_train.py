"""A `train` instruction delivered again while (or after) the partner trains it, in the same round attempt.

It happens whenever the partner's connection is lost mid-training (test_training_faults.py cuts
every connection in a round): the broker returns the unacked instruction and delivers it again,
while the first delivery's ClientApp call is still running in its thread. The partner must train
the round once (a second training on the same data is a second use of its privacy budget that
nobody counts) and answer both deliveries with the same update and, under secure aggregation, the
same round keys (the server keeps whichever reply came first; a session re-keyed behind its back
cannot take part in the round).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from mshale_fl.agents.partner.client_app import PartnerSettings, PartnerTrainer
from mshale_fl.federation import protocol as p
from mshale_fl.federation import secagg_protocol as s
from mshale_fl.ledger.accounting import Mechanism
from mshale_fl.secagg.protocol import RoundConfig
from mshale_fl.secagg.quantize import QuantizationConfig
from mshale_fl.training.model import initial_model
from mshale_fl.training.planning import plan_noise_multiplier

from federation.corpora import write_corpus  # tests/ is on sys.path: the federation suite's corpora

pytestmark = pytest.mark.faults

PARTNER = "lab-a"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus") / PARTNER
    write_corpus(folder, 24, seed=7)
    return folder


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Flower's runtime (and our node, federation/node.py) sets before messages are built."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


def _trainer(corpus: Path, home: Path) -> PartnerTrainer:
    return PartnerTrainer(PartnerSettings(PARTNER, corpus, 1.0, home))


def _train_message(trainer: PartnerTrainer, *, secagg: bool) -> Message:
    _examples, sample_rate, steps = trainer.round_shape(8, 1)
    mechanism = Mechanism(plan_noise_multiplier(1.0, 1e-5, sample_rate, steps, 1), sample_rate, steps)
    model = initial_model(seed=0)
    config = ConfigRecord({
        p.RUN_ID: "run-redelivered", p.ROUND: 1, p.NUM_ROUNDS: 1, p.MODEL_VERSION: 1, p.SERVER_EPSILON: 1.0,
        p.DELTA: 1e-5, p.LOCAL_EPOCHS: 1, p.BATCH_SIZE: 8, p.LR: 0.05, p.MAX_GRAD_NORM: 1.0, p.PROXIMAL_MU: 0.01,
        **p.mechanism_metrics(mechanism),
    })  # fmt: skip
    content = RecordDict({p.ARRAYS_RECORD: ArrayRecord(model.state_dict()), p.CONFIG_RECORD: config})
    if secagg:
        length = sum(int(t.numel()) for t in model.state_dict().values()) + 1
        round_config = RoundConfig(round_id=b"attempt-1".ljust(32, b"-"), partner_ids=(PARTNER, "lab-b", "lab-c"),
                                   threshold=2, vector_length=length)  # fmt: skip
        content[s.SECAGG_RECORD] = s.round_record(round_config, QuantizationConfig())
    return Message(content, 1, p.TRAIN_MESSAGE_TYPE, group_id="1")


def _twice_at_once(trainer: PartnerTrainer, message: Message) -> list[Message]:
    start = threading.Barrier(2)
    replies: list[Message] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        start.wait()
        try:
            replies.append(trainer.train(message))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return replies


def test_two_deliveries_at_once_train_once_and_answer_the_same_update(corpus: Path, tmp_path: Path) -> None:
    trainer = _trainer(corpus, tmp_path / "home")
    first, second = _twice_at_once(trainer, _train_message(trainer, secagg=False))
    for name in first.content[p.ARRAYS_RECORD].keys():
        # Fresh DP noise per training: equal weights mean one training, answered twice.
        np.testing.assert_array_equal(first.content[p.ARRAYS_RECORD][name].numpy(), second.content[p.ARRAYS_RECORD][name].numpy())


def test_a_delivery_repeated_in_the_same_attempt_gets_the_same_round_keys(corpus: Path, tmp_path: Path) -> None:
    trainer = _trainer(corpus, tmp_path / "home")
    message = _train_message(trainer, secagg=True)
    first, second = _twice_at_once(trainer, message)
    third = trainer.train(message)  # and once more, after both
    keys = {reply.content.config_records[s.SECAGG_RECORD][s.ADVERTISEMENT] for reply in (first, second, third)}
    assert len(keys) == 1, "the partner re-keyed its session within one round attempt"
