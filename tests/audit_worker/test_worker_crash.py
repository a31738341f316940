"""`mshale-fl worker audit` as a real process, SIGKILLed while thousands of events are published."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mshale_fl.agents.mishale.audit_replay import replay_audit
from mshale_fl.audit.keys import create_signing_key
from mshale_fl.audit.log import TransparencyLog
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.verify import verify_log
from mshale_fl.broker import Publisher, connect, declare_topology

from mshale_fl.testing.broker import eventually
from mshale_fl.testing.samples import sample_event

from .conftest import logged_ids

pytestmark = pytest.mark.rabbitmq

ORIGIN = "mshale.test/crash"
TOTAL = 3000


def start_worker(broker_url: str, home: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "MSHALE_BROKER_URL": broker_url,
        "MSHALE_HOME": str(home),
        "MSHALE_AUDIT_ORIGIN": ORIGIN,
        "MSHALE_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "mshale_fl.cli", "worker", "audit"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def _consuming(connection: Any) -> bool:
    channel = await connection.channel()
    try:
        return bool((await channel.declare_queue("mshale.audit", passive=True)).declaration_result.consumer_count)
    finally:
        await channel.close()


def log_size(log_dir: Path) -> int:
    """Entries in the log as the store holds them right now (read while the worker writes)."""
    log = TransparencyLog(LocalStore(log_dir))
    starts = log.bundle_starts()
    return starts[-1] + len(log.read_bundle(starts[-1])) if starts else 0


async def test_a_worker_killed_mid_stream_resumes_without_gap_or_duplicate(broker_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    signer = create_signing_key(home / "audit" / "signing.key", ORIGIN)
    log_dir = home / "audit" / "log"
    connection = await connect(broker_url, name="crash test")
    await declare_topology(connection, delivery_limit=5)
    publisher = await Publisher.open(connection, window=256)
    kinds = ("spec.submitted", "submission.accepted", "update.masked", "round.started", "access.denied")
    sent = [sample_event(kinds[n % len(kinds)], seed=n, partner_id=f"lab-{n % 7}") for n in range(TOTAL)]

    async def publish_steadily() -> None:  # about 3 s: the kill and the restart happen meanwhile
        for start in range(0, TOTAL, 100):
            await publisher.publish_many(sent[start : start + 100])
            if start == 1000:
                await publisher.publish_many(sent[400:450])  # a publisher retry: repeated ids
            await asyncio.sleep(0.1)

    worker = start_worker(broker_url, home)
    publishing: asyncio.Future[None] | None = None
    restarted: subprocess.Popen[str] | None = None
    try:
        await eventually(lambda: _consuming(connection), timeout=30)
        publishing = asyncio.ensure_future(publish_steadily())

        def logging_well() -> bool:
            assert worker.poll() is None, worker.communicate()[0]
            return log_size(log_dir) >= 500

        await eventually(logging_well, timeout=60)
        worker.send_signal(signal.SIGKILL)
        killed_at = log_size(log_dir)
        worker.wait(timeout=10)
        assert not publishing.done() and killed_at < TOTAL, "the kill must land mid-stream"

        restarted = start_worker(broker_url, home)
        await publishing

        def complete() -> bool:
            assert restarted.poll() is None, restarted.communicate()[0]
            return log_size(log_dir) >= TOTAL

        await eventually(complete, timeout=90)
        report = await replay_audit(connection, LocalStore(log_dir), "first", grace=2)
    finally:
        if publishing is not None:
            publishing.cancel()
        for process in (worker, restarted):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                output, _ = process.communicate(timeout=60)
                assert process.returncode == 0, output
        await publisher.close()
        await connection.close()

    assert logged_ids(log_dir) == [str(event.event_id) for event in sent]
    verification = verify_log(LocalStore(log_dir), signer.verifier, origin=ORIGIN)
    assert verification.ok, verification.summary()
    assert report.ok and report.mismatch is None, report.summary()
    assert report.compared == TOTAL and report.duplicates >= 50 and report.checkpoints > 0


def test_the_worker_without_a_signing_key_says_how_to_create_one(tmp_path: Path) -> None:
    env = {**os.environ, "MSHALE_HOME": str(tmp_path / "home"), "MSHALE_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/"}
    result = subprocess.run(
        [sys.executable, "-m", "mshale_fl.cli", "worker", "audit"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "mshale-fl audit keygen" in result.stderr and "Traceback" not in result.stderr
