"""A small running system for the console tests, built through the project's own APIs.

Real services only: a ledger written by `register_partner` and `PrivacyBudgets`, an audit log
written by `AuditAppender` with a real signing key, a training run written by `RunStore`, and the
broker topology declared in the test's throw-away RabbitMQ vhost.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.keys import create_signing_key
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.broker import connect, declare_topology
from mshale_fl.broker.topology import EVENTS_EXCHANGE, get_role

from mshale_fl.federation.runs import RoundRecord, RunSettings, RunState, RunStore
from mshale_fl.ledger import (
    Mechanism,
    PrivacyBudgets,
    open_ledger,
    register_partner,
    round_id_for,
)
from mshale_fl.ledger.agreements import AgreementKind, AgreementTerms
from mshale_fl.testing.postgres import (
    temporary_postgres_database as _temporary_postgres_database,
)
from mshale_fl.testing.rabbitmq import MANAGEMENT_URL
from mshale_fl.testing.samples import sample_event

ORIGIN = "console.test/audit"
RUN_SETTINGS = RunSettings(
    rounds=5, min_clients=2, dp_epsilon=4.0, mu=0.01, local_epochs=1, batch_size=16, lr=0.05, max_grad_norm=1.0
)
# Epsilon of these mechanisms at delta 1e-5 (RDP accountant): about 0.60 and 2.41.
LIGHT_ROUND = Mechanism(noise_multiplier=2.0, sample_rate=0.05, steps=20)
HEAVY_ROUND = Mechanism(noise_multiplier=1.1, sample_rate=0.05, steps=40)


@dataclass
class System:
    home: Path
    broker_url: str
    vhost: str
    appender: AuditAppender | None = None

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.home / 'ledger.sqlite3'}"

    def env(self) -> dict[str, str]:
        """The environment a console (or any worker) of this system runs with."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("MSHALE_")}
        env.update(
            MSHALE_HOME=str(self.home),
            MSHALE_BROKER_URL=self.broker_url,
            MSHALE_BROKER_MANAGEMENT_URL=MANAGEMENT_URL,
            MSHALE_AUDIT_ORIGIN=ORIGIN,
            MSHALE_LOG_LEVEL="WARNING",
        )
        return env


def build_ledger(url: str) -> None:
    """Four partners at three tiers; lab-three spent a little, lab-four is paused below the 10 % line."""
    engine = open_ledger(url)
    until = date.today() + timedelta(days=365)
    try:
        register_partner(engine, "lab-one", tier=1, broker=None, display_name="Lab One")
        register_partner(
            engine,
            "lab-two",
            tier=2,
            broker=None,
            display_name="Lab Two",
            agreements=[AgreementTerms(AgreementKind.DPA, valid_until=until, attorney_reviewed=True)],
        )
        register_partner(
            engine,
            "lab-three",
            tier=3,
            broker=None,
            agreements=[
                AgreementTerms(AgreementKind.DPA, valid_until=until, attorney_reviewed=True),
                AgreementTerms(AgreementKind.TRAINING, valid_until=until),
            ],
        )
        register_partner(
            engine,
            "lab-four",
            tier=3,
            broker=None,
            academic=True,
            agreements=[AgreementTerms(AgreementKind.TRAINING, valid_until=until)],
            epsilon_per_model_version=2.5,
        )
        budgets = PrivacyBudgets(engine)
        for partner_id, mechanism in (("lab-three", LIGHT_ROUND), ("lab-four", HEAVY_ROUND)):
            round_id = round_id_for("v1-console-test", 1)
            budgets.reserve(partner_id=partner_id, model_version=1, round_id=round_id, mechanism=mechanism)
            budgets.mark_started(round_id=round_id, partner_ids=[partner_id])
            budgets.commit(partner_id=partner_id, round_id=round_id)
    finally:
        engine.dispose()



def temporary_postgres_database() -> AbstractContextManager[str]:
    """A throw-away database on the real PostgreSQL, named for these tests (mshale_fl.testing.postgres)."""
    return _temporary_postgres_database("mshale_test_console")


def build_audit_log(system: System, batches: int = 3) -> AuditAppender:
    """A local audit log with a few batches of events, each closed by a signed checkpoint."""
    signer = create_signing_key(system.home / "audit" / "signing.key", ORIGIN)
    appender = AuditAppender(
        LocalStore(system.home / "audit" / "log"), signer, index_path=system.home / "audit" / "index-local.sqlite3"
    )
    types = ("submission.accepted", "round.started", "update.masked", "round.completed", "model.published")
    for batch in range(batches):
        appender.append_batch([sample_event(kind, seed=batch * 10 + n) for n, kind in enumerate(types)])
    return appender


def build_run(home: Path, metrics_per_round: list[dict[str, float]]) -> RunState:
    """A training run (the active one) with one completed round per metrics dict."""
    store = RunStore(home)
    state, _ = store.open(
        base_model=home / "models" / "mshale1_v0.pt", base_digest="0" * 64, base_version=0, settings=RUN_SETTINGS
    )
    for number, metrics in enumerate(metrics_per_round, start=1):
        state = store.record_round(
            state,
            RoundRecord(
                round=number,
                failed=False,
                participants=["lab-four", "lab-three"],
                cohort=["lab-four", "lab-three"],
                metrics=metrics,
                model_file=None,
                digest=None,
                completed_at=datetime.now(UTC).isoformat(),
            ),
        )
    return state


def _run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """asyncio.run in a thread of its own: playwright's sync API keeps an event loop in the test's thread."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:  # re-raised in the test's thread
            failure.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def declare(system: System) -> None:
    async def run() -> None:
        connection = await connect(system.broker_url, name="console tests", robust=False)
        try:
            await declare_topology(connection, delivery_limit=5)
        finally:
            await connection.close()

    _run_async(run)


def dead_letter_one(system: System) -> None:
    """Route an event to the validate queue, take it, and reject it: RabbitMQ dead-letters it."""

    async def run() -> None:
        connection = await connect(system.broker_url, name="console tests", robust=False)
        try:
            channel = await connection.channel()
            exchange = await channel.get_exchange(EVENTS_EXCHANGE)
            body = sample_event("spec.submitted", partner_id="lab-one").model_dump_json().encode()
            await exchange.publish(aio_pika.Message(body), routing_key="lab-one.spec.submitted")
            queue = await channel.get_queue(get_role("validate").queue, ensure=False)
            message = None
            for _ in range(50):
                message = await queue.get(no_ack=False, fail=False)
                if message is not None:
                    break
                await asyncio.sleep(0.1)
            assert message is not None, "the event never reached mshale.validate"
            await message.reject(requeue=False)
        finally:
            await connection.close()

    _run_async(run)


class ConsoleProcess:
    """`mshale-fl console --port 0` as its own process; `url` is read from its start-up line."""

    def __init__(self, env: dict[str, str], *extra: str, refresh: int = 2) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mshale_fl.cli", "console", "--port", "0", "--refresh", str(refresh),
             "--verify-every", "0", *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.output: list[str] = []
        self.url = self._wait_for_url()
        # Keep draining stderr so a chatty console never blocks on a full pipe; kept for failure messages.
        self._drain = threading.Thread(target=self._collect_output, daemon=True)
        self._drain.start()

    def _collect_output(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.output.append(line)

    def _wait_for_url(self, timeout: float = 60.0) -> str:
        assert self.process.stderr is not None
        deadline = time.monotonic() + timeout
        lines = self.output
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("console at "):
                return line.split()[2]
        self.stop()
        raise AssertionError(f"the console did not start: {''.join(lines)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
