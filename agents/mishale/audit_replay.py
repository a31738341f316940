"""`mshale-fl audit replay`: the auditor's check that the bus, the log and the ledger tell one story.

1. Replay `mshale.events.log` from `--from` and compare it with the transparency log
   (`audit.replay_check`): every event present once, in the same order (up to the reordering
   racing publishers cause between two queues, `REORDER_WINDOW`), with the same record
   (payload hash included). `audit.checkpoint` events and repeated publishes of one event id are
   left out, as the audit worker leaves them out.
2. If that holds and the replay covered the log from its first entry, reconcile privacy budgets:
   the rounds the log says each partner was charged for, against the ledger's committed spends.

Budgets: epsilon composes (RDP), it does not add up, so per-round epsilons reported in
`update.masked` cannot be summed into the ledger's figure. What must agree is *which rounds were
charged*: every `update.masked` (partner, run/round) in the log must be a committed spend in the
ledger, and every committed spend must be accounted for by the log — by an `update.masked`, or,
as the ledger handler does, by a `round.completed` of a round the partner started (named in its
`round.started` cohort or among the participants: it trained, its update never arrived). The
recomputed total is the composition of the accounted spends' mechanisms at the budget's delta,
beside the ledger's committed epsilon; with the same rounds they are equal.

Live systems: the log is read while the stream is replayed. If the log has no entry yet for a
stream event, the audit worker may be behind: the log is listed again for up to `grace` seconds
before the event is called missing. Log entries appended while the stream was being read are
checked against a second, short replay past the first one's end.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from aio_pika.abc import AbstractConnection
from mshale_fl.audit.replay_check import REORDER_WINDOW, LogCursor, Mismatch, StreamLogComparison
from mshale_fl.audit.stores.base import ObjectStore
from mshale_fl.broker.replay import StartFrom, StreamRecord, replay_records
from mshale_fl.schemas.events import EventEnvelope
from pydantic import ValidationError
from sqlalchemy import Engine

__all__ = [
    "BudgetDifference",
    "BudgetReport",
    "BudgetTotal",
    "ReplayReport",
    "compare_stream_with_log",
    "reconcile_budgets",
    "replay_audit",
]

LOG_POLL_INTERVAL = 0.2


# -- budgets --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetDifference:
    partner_id: str
    model_version: int | None
    round_id: str
    kind: str
    """update_without_spend | update_not_committed | commit_without_update | model_version_differs | unknown_partner"""
    detail: str

    def summary(self) -> str:
        version = f" model {self.model_version}" if self.model_version is not None else ""
        return f"{self.partner_id}{version} round {self.round_id}: {self.detail}"


@dataclass(frozen=True)
class BudgetTotal:
    partner_id: str
    model_version: int
    delta: float
    log_rounds: int
    """Committed rounds the log accounts for."""
    log_epsilon: float
    """Their mechanisms composed at the budget's delta: the total recomputed from the log."""
    ledger_rounds: int
    ledger_epsilon: float
    """The ledger's `epsilon_committed`."""
    reported_epsilon_sum: float
    """Sum of the `epsilon_spent` in this budget's `update.masked` events (informational: not a composition)."""

    @property
    def equal(self) -> bool:
        return self.log_rounds == self.ledger_rounds and abs(self.log_epsilon - self.ledger_epsilon) <= 1e-9 * max(
            1.0, abs(self.ledger_epsilon)
        )


@dataclass
class BudgetReport:
    totals: list[BudgetTotal] = field(default_factory=list)
    differences: list[BudgetDifference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences and all(total.equal for total in self.totals)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "totals": [{**asdict(total), "equal": total.equal} for total in self.totals],
            "differences": [asdict(difference) for difference in self.differences],
        }


def reconcile_budgets(events: list[EventEnvelope[Any]], engine: Engine) -> BudgetReport:
    """Compare the rounds charged according to the log's events with the ledger's committed spends.

    `events` are the log's `update.masked`, `round.started` and `round.completed` events, in log
    order (first occurrences only).
    """
    from mshale_fl.ledger import list_partners
    from mshale_fl.ledger.accounting import epsilon
    from mshale_fl.ledger.budgets import list_budgets, round_id_for

    updates: dict[tuple[str, str], EventEnvelope[Any]] = {}
    cohorts: dict[str, set[str]] = defaultdict(set)
    completed: dict[str, set[str]] = {}
    for event in events:
        payload = event.payload
        round_id = round_id_for(payload.run_id, payload.round)
        if event.type == "update.masked":
            updates.setdefault((event.partner_id, round_id), event)
        elif event.type == "round.started":
            cohorts[round_id].update(payload.cohort)
        else:
            completed.setdefault(round_id, set()).update(payload.participants)

    report = BudgetReport()
    with engine.connect() as connection:
        partners = {partner.id for partner in list_partners(connection)}
        budgets = {(pid, status.model_version): status for pid in sorted(partners) for status in list_budgets(connection, pid)}
    spends = {(spend.partner_id, spend.round_id): spend for status in budgets.values() for spend in status.spends}
    accounted: dict[tuple[str, int], list[Any]] = defaultdict(list)
    reported: dict[tuple[str, int], float] = defaultdict(float)

    for (partner_id, round_id), event in sorted(updates.items()):
        payload = event.payload
        if partner_id not in partners:
            report.differences.append(BudgetDifference(
                partner_id, payload.model_version, round_id, "unknown_partner",
                f"update.masked {event.event_id} is in the log, but the ledger has no partner {partner_id!r}",
            ))  # fmt: skip
            continue
        spend = spends.get((partner_id, round_id))
        if spend is None:
            report.differences.append(BudgetDifference(
                partner_id, payload.model_version, round_id, "update_without_spend",
                f"update.masked {event.event_id} is in the log, but the ledger has no spend for this round",
            ))  # fmt: skip
            continue
        if spend.status != "committed":
            report.differences.append(BudgetDifference(
                partner_id, spend.model_version, round_id, "update_not_committed",
                f"update.masked {event.event_id} is in the log, but the ledger's spend for this round is {spend.status}",
            ))  # fmt: skip
            continue
        if spend.model_version != payload.model_version:
            report.differences.append(BudgetDifference(
                partner_id, spend.model_version, round_id, "model_version_differs",
                f"update.masked {event.event_id} is for model version {payload.model_version}, "
                f"the ledger charged model version {spend.model_version}",
            ))  # fmt: skip
        accounted[(partner_id, spend.model_version)].append(spend)
        reported[(partner_id, spend.model_version)] += float(payload.epsilon_spent)

    for (partner_id, round_id), spend in sorted(spends.items()):
        if spend.status != "committed" or (partner_id, round_id) in updates:
            continue
        if round_id in completed and (partner_id in completed[round_id] or partner_id in cohorts.get(round_id, ())):
            accounted[(partner_id, spend.model_version)].append(spend)  # charged at round close: it trained
            continue
        why = "no round.completed for the round" if round_id not in completed else "the round's events do not name the partner"
        report.differences.append(BudgetDifference(
            partner_id, spend.model_version, round_id, "commit_without_update",
            f"the ledger committed this round, but the log has no update.masked for it ({why})",
        ))  # fmt: skip

    for key in sorted(set(budgets) | set(accounted)):
        status = budgets.get(key)
        delta = status.delta if status is not None else 1e-5
        committed = [spend for spend in status.spends if spend.status == "committed"] if status is not None else []
        mine = accounted.get(key, [])
        report.totals.append(
            BudgetTotal(
                partner_id=key[0],
                model_version=key[1],
                delta=delta,
                log_rounds=len(mine),
                log_epsilon=epsilon([spend.mechanism for spend in mine], delta),
                ledger_rounds=len(committed),
                ledger_epsilon=status.epsilon_committed if status is not None else 0.0,
                reported_epsilon_sum=reported.get(key, 0.0),
            )
        )
    return report


# -- the replay -------------------------------------------------------------------------------------


@dataclass
class ReplayReport:
    start: str
    first_offset: int | None
    last_offset: int | None
    log_size: int
    aligned_at: int | None
    compared: int
    duplicates: int
    checkpoints: int
    unrecordable: int
    invalid: int
    mismatch: Mismatch | None
    budgets: BudgetReport | None = None
    budgets_skipped: str | None = None
    concurrent: int = 0
    """Events logged a few places from their stream position (racing publishers; see audit/replay_check.py)."""

    @property
    def ok(self) -> bool:
        return self.mismatch is None and (self.budgets is None or self.budgets.ok)

    @property
    def first_problem(self) -> str | None:
        if self.mismatch is not None:
            return self.mismatch.summary()
        if self.budgets is not None and not self.budgets.ok:
            if self.budgets.differences:
                return "budget: " + self.budgets.differences[0].summary()
            unequal = next(total for total in self.budgets.totals if not total.equal)
            return f"budget: {unequal.partner_id} model {unequal.model_version}: totals differ"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "start": self.start,
            "stream": {"first_offset": self.first_offset, "last_offset": self.last_offset},
            "log_size": self.log_size,
            "aligned_at": self.aligned_at,
            "compared": self.compared,
            "concurrent": self.concurrent,
            "skipped": {
                "duplicates": self.duplicates,
                "checkpoints": self.checkpoints,
                "unrecordable": self.unrecordable,
                "invalid": self.invalid,
            },
            "first_problem": self.first_problem,
            "mismatch": self.mismatch.to_dict() if self.mismatch else None,
            "budgets": self.budgets.to_dict() if self.budgets else None,
            "budgets_skipped": self.budgets_skipped,
        }

    def summary(self) -> str:
        lines = []
        if self.first_offset is None:
            lines.append(f"replay from {self.start}: no events on the stream")
        else:
            lines.append(
                f"replay from {self.start}: stream offsets {self.first_offset}-{self.last_offset}; "
                f"{self.compared} events matched log entries "
                + (f"{self.aligned_at}-{self.aligned_at + self.compared - 1}" if self.compared and self.aligned_at is not None else "(none)")
                + f" of {self.log_size}"
            )
            lines.append(
                f"  not logged by design: {self.checkpoints} audit.checkpoint, {self.duplicates} repeated publishes"
                + (f", {self.unrecordable} unrecordable" if self.unrecordable else "")
                + (f"; {self.concurrent} logged a few places from their stream position (racing publishers)" if self.concurrent else "")
                + (f"; {self.invalid} stream records that are not valid events" if self.invalid else "")
            )
        lines.append("log: " + (f"MISMATCH - {self.mismatch.summary()}" if self.mismatch else "every event once, in order, same record"))
        if self.budgets is not None:
            lines.append("budgets: " + ("the ledger's committed spends match the log" if self.budgets.ok else "DIFFER from the ledger"))
            for total in self.budgets.totals:
                mark = "ok" if total.equal else "DIFFERS"
                lines.append(
                    f"  {total.partner_id} model {total.model_version}: log {total.log_rounds} rounds, "
                    f"eps {total.log_epsilon:.6g} | ledger {total.ledger_rounds} committed, eps {total.ledger_epsilon:.6g}  {mark}"
                )
            for difference in self.budgets.differences:
                lines.append(f"  - {difference.kind}: {difference.summary()}")
        elif self.budgets_skipped:
            lines.append(f"budgets: not checked ({self.budgets_skipped})")
        lines.append("result: OK" if self.ok else f"result: MISMATCH - first: {self.first_problem}")
        return "\n".join(lines)


async def compare_stream_with_log(
    connection: AbstractConnection,
    store: ObjectStore,
    start: StartFrom = "first",
    *,
    grace: float = 5.0,
    idle_timeout: float = 2.0,
    reorder_window: int = REORDER_WINDOW,
) -> tuple[StreamLogComparison, int, int]:
    """Replay the stream from `start` against the log in `store`: (comparison, log size, invalid records)."""
    loop = asyncio.get_running_loop()
    cursor = LogCursor(store)
    comparison = StreamLogComparison(cursor, from_first_entry=False, reorder_window=reorder_window)
    invalid = 0
    last_offset: int | None = None
    deadline: float | None = None

    async for record in replay_records(connection, start, idle_timeout=idle_timeout):
        if last_offset is None:
            # The whole history only if the stream still begins at offset 0 (retention drops segments).
            comparison.from_first_entry = start == "first" and record.offset == 0
        last_offset = record.offset
        try:
            event = _logged_event(record)
        except (ValidationError, ValueError):
            invalid += 1
            continue
        log_complete = False
        while not comparison.feed(record.offset, event, log_complete=log_complete):
            # No log entry for it yet: the audit worker may be behind. Give it `grace` in total.
            deadline = deadline if deadline is not None else loop.time() + grace
            if loop.time() >= deadline:
                log_complete = True
                continue
            await asyncio.sleep(LOG_POLL_INTERVAL)
            cursor.refresh()

    cursor.refresh()
    log_size = cursor.size()
    if not comparison.settled and last_offset is not None and cursor.position < log_size:
        # Entries appended while the stream was read: their events lie past the first replay's end.
        async for record in replay_records(connection, last_offset + 1, idle_timeout=idle_timeout):
            try:
                event = _logged_event(record)
            except (ValidationError, ValueError):
                invalid += 1
                continue
            comparison.feed(record.offset, event, log_complete=True)
            if comparison.settled or cursor.position >= log_size:
                break
    comparison.finish(log_size)
    return comparison, log_size, invalid


def _logged_event(record: StreamRecord) -> EventEnvelope[Any]:
    """The event of a stream record, if the audit worker would log it; ValueError otherwise.

    The stream keeps whatever was published, but the consumer runtime dead-letters a body that does
    not parse and an event published under another routing key than its own (a partner naming
    another partner in the body): neither ever reaches the log, so neither is compared.
    """
    event = record.event()
    if record.routing_key != event.routing_key:
        raise ValueError(f"routing key {record.routing_key!r} does not match the event's {event.routing_key!r}")
    return event


async def replay_audit(
    connection: AbstractConnection,
    store: ObjectStore,
    start: StartFrom = "first",
    *,
    ledger: Engine | None = None,
    grace: float = 5.0,
    idle_timeout: float = 2.0,
    reorder_window: int = REORDER_WINDOW,
) -> ReplayReport:
    """The whole check: stream against log, then (with `ledger`) budgets against the ledger."""
    comparison, log_size, invalid = await compare_stream_with_log(
        connection, store, start, grace=grace, idle_timeout=idle_timeout, reorder_window=reorder_window
    )
    report = ReplayReport(
        start=start.isoformat() if hasattr(start, "isoformat") else str(start),
        first_offset=comparison.first_offset,
        last_offset=comparison.last_offset,
        log_size=log_size,
        aligned_at=comparison.aligned_at,
        compared=comparison.compared,
        duplicates=comparison.duplicates,
        checkpoints=comparison.checkpoints,
        unrecordable=comparison.unrecordable,
        invalid=invalid,
        mismatch=comparison.mismatch,
        concurrent=comparison.concurrent,
    )
    if ledger is None:
        report.budgets_skipped = "no ledger given"
    elif comparison.mismatch is not None:
        report.budgets_skipped = "the stream and the log differ"
    elif not (comparison.aligned_at == 0 or (comparison.aligned_at is None and start == "first")):
        where = "nothing" if comparison.aligned_at is None else f"the log from entry {comparison.aligned_at}"
        report.budgets_skipped = f"the replay covers {where}, not the whole log"
    else:
        report.budgets = await asyncio.to_thread(reconcile_budgets, comparison.budget_events, ledger)
    return report
