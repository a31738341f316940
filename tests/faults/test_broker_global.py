"""Faults of the whole broker: stopped and started, and a memory alarm, while partners submit.

WARNING: these disturb every vhost of the shared RabbitMQ, not only the test's: everyone's
connections drop (stop_app) or everyone's publishers block (memory alarm) for a few seconds. They
are marked `broker_global`: deselect them with `-m "not broker_global"` when others are testing.
The broker is always started again, and the memory watermark always set back, in a `finally`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from .scenario import FaultContext, assert_clean, load_scenario
from .support import broker_outage, memory_alarm, memory_alarm_active

pytestmark = [pytest.mark.faults, pytest.mark.broker_global, pytest.mark.rabbitmq, pytest.mark.slow]

OUTAGE_SECONDS = 1.0
ALARM_SECONDS = 3.0


def _outage() -> float:
    started = time.monotonic()
    with broker_outage():
        time.sleep(OUTAGE_SECONDS)
    return time.monotonic() - started


async def test_the_broker_stopped_and_started_mid_run_loses_nothing(
    broker_url: str, vhost: str, tmp_path: Path, sqlite_ledger_url: str
) -> None:
    async def outage(context: FaultContext) -> None:
        # stop_app takes seconds to take effect (CLI start, then a graceful stop): begin early.
        await context.progress.reached(3)
        context.notes["receipts before the outage"] = context.progress.receipts
        context.notes["broker down for s"] = round(await asyncio.to_thread(_outage), 1)

    outcome = await load_scenario(broker_url, vhost, tmp_path, ledger_url=sqlite_ledger_url, fault=outage, rate=4.0)
    assert_clean(outcome)
    assert int(outcome.notes["receipts before the outage"]) < len(outcome.submitted.planned)  # type: ignore[call-overload]
    assert outcome.submitted.attempts > 1, "the outage did not interrupt the partners"


def _alarm(context: FaultContext) -> dict[str, object]:
    seen: dict[str, object] = {}
    with memory_alarm():
        deadline = time.monotonic() + 15
        while not memory_alarm_active():
            assert time.monotonic() < deadline, "the memory alarm did not go off"
            time.sleep(0.1)
        time.sleep(0.5)  # what was in flight when the alarm went off arrives
        seen["receipts when blocked"] = context.progress.receipts
        time.sleep(ALARM_SECONDS)
        seen["receipts after the block"] = context.progress.receipts
    return seen


async def test_a_memory_alarm_blocks_publishers_who_then_resume_and_lose_nothing(
    broker_url: str, vhost: str, tmp_path: Path, sqlite_ledger_url: str
) -> None:
    async def alarm(context: FaultContext) -> None:
        await context.progress.reached(4)
        context.notes.update(await asyncio.to_thread(_alarm, context))

    outcome = await load_scenario(broker_url, vhost, tmp_path, ledger_url=sqlite_ledger_url, fault=alarm, rate=4.0)
    assert_clean(outcome)
    blocked, after = outcome.notes["receipts when blocked"], outcome.notes["receipts after the block"]
    # Blocked: the validator could not publish receipts for the whole alarm (its connection is blocked too).
    assert after == blocked < len(outcome.submitted.planned), outcome.notes
    # And nothing had to be sent again: blocked publishers wait, they do not fail.
    assert outcome.submitted.attempts == 1 and outcome.submitted.publish_errors == 0
