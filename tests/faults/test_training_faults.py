"""Training under fire: a partner killed during each secure-aggregation stage, then every connection cut.

tests/federation/test_secure_aggregation.py covers partners that answer a stage with an error. Here
the partner dies: when the stage's instruction reaches it, its node is crashed (cancelled on its
loop thread: the connection goes without a bye and without an answer, its ClientApp never runs
for that stage) and the server must notice it gone by its missing heartbeats. The partner is then
started again (a new node, its in-memory state gone, its files kept), as an operator restarts
`join`, and takes part in later rounds.

One run of six rounds, one fault per round, so the setup (worker processes, partner data, the
first privacy plans) is paid once: round r <= 5 kills `PARTNERS[r-1]` at `STAGES[r-1]`; in round 6,
when lab-a starts training, `rabbitmqctl close_all_connections --vhost V` drops every connection
of the run at once (server grid, partner nodes, workers), and the round must still complete with
everyone. The ledger and audit workers run as real `mshale-fl worker` processes beside the
in-process server and nodes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, Message

from mshale_fl.agents.partner import client_app
from mshale_fl.agents.partner.client_app import app as partner_app
from mshale_fl.agents.partner.client_app import trainer_for_config
from mshale_fl.audit.keys import load_signing_key
from mshale_fl.federation import PartnerNode
from mshale_fl.federation import secagg_protocol as s
from mshale_fl.testing.invariants import check_invariants
from mshale_fl.training.model import load_model

from federation.harness import Federation, stream_events  # tests/ is on sys.path: the federation suite's harness
from federation.support import RunningNode
from federation.test_secure_aggregation import QUICK, STAGES, _expected_weights

from .support import FaultWorkers, rabbitmqctl, supervised, wait_at_rest

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq, pytest.mark.slow]

PARTNERS = ("lab-a", "lab-b", "lab-c", "lab-d", "lab-e")
KILLS = {server_round: (PARTNERS[server_round - 1], stage) for server_round, stage in enumerate(STAGES, start=1)}
CUT_ROUND = len(KILLS) + 1
CUT_BY = "lab-a"
HEARTBEAT = 1.0
"""Seconds between a node's hellos; gone after 3 missed, so a killed partner is noticed in about 3 s."""


class DiesAtStage:
    """The partner's ClientApp, except that at `stage` of `server_round` it signals `reached` and never answers."""

    def __init__(self, stage: str, server_round: int) -> None:
        self.stage = stage
        self.server_round = server_round
        self.reached = threading.Event()
        self._never = threading.Event()

    def __call__(self, message: Message, context: Context) -> Message:
        metadata = message.metadata
        if metadata.message_type == self.stage and metadata.group_id == str(self.server_round):
            self.reached.set()
            self._never.wait(600)  # the node is crashed meanwhile; this thread is a daemon
            raise RuntimeError("crashed")
        return partner_app(message, context)


class CutsConnectionsAt:
    """The partner's ClientApp, except that on `train` of `server_round` it first has every
    connection of the vhost closed (taking as long as rabbitmqctl takes), then trains as usual."""

    def __init__(self, vhost: str, server_round: int) -> None:
        self.vhost = vhost
        self.server_round = server_round
        self.cut = threading.Event()

    def __call__(self, message: Message, context: Context) -> Message:
        metadata = message.metadata
        if metadata.message_type == "train" and metadata.group_id == str(self.server_round) and not self.cut.is_set():
            self.cut.set()
            rabbitmqctl("close_all_connections", "--vhost", self.vhost, "fault suite: during a training round")
        return partner_app(message, context)


class Partners:
    """The partner nodes of the run: started, killed when their stage comes, started again."""

    def __init__(self, make_node: Callable[[str], PartnerNode], rounds_done: Callable[[], int], cutter: CutsConnectionsAt) -> None:
        self.make_node = make_node
        self.rounds_done = rounds_done
        self.cutter = cutter
        self.running: dict[str, RunningNode] = {}
        self.killed: dict[int, str] = {}
        self.restarted: list[RunningNode] = []
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        for server_round, (partner, stage) in KILLS.items():
            node = self.make_node(partner)
            app = node.app = DiesAtStage(stage, server_round)  # type: ignore[assignment]
            self.running[partner] = RunningNode(node)
            threading.Thread(target=self._kill_when_reached, args=(server_round, partner, app), daemon=True).start()
        for node in self.running.values():
            node.wait_ready()

    def _kill_when_reached(self, server_round: int, partner: str, app: DiesAtStage) -> None:
        if not app.reached.wait(600):
            return
        with self._lock:
            self.running[partner].crash()
            self.killed[server_round] = partner
        # Started again once the round is over: restarted at once, it would take the instruction
        # back from its queue and answer in time (also survived, but not the dropout path).
        while self.rounds_done() < server_round and not self._stopped:
            time.sleep(0.1)
        with self._lock:
            if self._stopped:
                return
            # A restarted `join` is a new process: nothing of the old one's memory survives.
            for key in [key for key in client_app._trainers if key[0] == partner]:
                del client_app._trainers[key]
            node = self.make_node(partner)
            if partner == CUT_BY:
                node.app = self.cutter  # type: ignore[assignment]
            replacement = RunningNode(node)
            self.running[partner] = replacement
            self.restarted.append(replacement)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for node in self.running.values():
                if node.loop.alive:
                    try:
                        node.stop()
                    except Exception:
                        node.crash()


async def test_partners_killed_at_each_secure_aggregation_stage_and_connections_cut_in_training(
    broker_url: str, vhost: str, tmp_path: Path
) -> None:
    federation = Federation(broker_url, tmp_path)
    for partner in PARTNERS:
        federation.register(partner)

    def make_node(partner: str) -> PartnerNode:
        node = federation.node(partner, dp_epsilon=4.0)
        node.heartbeat_seconds = HEARTBEAT
        return node

    workers = FaultWorkers(broker_url, federation.ledger_url, tmp_path / "mishale", roles=("ledger", "audit"))
    # As `join` does before it connects: corpus, torch and a first privacy plan now, not on the first
    # instruction, where (every node sharing this process) it would starve the heartbeats.
    warming = asyncio.gather(*(asyncio.to_thread(trainer_for_config(make_node(p).node_config).warm_up) for p in PARTNERS))
    async with supervised(workers):
        await warming
        def rounds_done() -> int:
            runs = federation.server_home / "federation" / "runs"
            states = list(runs.glob("*/state.json")) if runs.exists() else []
            return len(json.loads(states[0].read_text())["rounds"]) if states else 0

        cutter = CutsConnectionsAt(vhost, CUT_ROUND)
        partners = Partners(make_node, rounds_done, cutter)

        def train() -> object:
            with federation.grid() as grid:
                try:
                    partners.start()
                    grid.wait_for_partners(len(PARTNERS), timeout=30)
                    config = federation.config(rounds=CUT_ROUND, min_clients=3, secagg=QUICK)
                    return federation.training(grid, config).run()
                finally:
                    partners.stop()

        outcome = await asyncio.to_thread(train)
        assert partners.killed == {server_round: partner for server_round, (partner, _) in KILLS.items()}, partners.killed
        assert cutter.cut.is_set(), f"{CUT_BY} never trained in round {CUT_ROUND}"

        store = workers.store.open(workers)
        await wait_at_rest(broker_url, store, federation.engine, queues=("mshale.ledger", "mshale.audit"), raise_if_failed=workers.reap)
        report = await check_invariants(
            broker_url,
            store,
            load_signing_key(workers.key_file).verifier,
            federation.engine,
            origin=workers.origin,
            partner_homes={partner: federation.partner_home(partner) for partner in PARTNERS},
            inbox_roles=("ledger",),
        )
    print(f"a partner killed at each stage, then connections cut: {report.summary()}")
    assert report.ok, report.summary()
    _assert_every_round_is_the_mean_of_its_survivors(federation, outcome, await stream_events(broker_url))
    assert report.counts["rounds completed"] == CUT_ROUND


def _assert_every_round_is_the_mean_of_its_survivors(federation: Federation, outcome, events: list) -> None:  # type: ignore[no-untyped-def,type-arg]
    """Killed before its masked input arrived: not in the sum. After: in the sum, unmasked from the
    survivors' shares of its self-mask seed. Either way the new model is exactly their weighted mean."""
    run_id = outcome.state.run_id
    cohorts = {e.payload.round: sorted(e.payload.cohort) for e in events
               if e.type == "round.started" and e.payload.run_id == run_id}  # fmt: skip
    run_dir = federation.server_home / "federation" / "runs" / run_id
    base, _ = load_model(federation.model_path)
    assert [record.round for record in outcome.state.rounds] == list(range(1, CUT_ROUND + 1))
    for record in outcome.state.rounds:
        victim, stage = KILLS.get(record.round, (None, s.UNMASK_MESSAGE_TYPE))  # the cut round: nobody lost
        assert (victim or CUT_BY) in cohorts[record.round], f"round {record.round}: {victim or CUT_BY} was not in the cohort"
        survived = STAGES.index(stage) > STAGES.index(s.MASKED_INPUT_MESSAGE_TYPE)
        expected = [p for p in cohorts[record.round] if p != victim or survived]
        assert not record.failed and record.participants == expected, (record.round, stage, record.participants)
        trained, _ = load_model(run_dir / record.model_file)
        weights = _expected_weights(federation, run_id, record.round, expected, ArrayRecord(base.state_dict()))
        for name, tensor in trained.state_dict().items():
            np.testing.assert_allclose(tensor.numpy(), weights[name], atol=2e-6, rtol=0)
        base = trained
