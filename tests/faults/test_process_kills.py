"""Real processes SIGKILLed mid-training: a `join` at a secure-aggregation stage, then `serve` itself.

`serve`, four `join`s and the ledger and audit workers run as real `mshale-fl` processes (as
tests/federation/test_processes.py, plus the audit log and secure aggregation). lab-d's `join` is
started with `MSHALE_TEST_CRASH_AT=node.train.secagg_masked_input`: it SIGKILLs itself when the
masked-input instruction of round 1 reaches it, and is started again at once (a new process: its
secure-aggregation session is gone, so it refuses the redelivered instruction; the round goes on
without it). `serve` is SIGKILLed as round 2 starts and started again: it resumes the run from the
last completed round. At the end the invariants hold, with every partner's own accountant.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aio_pika
import pytest

from mshale_fl.audit.keys import load_signing_key
from mshale_fl.crashpoints import CRASH_AT_ENV
from mshale_fl.demo.processes import ProcessGroup, WorkerProcess
from mshale_fl.federation import secagg_protocol as s
from mshale_fl.federation import wire
from mshale_fl.testing.invariants import check_invariants

from federation.harness import Federation, stream_events  # tests/ is on sys.path: the federation suite's harness
from federation.test_processes import _wait_round_started, _watch_round_started

from .support import CRASH_LINE, FaultWorkers, supervised, wait_at_rest

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq, pytest.mark.slow]

PARTNERS = ("lab-a", "lab-b", "lab-c", "lab-d")
VICTIM = "lab-d"
VICTIM_STAGE = s.MASKED_INPUT_MESSAGE_TYPE


async def _declare_grid(broker_url: str) -> None:
    connection = await aio_pika.connect(broker_url)
    async with connection:
        await wire.declare_server_queues(connection)


async def _until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def test_a_partner_and_then_the_server_killed_mid_training(broker_url: str, tmp_path: Path) -> None:
    federation = Federation(broker_url, tmp_path)
    for partner in PARTNERS:
        federation.register(partner)
    await _watch_round_started(broker_url, "test.round-started")
    await _declare_grid(broker_url)  # as `broker declare` would: partners can join before the server starts
    workers = FaultWorkers(broker_url, federation.ledger_url, tmp_path / "mishale", roles=("ledger", "audit"))
    apps = ProcessGroup({"MSHALE_BROKER_URL": broker_url, "MSHALE_LEDGER_URL": federation.ledger_url}, tmp_path / "logs")
    serve_args = [
        "serve", "--model", str(federation.model_path), "--rounds", "3", "--min-clients", "3", "--dp-epsilon", "1.0",
        "--mu", "0.01", "--round-timeout", "60", "--plan-timeout", "20", "--batch-size", "8", "--local-epochs", "1",
        "--secagg-timeout", "30",
    ]  # fmt: skip
    server_env = {"MSHALE_HOME": str(federation.server_home)}

    def join(partner: str, name: str, crash_at: str | None = None) -> WorkerProcess:
        env = {"MSHALE_HOME": str(federation.partner_home(partner))}
        if crash_at:
            env[CRASH_AT_ENV] = crash_at
        args = ["join", "--server", "127.0.0.1:5672", "--tier", "3", "--dp-epsilon", "0.5", "--heartbeat", "1",
                "--corpus", str(federation.corpus(partner)), "--partner-id", partner]  # fmt: skip
        return apps.start(name, *args, env=env)

    try:
        async with supervised(workers):
            joins = {p: join(p, p, f"node.{VICTIM_STAGE}" if p == VICTIM else None) for p in PARTNERS}
            # Every partner joined before the server starts: round 1's cohort holds all four.
            for partner, child in joins.items():
                await _until(lambda child=child: "node.joined" in child.log_path.read_text(), 180, f"{partner} did not join")
            server = apps.start("serve-1", *serve_args, env=server_env)
            # lab-d dies at its crash point in round 1 and is started again at once.
            victim = joins[VICTIM]
            await _until(lambda: victim.process.poll() is not None, 240, f"{VICTIM} did not reach {VICTIM_STAGE}")
            assert victim.process.returncode == -signal.SIGKILL, victim.tail(30)
            found = CRASH_LINE.search(victim.tail(10))
            assert found is not None and found.group(1) == f"node.{VICTIM_STAGE}", victim.tail(10)
            joins[VICTIM] = join(VICTIM, f"{VICTIM}-2")
            # The server dies as round 2 starts, and is started again.
            await _wait_round_started(broker_url, "test.round-started", 2, timeout=240)
            server.process.send_signal(signal.SIGKILL)
            assert server.process.wait(10) == -signal.SIGKILL
            state_before = json.loads((federation.server_home / "federation" / "active.json").read_text())
            server = apps.start("serve-2", *serve_args, env=server_env)
            await _until(lambda: server.process.poll() is not None, 300, "the restarted server did not finish")
            assert server.process.returncode == 0, server.tail(40)
            for partner, child in joins.items():
                assert child.process.poll() is None, f"{partner}'s join exited: {child.tail(30)}"

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
    finally:
        codes = apps.stop()
    print(f"partner and server killed: {report.summary()}")
    unclean = {name: code for name, code in codes.items() if code != 0 and name not in (VICTIM, "serve-1")}
    assert not unclean, f"processes that did not stop cleanly: {unclean}"
    assert report.ok, report.summary()

    second = (tmp_path / "logs" / "serve-2.log").read_text()
    assert "server.run_resumed" in second
    run_id = state_before["run_id"]
    state = json.loads((federation.server_home / "federation" / "runs" / run_id / "state.json").read_text())
    rounds = {record["round"]: record for record in state["rounds"]}
    assert sorted(rounds) == [1, 2, 3] and state["finished"]
    assert all(not record["failed"] for record in rounds.values())
    assert VICTIM not in rounds[1]["participants"] and len(rounds[1]["participants"]) == 3
    events = [e for e in await stream_events(broker_url) if getattr(e.payload, "run_id", run_id) == run_id]
    assert len([e for e in events if e.type == "model.published"]) == 1
    assert report.counts["rounds completed"] >= 3
