"""Rounds that do not go to plan: budget refusals, pauses, partners that drop out, a server stopped mid-run."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from mshale_fl.agents.mishale.server_app import TrainingFailed

from mshale_fl.federation import PartnerNode
from mshale_fl.ledger.access import may_train
from mshale_fl.ledger.accounting import Mechanism
from mshale_fl.ledger.budgets import budget_status
from mshale_fl.ledger.errors import NoBudget
from mshale_fl.training.planning import PartnerAccountant

from .harness import Federation, events_of
from .support import GatedApp, running_nodes

pytestmark = pytest.mark.rabbitmq


def _run_events(broker_url: str, run_id: str) -> list:
    return [e for e in events_of(broker_url) if getattr(e.payload, "run_id", None) == run_id]


def _committed_rounds(federation: Federation, partner_id: str) -> list[str]:
    try:
        with federation.engine.connect() as connection:
            return [s.status for s in budget_status(connection, partner_id, 1).spends]
    except NoBudget:
        return []


def test_partners_whose_budget_cannot_cover_the_round_are_left_out(federation: Federation, broker_url: str) -> None:
    federation.register("lab-a")
    federation.register("lab-b")
    federation.register("lab-c")
    federation.register("lab-poor", epsilon=0.05)  # the ledger's budget for model version 1 is tiny
    federation.register("lab-spent")
    # lab-spent has already spent its own budget on model version 1 (its accountant on disk says so).
    spent = PartnerAccountant("lab-spent", 1, delta=1e-5, home=federation.partner_home("lab-spent"))
    spent.record(Mechanism(0.6, 0.5, 50), round_id="earlier-run/1")
    spent_before = list(spent.history)
    partners = ["lab-a", "lab-b", "lab-c", "lab-poor", "lab-spent"]
    with federation.grid() as grid, running_nodes([federation.node(p, dp_epsilon=0.5) for p in partners]):
        grid.wait_for_partners(5, timeout=10)
        outcome = federation.training(grid, federation.config(rounds=1, min_clients=3)).run()

    (started,) = [e for e in _run_events(broker_url, outcome.state.run_id) if e.type == "round.started"]
    assert started.payload.cohort == ["lab-a", "lab-b", "lab-c"]
    assert outcome.state.rounds[0].participants == ["lab-a", "lab-b", "lab-c"]
    # Refused before any training: the ledger has nothing for lab-poor, lab-spent's accountant is unchanged
    # and it never cached a reply.
    assert _committed_rounds(federation, "lab-poor") == []
    assert (
        PartnerAccountant("lab-spent", 1, delta=1e-5, home=federation.partner_home("lab-spent")).history == spent_before
    )
    assert not (federation.partner_home("lab-spent") / "federation" / "partner" / "lab-spent" / "replies").exists()


def test_a_budget_spent_below_ten_percent_pauses_the_partner(federation: Federation, broker_url: str) -> None:
    partners = ["lab-a", "lab-b", "lab-c"]
    for partner in partners:
        federation.register(partner, epsilon=0.5)  # the ledger's total equals the run's budget
    with (
        federation.ledger_worker(),
        federation.grid() as grid,
        running_nodes([federation.node(p, dp_epsilon=0.5) for p in partners]),
    ):
        federation.training(grid, federation.config(rounds=3, min_clients=3, dp_epsilon=0.5)).run()
        deadline = time.monotonic() + 30
        while not all(_committed_rounds(federation, p) == ["committed"] * 3 for p in partners):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for partner in partners:
            with federation.engine.connect() as connection:
                status = budget_status(connection, partner, 1)
                decision = may_train(connection, partner, 1)
            assert status.state == "paused" and status.fraction_remaining < 0.10
            assert status.epsilon_committed <= 0.5
            assert not decision.allowed and decision.code == "budget.paused"
        # The grid no longer offers paused partners to a strategy.
        assert grid.get_node_ids() == []
        deadline = time.monotonic() + 20
        while True:
            alerts = Counter(
                (e.type, e.partner_id) for e in events_of(broker_url) if e.type in ("budget.low", "partner.paused")
            )
            if len(alerts) == 6:
                break
            assert time.monotonic() < deadline, alerts
            time.sleep(0.2)
    assert all(count == 1 for count in alerts.values())


def _gated_node(federation: Federation, partner_id: str, gate: GatedApp) -> PartnerNode:
    node = federation.node(partner_id, dp_epsilon=0.5)
    node.app = gate  # type: ignore[assignment]
    return node


def test_a_partner_killed_mid_round_does_not_stop_the_round_when_enough_remain(
    federation: Federation, broker_url: str
) -> None:
    from mshale_fl.agents.partner.client_app import app

    partners = ["lab-a", "lab-b", "lab-c", "lab-d"]
    for partner in partners:
        federation.register(partner)
    gate = GatedApp(app, from_round=1)
    nodes = [federation.node(p, dp_epsilon=0.5) for p in partners[:3]] + [_gated_node(federation, "lab-d", gate)]
    with federation.ledger_worker(), federation.grid() as grid, running_nodes(nodes) as running:
        grid.wait_for_partners(4, timeout=10)
        result: dict = {}
        server = threading.Thread(
            target=lambda: result.update(
                outcome=federation.training(grid, federation.config(rounds=1, min_clients=3)).run()
            )
        )
        started = time.monotonic()
        server.start()
        assert gate.entered.wait(30)
        running[3].crash()  # lab-d vanishes while training: no reply, no bye
        server.join(60)
        gate.release.set()
        elapsed = time.monotonic() - started
        outcome = result["outcome"]
        record = outcome.state.rounds[0]
        assert not record.failed and record.participants == ["lab-a", "lab-b", "lab-c"]
        assert record.cohort == partners and record.metrics["dropouts"] == 1.0
        assert elapsed < 30  # noticed by missed heartbeats, not by the 60 s round timeout
        # lab-d trained (or may have): the ledger commits its started reservation all the same.
        deadline = time.monotonic() + 20
        while _committed_rounds(federation, "lab-d") != ["committed"]:
            assert time.monotonic() < deadline, _committed_rounds(federation, "lab-d")
            time.sleep(0.1)
    (completed,) = [e for e in _run_events(broker_url, outcome.state.run_id) if e.type == "round.completed"]
    assert not completed.payload.failed and completed.payload.participants == ["lab-a", "lab-b", "lab-c"]
    assert outcome.published_path is not None


def test_too_few_updates_fail_the_round_cleanly_and_keep_the_model(federation: Federation, broker_url: str) -> None:
    from mshale_fl.agents.partner.client_app import app

    partners = ["lab-a", "lab-b", "lab-c"]
    for partner in partners:
        federation.register(partner)
    gate = GatedApp(app, from_round=2)
    nodes = [federation.node(p, dp_epsilon=0.5) for p in partners[:2]] + [_gated_node(federation, "lab-c", gate)]
    with federation.grid() as grid, running_nodes(nodes) as running:
        result: dict = {}

        def serve() -> None:
            result["outcome"] = federation.training(grid, federation.config(rounds=2, min_clients=3)).run()

        server = threading.Thread(target=serve)
        server.start()
        assert gate.entered.wait(30)
        running[2].crash()
        server.join(60)
        gate.release.set()
    outcome = result["outcome"]
    first, second = outcome.state.rounds
    assert not first.failed and first.model_file == "round-1.pt"
    assert second.failed and second.model_file is None and second.participants == ["lab-a", "lab-b"]
    assert outcome.state.current_model_file == "round-1.pt"
    events = _run_events(broker_url, outcome.state.run_id)
    completed = {e.payload.round: e.payload for e in events if e.type == "round.completed"}
    assert completed[2].failed and completed[2].participants == ["lab-a", "lab-b"]
    assert not completed[1].failed
    # The published model is round 1's: the failed round changed nothing.
    from mshale_fl.training.model import load_model, model_digest

    round_one, _ = load_model(federation.server_home / "federation" / "runs" / outcome.state.run_id / "round-1.pt")
    assert outcome.published_digest == model_digest(round_one)


def test_a_run_where_no_round_succeeds_publishes_nothing(federation: Federation) -> None:
    from mshale_fl.agents.partner.client_app import app

    for partner in ("lab-a", "lab-b"):
        federation.register(partner)
    gate = GatedApp(app, from_round=1)
    nodes = [federation.node("lab-a", dp_epsilon=0.5), _gated_node(federation, "lab-b", gate)]
    with federation.grid() as grid, running_nodes(nodes):
        try:
            with pytest.raises(TrainingFailed, match="no successful round"):
                federation.training(grid, federation.config(rounds=1, min_clients=2, round_timeout=3)).run()
        finally:
            gate.release.set()
    assert not (federation.server_home / "models").exists()
