"""Workers SIGKILLed before their commit and between their commit and their ack, under load.

Each role's `mshale-fl worker ROLE` process is started with a crash point (mshale_fl/crashpoints.py):
it SIGKILLs itself exactly there, the supervisor starts it again (with the next point of its plan),
and the redelivered events must have their effect once: no receipt, contribution or log entry
lost or doubled.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .scenario import assert_clean, load_scenario
from .support import AuditStore

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq, pytest.mark.slow]


async def test_workers_killed_before_their_commit_lose_nothing(
    broker_url: str, vhost: str, tmp_path: Path, sqlite_ledger_url: str, moto_endpoint: str
) -> None:
    """Validate and ledger die inside their inbox transaction (rolled back); audit dies with the
    batch's bundle in S3 but its checkpoint unsigned. SQLite ledger, audit log in S3."""
    plans = {
        "validate": ["inbox.before_commit@3"],
        "ledger": ["inbox.before_commit@3"],
        "audit": ["audit.before_checkpoint@3"],
    }
    outcome = await load_scenario(
        broker_url, vhost, tmp_path, ledger_url=sqlite_ledger_url, store=AuditStore.s3(moto_endpoint), crash_plans=plans
    )
    assert sorted((crash.role, crash.point) for crash in outcome.crashes) == [
        ("audit", "audit.before_checkpoint"),
        ("ledger", "inbox.before_commit"),
        ("validate", "inbox.before_commit"),
    ]
    assert_clean(outcome)


@pytest.mark.postgres
async def test_workers_killed_between_commit_and_ack_apply_nothing_twice(
    broker_url: str, vhost: str, tmp_path: Path, postgres_ledger_url: str
) -> None:
    """Each role dies twice after its effect committed: before publishing its outputs, then (in its
    next life, on the first redelivery) after publishing them but before the ack. PostgreSQL ledger."""
    plans = {role: ["consumer.after_process@3", "consumer.before_ack@1"] for role in ("validate", "ledger", "audit")}
    outcome = await load_scenario(broker_url, vhost, tmp_path, ledger_url=postgres_ledger_url, crash_plans=plans)
    assert sorted((crash.role, crash.point) for crash in outcome.crashes) == sorted(
        (role, point) for role in plans for point in ("consumer.after_process", "consumer.before_ack")
    )
    assert_clean(outcome)
    # The redeliveries re-published recorded outputs under their first ids: the stream has repeats.
    assert outcome.report.counts["repeated publishes"] > 0
