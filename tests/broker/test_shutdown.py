"""Clean shutdown: in-flight work is finished or returned, never lost, never applied twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from mshale_fl.broker import ConsumerRuntime, InboxProcessor
from mshale_fl.testing.samples import sample_event

from .helpers import CountingHandler, effect_counts, eventually, make_engine, ready_count

pytestmark = pytest.mark.rabbitmq

WORKER = Path(__file__).with_name("worker_main.py")


async def test_sigterm_finishes_in_flight_work_and_loses_nothing(broker_url, connection, publisher, tmp_path) -> None:
    total = 200
    await publisher.publish_many([sample_event("round.started", seed=i) for i in range(total)])
    engine = make_engine(tmp_path / "ledger.sqlite3")

    async def start_worker() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), broker_url, str(tmp_path / "ledger.sqlite3"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    worker = await start_worker()
    await eventually(lambda: effect_counts(engine)[0] >= 30, timeout=30)
    worker.send_signal(signal.SIGTERM)
    stdout, stderr = await asyncio.wait_for(worker.communicate(), timeout=20)
    assert worker.returncode == 0, stderr.decode()[-2000:]
    assert b"stopped acked=" in stdout
    assert b"Traceback" not in stderr

    applied, distinct = effect_counts(engine)
    assert applied == distinct
    assert applied < total, "the worker must have been stopped mid-way for this test to mean anything"
    # Every applied event was acked before the worker left, every other one is back in the queue.
    assert await ready_count(connection, "mshale.ledger") == total - applied

    worker = await start_worker()
    await eventually(lambda: effect_counts(engine)[0] >= total, timeout=60)
    worker.send_signal(signal.SIGTERM)
    await asyncio.wait_for(worker.communicate(), timeout=20)
    assert effect_counts(engine) == (total, total)
    assert await ready_count(connection, "mshale.ledger") == 0


async def test_work_still_running_after_the_grace_period_is_requeued_and_applied_once(connection, publisher, tmp_path) -> None:
    engine = make_engine(tmp_path / "ledger.sqlite3")
    release = threading.Event()

    class Stuck(CountingHandler):
        def handle(self, event, connection):
            release.wait(timeout=30)
            return super().handle(event, connection)

    stuck = InboxProcessor(Stuck(), engine)
    runtime = ConsumerRuntime(connection, "mshale.ledger", stuck, publisher=publisher, prefetch=4, retry_delay=0)
    await runtime.start()
    event = sample_event("budget.low")
    await publisher.publish(event)
    await eventually(lambda: runtime.in_flight == 1)
    await runtime.stop(grace=0.2)  # gives up waiting: the delivery goes back to the queue
    assert runtime.stats.requeued == 1
    release.set()  # ...while its transaction still commits in the worker thread
    await eventually(lambda: effect_counts(engine) == (1, 1))
    stuck.close()

    again = InboxProcessor(CountingHandler(), engine)
    runtime = ConsumerRuntime(connection, "mshale.ledger", again, publisher=publisher, prefetch=4, retry_delay=0)
    await runtime.start()
    await eventually(lambda: runtime.stats.acked == 1)
    await runtime.stop(grace=2)
    assert again.replayed == 1
    assert effect_counts(engine) == (1, 1)
    assert await ready_count(connection, "mshale.ledger") == 0
