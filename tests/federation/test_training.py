"""Whole runs in one process: server on the AMQP grid, partner nodes in threads, the ledger worker."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from opacus.accountants import RDPAccountant

from mshale_fl.ledger.budgets import budget_status
from mshale_fl.training.model import load_model, model_digest

from .harness import Federation, events_of
from .support import running_nodes

pytestmark = pytest.mark.rabbitmq

PARTNERS = ("lab-a", "lab-b", "lab-c")


def _wait_committed(federation: Federation, partner_id: str, rounds: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with federation.engine.connect() as connection:
            spends = budget_status(connection, partner_id, 1).spends
        if sum(s.status == "committed" for s in spends) >= rounds:
            return
        assert time.monotonic() < deadline, f"{partner_id}: spends {[s.status for s in spends]}"
        time.sleep(0.1)


def test_three_partners_three_rounds_with_dp_budgets_and_events(federation: Federation, broker_url: str) -> None:
    for partner in PARTNERS:
        federation.register(partner)
    with (
        federation.ledger_worker(),
        federation.grid() as grid,
        running_nodes([federation.node(p, dp_epsilon=0.5) for p in PARTNERS]),
    ):
        outcome = federation.training(grid, federation.config(rounds=3, min_clients=3, dp_epsilon=1.0)).run()
        for partner in PARTNERS:
            _wait_committed(federation, partner, 3)

    assert outcome.published_path is not None and outcome.published_path.exists()
    published, metadata = load_model(outcome.published_path)
    assert (metadata.version, metadata.parent, metadata.rounds) == (1, 0, 3)

    events = events_of(broker_url)
    run = [
        e for e in events if getattr(e.payload, "run_id", None) == outcome.state.run_id or e.type == "model.published"
    ]
    assert Counter(e.type for e in run) == {
        "round.started": 3,
        "update.masked": 9,
        "round.completed": 3,
        "model.published": 1,
    }
    for event in run:
        if event.type == "round.started":
            assert sorted(event.payload.cohort) == list(PARTNERS) and event.payload.model_version == 1
        if event.type == "round.completed":
            assert not event.payload.failed and sorted(event.payload.participants) == list(PARTNERS)
        if event.type == "update.masked":
            assert event.partner_id in PARTNERS
    (announcement,) = [e for e in run if e.type == "model.published"]
    assert announcement.payload.sha256 == model_digest(published) == outcome.published_digest
    assert announcement.payload.model_version == 1 and announcement.payload.parent_version == 0

    for partner in PARTNERS:
        with federation.engine.connect() as connection:
            status = budget_status(connection, partner, 1)
        assert [s.status for s in status.spends] == ["committed"] * 3
        accountant = RDPAccountant()
        accountant.history = [s.mechanism.as_history_entry() for s in status.spends]
        opacus_epsilon = accountant.get_epsilon(status.delta)
        assert status.epsilon_committed == pytest.approx(opacus_epsilon, rel=1e-9)
        assert opacus_epsilon <= 0.5  # min(server 1.0, partner 0.5): the schedule fits the smaller budget
        last_report = [e for e in run if e.type == "update.masked" and e.partner_id == partner][-1]
        assert last_report.payload.epsilon_spent == pytest.approx(opacus_epsilon, rel=1e-9)
