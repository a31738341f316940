"""`rabbitmqctl close_all_connections --vhost V` while partners submit and while a round trains.

Every connection of the vhost is dropped at once: the workers' (robust: they reconnect and the
broker redelivers what they had not acked), the partners' (`submit` is not robust by design: the
partner runs it again, and content-derived event ids make the second run the same events), and,
in training, the server's grid and the partner nodes'.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .scenario import FaultContext, assert_clean, load_scenario
from .support import close_connections

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq, pytest.mark.slow]


async def test_connections_closed_during_submissions_lose_nothing(
    broker_url: str, vhost: str, tmp_path: Path, sqlite_ledger_url: str
) -> None:
    async def cut(context: FaultContext) -> None:
        # rabbitmqctl takes 2-3 s to start: launched after 4 of 48 receipts (12 s of submissions), it cuts mid-stream.
        await context.progress.reached(4)
        await close_connections(context.vhost, "fault suite: during submissions")
        context.notes["receipts before the cut"] = context.progress.receipts

    outcome = await load_scenario(broker_url, vhost, tmp_path, ledger_url=sqlite_ledger_url, fault=cut, rate=4.0)
    assert_clean(outcome)
    # The cut really interrupted the partners: some had to submit again.
    assert outcome.submitted.attempts > 1
    assert int(outcome.notes["receipts before the cut"]) < len(outcome.submitted.planned)  # type: ignore[call-overload]
