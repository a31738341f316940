"""End to end with real processes: `serve`, three `join`s and `worker ledger` on the real RabbitMQ.

The server is killed (SIGKILL) as round 2 starts and started again: it resumes the same run from
the last completed round, and the partners, still running, answer the repeated round.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aio_pika
import pytest
from mshale_fl.broker import EVENTS_EXCHANGE, declare_topology
from mshale_fl.schemas.events import parse_event
from opacus.accountants import RDPAccountant

from mshale_fl.ledger.budgets import budget_status
from mshale_fl.training.model import load_model, model_digest

from .harness import Federation, events_of

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PARTNERS = ("lab-a", "lab-b", "lab-c")


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(args, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)


async def _wait_round_started(broker_url: str, queue_name: str, server_round: int, timeout: float) -> None:
    connection = await aio_pika.connect(broker_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.02)
                continue
            if parse_event(message.body).payload.round == server_round:
                return
        raise AssertionError(f"round {server_round} did not start within {timeout} s")
    finally:
        await connection.close()


async def _watch_round_started(broker_url: str, queue_name: str) -> None:
    connection = await aio_pika.connect(broker_url)
    try:
        await declare_topology(connection, delivery_limit=5)
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=False, auto_delete=False)
        await queue.bind(EVENTS_EXCHANGE, routing_key="*.round.started")
    finally:
        await connection.close()


def test_serve_join_and_ledger_worker_as_processes_survive_a_server_kill(broker_url: str, tmp_path: Path) -> None:
    federation = Federation(broker_url, tmp_path)
    for partner in PARTNERS:
        federation.register(partner)
    base = {
        "MSHALE_BROKER_URL": broker_url,
        "MSHALE_LEDGER_URL": federation.ledger_url,
        "MSHALE_TEST_SYNTHETIC_DATA": "1",
    }
    cli = [sys.executable, "-m", "mshale_fl.cli"]
    asyncio.run(_watch_round_started(broker_url, "test.round-started"))
    logs = tmp_path / "logs"
    logs.mkdir()
    worker = _start(
        [sys.executable, "-m", "mshale_fl.cli", "worker", "ledger"],
        {**base, "MSHALE_HOME": str(tmp_path / "worker")},
        logs / "worker.log",
    )
    server_env = {**base, "MSHALE_HOME": str(federation.server_home)}
    serve_args = [
        *cli, "serve", "--model", str(federation.model_path), "--rounds", "3", "--min-clients", "3",
        "--dp-epsilon", "1.0", "--mu", "0.01", "--round-timeout", "60", "--plan-timeout", "20",
        "--batch-size", "8", "--local-epochs", "2",
    ]  # fmt: skip
    server = _start(serve_args, server_env, logs / "serve-1.log")
    join_args = ["join", "--server", "127.0.0.1:5672", "--tier", "3", "--dp-epsilon", "0.5", "--heartbeat", "1"]
    partners = [
        _start(
            [*cli, *join_args, "--corpus", str(federation.corpus(p)), "--partner-id", p],
            {**base, "MSHALE_HOME": str(federation.partner_home(p))},
            logs / f"{p}.log",
        )
        for p in PARTNERS
    ]
    processes = [worker, server, *partners]
    try:
        asyncio.run(_wait_round_started(broker_url, "test.round-started", 2, timeout=120))
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        state_before = json.loads((federation.server_home / "federation" / "active.json").read_text())
        server = _start(serve_args, server_env, logs / "serve-2.log")
        processes[1] = server
        assert server.wait(180) == 0, (logs / "serve-2.log").read_text()[-4000:]
        for partner in partners:
            partner.send_signal(signal.SIGTERM)
        for partner, name in zip(partners, PARTNERS, strict=True):
            assert partner.wait(30) == 0, (logs / f"{name}.log").read_text()[-3000:]
        deadline = time.monotonic() + 30
        while not all(_statuses(federation, p) == ["committed"] * 3 for p in PARTNERS):
            assert time.monotonic() < deadline, {p: _statuses(federation, p) for p in PARTNERS}
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    assert worker.returncode == 0, (logs / "worker.log").read_text()[-3000:]

    second = (logs / "serve-2.log").read_text()
    assert "server.run_resumed" in second
    run_id = state_before["run_id"]
    state = json.loads((federation.server_home / "federation" / "runs" / run_id / "state.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [1, 2, 3] and state["finished"]
    assert all(not r["failed"] and r["participants"] == list(PARTNERS) for r in state["rounds"])
    published_path = federation.server_home / "models" / "mshale1_v1.pt"
    published, metadata = load_model(published_path)
    assert metadata.version == 1 and metadata.rounds == 3
    assert f"published model version 1 ({model_digest(published)})" in second

    events = [e for e in events_of(broker_url) if getattr(e.payload, "run_id", run_id) == run_id]
    completed = Counter(e.payload.round for e in events if e.type == "round.completed")
    assert set(completed) == {1, 2, 3}
    updates = {(e.payload.round, e.partner_id) for e in events if e.type == "update.masked"}
    assert updates == {(r, p) for r in (1, 2, 3) for p in PARTNERS}
    (announcement,) = [e for e in events if e.type == "model.published"]
    assert announcement.payload.sha256 == model_digest(published)

    for partner in PARTNERS:
        with federation.engine.connect() as connection:
            status = budget_status(connection, partner, 1)
        accountant = RDPAccountant()
        accountant.history = [s.mechanism.as_history_entry() for s in status.spends]
        assert len(status.spends) == 3  # the repeated round 2 reused its reservation
        assert status.epsilon_committed == pytest.approx(accountant.get_epsilon(status.delta), rel=1e-9)
        assert status.epsilon_committed <= 0.5
        # The partner's own accountant counted round 2 once, too.
        local = json.loads((federation.partner_home(partner) / "privacy" / partner / "model-1.json").read_text())
        assert [entry["round_id"] for entry in local["history"]] == [f"{run_id}/{r}" for r in (1, 2, 3)]


def _statuses(federation: Federation, partner_id: str) -> list[str]:
    with federation.engine.connect() as connection:
        return [s.status for s in budget_status(connection, partner_id, 1).spends]
