"""`mshale-fl worker ledger` as a real process against the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aio_pika
import pytest

from mshale_fl.broker import DEAD_LETTER_QUEUE, Publisher, declare_topology
from mshale_fl.ledger import open_ledger, register_partner
from mshale_fl.ledger.contributions import contribution_totals
from mshale_fl.schemas.events import new_event
from mshale_fl.schemas.payloads import SubmissionAccepted
from mshale_fl.testing.samples import sample_event

from mshale_fl.testing.broker import eventually, take

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


def _start_worker(broker_url: str, ledger_url: str, home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MSHALE_BROKER_URL": broker_url, "MSHALE_LEDGER_URL": ledger_url, "MSHALE_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "mshale_fl.cli", "worker", "ledger"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_ledger_worker_records_each_contribution_once_and_dead_letters_unknown_partners(
    broker_url: str, ledger_url: str, tmp_path: Path
) -> None:
    engine = open_ledger(ledger_url)
    register_partner(engine, "lab-a", tier=1, broker=None)
    connection = await aio_pika.connect(broker_url)
    await declare_topology(connection, delivery_limit=5)
    worker = _start_worker(broker_url, ledger_url, tmp_path)
    try:
        publisher = await Publisher.open(connection, window=64)
        accepted = new_event(
            "submission.accepted",
            SubmissionAccepted(submission_id=uuid.uuid4(), kind="spec", items=3),
            partner_id="lab-a",
        )
        # At-least-once delivery: the same event arrives twice, the contribution is recorded once.
        await publisher.publish(accepted)
        await publisher.publish(accepted)
        await publisher.publish(sample_event("update.masked", partner_id="lab-zzz"))

        def recorded() -> bool:
            assert worker.poll() is None, worker.communicate()[0]
            with engine.connect() as db:
                return contribution_totals(db, "lab-a")["spec"]["events"] >= 1

        await eventually(recorded, timeout=60)
        (dead,) = await take(connection, DEAD_LETTER_QUEUE, expected=1, timeout=30)
        assert dead.headers["x-mshale-reason"] == "ledger.unknownpartner"
        assert b"lab-zzz" in dead.body
        with engine.connect() as db:
            assert contribution_totals(db, "lab-a")["spec"] == {"events": 1, "items": 3}
        assert worker.poll() is None, "the worker must keep running after bad input"
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
        await connection.close()
    assert worker.returncode == 0, output
