"""One load scenario: simulated partners submit to real worker processes while a fault is injected.

`load_scenario` provisions partners (own broker users), starts the validate, ledger and audit
workers (`FaultWorkers`, with crash plans), runs `submit_all` and, beside it, the scenario's
`fault` coroutine; then waits until every planned crash happened and the system is at rest, and
ends with `check_invariants`. The test asserts on the returned `ScenarioOutcome`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mshale_fl.audit.keys import load_signing_key
from mshale_fl.ledger import open_ledger
from mshale_fl.testing.invariants import InvariantReport, check_invariants
from mshale_fl.testing.load import (
    LoadProfile,
    build_workload,
    declare_mishale_topology,
    provision_partners,
    remove_partner_users,
)

from .support import AuditStore, Crash, FaultWorkers, Submitted, submit_all, supervised, wait_at_rest, wait_for_crashes

PROFILE = LoadProfile(submissions_per_partner=12, vector_share=0.5, vectors_per_batch=4, rejected_share=0.2, seed=7)
"""4 partners x 12: 48 submissions (specs, vector batches, some to be rejected), about 100 log entries."""


class Progress:
    """Receipts received so far on the first attempt; a fault can wait for a number of them."""

    def __init__(self) -> None:
        self.receipts = 0
        self._changed = asyncio.Event()

    def __call__(self, receipts: int, expected: int) -> None:
        self.receipts = receipts
        self._changed.set()

    async def reached(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.receipts < count:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"only {self.receipts} of {count} receipts arrived within {timeout:.0f} s")
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=remaining)
            except TimeoutError:
                pass


@dataclass
class FaultContext:
    vhost: str
    broker_url: str
    workers: FaultWorkers
    progress: Progress
    notes: dict[str, object] = field(default_factory=dict)
    """What the fault observed (published while blocked, outage seconds, ...), for the test to assert."""


@dataclass
class ScenarioOutcome:
    submitted: Submitted
    report: InvariantReport
    crashes: list[Crash]
    notes: dict[str, object]
    seconds: float

    def summary(self) -> str:
        crashes = ", ".join(f"{crash.role}@{crash.point}#{crash.hit}" for crash in self.crashes) or "none"
        return (
            f"{len(self.submitted.planned)} submissions in {self.submitted.attempts} attempt(s) "
            f"({self.submitted.publish_errors} failed publishes), crashes: {crashes}, {self.seconds:.0f} s, {self.notes}\n"
            + self.report.summary()
        )


async def load_scenario(
    broker_url: str,
    vhost: str,
    state_dir: Path,
    *,
    ledger_url: str,
    store: AuditStore | None = None,
    crash_plans: Mapping[str, Sequence[str]] | None = None,
    fault: Callable[[FaultContext], Awaitable[None]] | None = None,
    partners: int = 4,
    profile: LoadProfile = PROFILE,
    rate: float | None = 12.0,
    first_receipt_timeout: float = 30.0,
) -> ScenarioOutcome:
    started = time.monotonic()
    store = store or AuditStore()
    engine = open_ledger(ledger_url)
    planned_crashes = sum(len(plan) for plan in (crash_plans or {}).values())
    await declare_mishale_topology(broker_url)
    simulated = provision_partners(engine, vhost, partners)
    try:
        workload = build_workload(simulated, profile)
        workers = FaultWorkers(broker_url, ledger_url, state_dir, crash_plans=crash_plans, store=store)
        async with supervised(workers):
            timings = {"workers up": time.monotonic() - started}
            context = FaultContext(vhost, broker_url, workers, Progress())
            submitting = asyncio.create_task(
                submit_all(broker_url, simulated, workload, rate=rate, progress=context.progress,
                           first_receipt_timeout=first_receipt_timeout)
            )  # fmt: skip
            try:
                if fault is not None:
                    await fault(context)
                submitted = await submitting
            finally:
                submitting.cancel()
            timings["submitted"] = time.monotonic() - started
            await wait_for_crashes(workers, planned_crashes, timeout=60)
            audit_store = store.open(workers)
            await wait_at_rest(broker_url, audit_store, engine, raise_if_failed=workers.reap)
            timings["at rest"] = time.monotonic() - started
            verifier = load_signing_key(workers.key_file).verifier
            report = await check_invariants(
                broker_url, audit_store, verifier, engine, origin=workers.origin, expected=list(submitted.planned)
            )
            crashes = list(workers.crashes)
            timings["checked"] = time.monotonic() - started
            context.notes["timings"] = {key: round(value, 1) for key, value in timings.items()}
        return ScenarioOutcome(submitted, report, crashes, context.notes, time.monotonic() - started)
    finally:
        remove_partner_users([partner.partner_id for partner in simulated])
        engine.dispose()


def assert_clean(outcome: ScenarioOutcome) -> None:
    """What every load scenario ends with (besides the invariants): every submission answered as planned."""
    print(outcome.summary())  # the per-scenario counts, shown with `pytest -s` / in the failure report
    assert not outcome.submitted.unanswered, f"{len(outcome.submitted.unanswered)} submissions never got a receipt"
    assert not outcome.submitted.wrong_verdicts, f"wrong verdicts: {outcome.submitted.wrong_verdicts[:5]}"
    assert outcome.report.ok, outcome.summary()
