"""The load generator at a tiny size against real worker replicas: nothing lost, nothing applied twice.

Two replicas of each role run as real `mshale-fl worker` processes (the audit one is a hot standby
of the single active consumer), so this is also a correctness check of the workers under
concurrency: replicas of validate and ledger compete for deliveries and commit into the same
ledger. Every submission reaches them three times, as when partners run `submit` again after
getting no receipts. Speed is not asserted here; `benchmarks/load_scale.py` measures it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mshale_fl.audit.keys import load_signing_key
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.verify import verify_log
from mshale_fl.ledger import open_ledger
from mshale_fl.testing.load import (
    AuditLogWatcher,
    LoadGenerator,
    LoadProfile,
    MishaleWorkers,
    build_workload,
    check_load,
    declare_mishale_topology,
    ledger_view,
    provision_partners,
    remove_partner_users,
    stage_times,
    temporary_postgres_database,
    wait_until_settled,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

PROFILE = LoadProfile(submissions_per_partner=8, vector_share=0.5, vectors_per_batch=4, rejected_share=0.25, seed=11)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        with temporary_postgres_database("mshale_test_load") as url:
            yield url


async def test_every_submission_is_audited_and_counted_once_with_two_replicas_per_role_and_resubmissions(
    vhost: str, broker_url: str, ledger_url: str, tmp_path: Path
) -> None:
    engine = open_ledger(ledger_url)
    await declare_mishale_topology(broker_url)
    partners = provision_partners(engine, vhost, 4)
    try:
        workload = build_workload(partners, PROFILE)
        kinds = {item.type for items in workload.values() for item in items}
        assert kinds == {"spec.submitted", "vectors.submitted"}, "the workload must exercise both tiers"
        assert any(not item.expect_accepted for items in workload.values() for item in items)

        # Mishale is not running yet: the partners' submit gets no receipts within its timeout,
        # so each runs it again at once (same event ids). Both copies wait in the queues.
        unanswered = await LoadGenerator(broker_url, partners, workload, window=8, receipt_timeout=0.5,
                                         resubmit_passes=1).run()  # fmt: skip
        assert len(unanswered.confirmed) == 32 and unanswered.resubmitted == 32
        assert all(item.attempts == 2 and item.receipt_at is None for item in unanswered.sent)

        async with MishaleWorkers(broker_url, ledger_url, tmp_path / "mishale", replicas=2) as workers:
            # Mishale is up: the partners submit a third time and get their receipts.
            run = await LoadGenerator(broker_url, partners, workload, window=8, receipt_timeout=120).run()
            watcher = AuditLogWatcher(workers.audit_log_dir)
            settled = await wait_until_settled(run, watcher, engine, timeout=120)
            workers.raise_if_failed()
            busy = {role: [child.name for child in children] for role, children in workers.processes.items()}
        assert settled, "the audit log and the ledger did not catch up within 120 s"
        assert set(busy) == {"validate", "ledger", "audit"} and all(len(names) == 2 for names in busy.values())

        ledger = ledger_view(engine, run)
        check = check_load(run, watcher, ledger)
        assert check.ok, check.problems
        submissions = sum(len(items) for items in workload.values())
        assert check.submissions == submissions == 32
        assert check.accepted + check.rejected == submissions and check.rejected > 0
        # Three copies of every submission: each one and its receipt in the log once, nothing else.
        assert check.log_entries == 2 * submissions
        assert len(ledger.contributions) == check.accepted

        times = stage_times(run, watcher, ledger)
        assert len(times.done) == submissions

        verifier = load_signing_key(workers.key_file).verifier
        report = verify_log(LocalStore(workers.audit_log_dir), verifier, origin=workers.origin)
        assert report.ok, report.summary()
    finally:
        remove_partner_users([partner.partner_id for partner in partners])
        engine.dispose()
