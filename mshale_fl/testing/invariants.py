"""The checks every fault scenario ends with: nothing lost, nothing applied twice, one story told.

`check_invariants` reads what the system wrote — the history stream `mshale.events.log`, the audit
log in its store, the ledger, the dead-letter queues, and optionally the partners' own privacy
accountants — and reports four things, each a list of problems that must be empty:

- **lost**: an event the broker confirmed (given as `expected`) that is not on the stream; a
  stream event missing from the audit log; an event a worker role consumes without that role's
  inbox row (its effect never happened); a submission without a receipt; an accepted submission
  without its contribution; an `update.masked` without its `update` contribution; anything in
  `mshale.dead-letter` or `mshale.unroutable`; a log tail no signed checkpoint covers.
- **duplicates**: an event id at two log positions; two different receipts (or verdicts) for one
  submission; two contributions for one submission or for one partner's update in one round; two
  different models published as one version.
- **audit**: `verify_log` problems, and the stream replayed against the log (`replay_audit`, the
  check behind `mshale-fl audit replay`): every event once, in order, with the same record.
- **budgets**: the budget figures equal the composition of the spends recorded for them: the
  rounds the log charges each partner (its `update.masked`, its `round.completed` cohort) are
  exactly the ledger's committed spends (`replay_audit`'s reconciliation); each budget's committed
  epsilon, recomputed here from the raw `privacy_spends` rows, equals the ledger's; no reservation
  is left open once training is over; a budget with less than 10 % left is paused; and no round a
  partner's own accountant charged is missing from the ledger (the ledger may charge a partner
  that died before training — conservative — but never undercharge one that trained).

It changes nothing: dead-lettered messages are looked at and put back.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from mshale_fl.agents.mishale.audit_replay import ReplayReport, replay_audit
from mshale_fl.agents.mishale.validate import receipt_id
from mshale_fl.audit.appender import NOT_LOGGED_TYPES
from mshale_fl.audit.log import TransparencyLog
from mshale_fl.audit.note import NoteVerifier
from mshale_fl.audit.records import AuditRecord, parse_record
from mshale_fl.audit.stores.base import ObjectStore
from mshale_fl.audit.verify import verify_log
from mshale_fl.broker import DEAD_LETTER_QUEUE, ROLES, UNROUTABLE_QUEUE, connect, replay
from mshale_fl.ledger.accounting import Mechanism, epsilon
from mshale_fl.ledger.budgets import LOW_FRACTION
from mshale_fl.ledger.tables import contributions, privacy_budgets, privacy_spends
from mshale_fl.schemas.events import EventEnvelope
from mshale_fl.store.schema import inbox

__all__ = ["InvariantReport", "check_invariants", "read_log"]

INBOX_ROLES = ("validate", "ledger")
"""Roles whose effects commit with an inbox row (consumer name = role name)."""
SUBMISSION_TYPES = ("spec.submitted", "vectors.submitted")
RECEIPT_TYPES = ("submission.accepted", "submission.rejected")
MAX_LISTED = 5


@dataclass
class InvariantReport:
    """Problems by kind (each list must be empty) and counts of what was checked."""

    counts: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    audit: list[str] = field(default_factory=list)
    budgets: list[str] = field(default_factory=list)
    replay: ReplayReport | None = None

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.audit or self.budgets)

    def summary(self) -> str:
        head = (
            f"lost {len(self.lost)}, duplicates {len(self.duplicates)}, audit problems {len(self.audit)}, "
            f"budget problems {len(self.budgets)} | " + ", ".join(f"{key} {value}" for key, value in self.counts.items())
        )
        lines = [head]
        for kind in ("lost", "duplicates", "audit", "budgets"):
            lines += [f"  {kind}: {problem}" for problem in getattr(self, kind)]
        return "\n".join(lines)


def read_log(store: ObjectStore) -> list[AuditRecord]:
    """Every record of the log in `store`, in log order (read from the store itself)."""
    log = TransparencyLog(store)
    return [parse_record(data) for _, records in log.iter_bundles() for data in records]


def _listed(ids: Iterable[Any]) -> str:
    ids = list(ids)
    more = f" and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else ""
    return ", ".join(str(item) for item in ids[:MAX_LISTED]) + more


async def check_invariants(
    broker_url: str,
    store: ObjectStore,
    verifier: NoteVerifier,
    ledger: Engine,
    *,
    origin: str | None = None,
    expected: Iterable[uuid.UUID] = (),
    partner_homes: Mapping[str, Path] | None = None,
    training_over: bool = True,
    inbox_roles: Sequence[str] = INBOX_ROLES,
    grace: float = 5.0,
) -> InvariantReport:
    """Check a system at rest (every worker caught up; see the module docstring).

    `expected`: event ids whose publishes the broker confirmed (a load generator's), which must all
    be on the stream and in the log. `partner_homes`: partner id -> MSHALE_HOME of its agent, whose
    privacy accountants are compared with the ledger. `inbox_roles`: the roles that ran and must
    have applied every event of theirs.
    """
    report = InvariantReport()
    connection = await connect(broker_url, name="mshale-fl invariants")
    try:
        stream = [event async for _offset, event in replay(connection, "first")]
        report.replay = await replay_audit(connection, store, "first", ledger=ledger, grace=grace)
        parked = {queue: await _parked(connection, queue) for queue in (DEAD_LETTER_QUEUE, UNROUTABLE_QUEUE)}
    finally:
        await connection.close()
    records = read_log(store)
    verification = verify_log(store, verifier, origin=origin)

    first: dict[uuid.UUID, EventEnvelope[Any]] = {}
    for event in stream:
        first.setdefault(event.event_id, event)
    logged = Counter(record.event_id for record in records)
    by_type: dict[str, list[EventEnvelope[Any]]] = defaultdict(list)
    for event in first.values():
        by_type[event.type].append(event)
    with ledger.connect() as db:
        applied = {
            role: set(db.execute(select(inbox.c.event_id).where(inbox.c.consumer == role)).scalars()) for role in inbox_roles
        }
        contribution_rows = db.execute(select(contributions)).all()
        budget_rows = db.execute(select(privacy_budgets)).all()
        spend_rows = db.execute(select(privacy_spends)).all()

    report.counts = {
        "stream events": len(stream),
        "distinct": len(first),
        "log entries": len(records),
        "submissions": sum(len(by_type[t]) for t in SUBMISSION_TYPES),
        "receipts": sum(len(by_type[t]) for t in RECEIPT_TYPES),
        "contributions": len(contribution_rows),
        "rounds completed": len(by_type["round.completed"]),
        "updates": len(by_type["update.masked"]),
        "spends committed": sum(1 for row in spend_rows if row.status == "committed"),
        "spends released": sum(1 for row in spend_rows if row.status == "released"),
        "repeated publishes": len(stream) - len(first),
        "logged out of stream order (racing publishers)": report.replay.concurrent,
    }
    _check_lost(report, expected, first, logged, by_type, applied, contribution_rows, parked, verification)
    _check_duplicates(report, logged, stream, contribution_rows)
    _check_audit(report, verification)
    _check_budgets(report, budget_rows, spend_rows, partner_homes, training_over=training_over)
    return report


# -- lost ------------------------------------------------------------------------------------------


def _check_lost(
    report: InvariantReport,
    expected: Iterable[uuid.UUID],
    first: dict[uuid.UUID, EventEnvelope[Any]],
    logged: Counter[str],
    by_type: dict[str, list[EventEnvelope[Any]]],
    applied: dict[str, set[str]],
    contribution_rows: Sequence[Any],
    parked: dict[str, list[str]],
    verification: Any,
) -> None:
    lost = report.lost
    missing = [event_id for event_id in expected if event_id not in first]
    if missing:
        lost.append(f"{len(missing)} confirmed publishes are not on the stream: {_listed(missing)}")
    unlogged = [e.event_id for e in first.values() if e.type not in NOT_LOGGED_TYPES and str(e.event_id) not in logged]
    if unlogged:
        lost.append(f"{len(unlogged)} stream events are not in the audit log: {_listed(unlogged)}")
    for role in ROLES:
        if role.name not in applied:
            continue
        unapplied = [e.event_id for t in role.event_types for e in by_type.get(t, ()) if str(e.event_id) not in applied[role.name]]
        if unapplied:
            lost.append(f"{len(unapplied)} events were never applied by the {role.name} worker: {_listed(unapplied)}")
    receipts = {str(e.payload.submission_id) for t in RECEIPT_TYPES for e in by_type.get(t, ())}
    unanswered = [e.event_id for t in SUBMISSION_TYPES for e in by_type.get(t, ()) if str(e.event_id) not in receipts]
    if unanswered:
        lost.append(f"{len(unanswered)} submissions have no receipt: {_listed(unanswered)}")
    recorded = {row.event_id: row for row in contribution_rows}
    if "ledger" in applied:
        uncounted = [e.event_id for e in by_type.get("submission.accepted", ()) if str(e.event_id) not in recorded]
        if uncounted:
            lost.append(f"{len(uncounted)} accepted submissions have no contribution: {_listed(uncounted)}")
        wrong = [
            e.event_id
            for e in by_type.get("submission.accepted", ())
            if str(e.event_id) in recorded and recorded[str(e.event_id)].item_count != e.payload.items
        ]
        if wrong:
            lost.append(f"{len(wrong)} contributions count other than their receipt's items: {_listed(wrong)}")
        unrecorded = [e.event_id for e in by_type.get("update.masked", ()) if str(e.event_id) not in recorded]
        if unrecorded:
            lost.append(f"{len(unrecorded)} update.masked have no update contribution: {_listed(unrecorded)}")
    for queue, messages in parked.items():
        if messages:
            lost.append(f"{len(messages)} messages in {queue}: {_listed(messages)}")
    if verification.verified_size < verification.entries:
        lost.append(
            f"log entries {verification.verified_size}-{verification.entries - 1} are covered by no valid signed checkpoint"
        )


async def _parked(connection: Any, queue: str, limit: int = 20) -> list[str]:
    """Message id and reason of what waits in `queue` (looked at, then put back).

    Putting back counts as a delivery on a quorum queue: look once per check, not in a loop.
    """
    channel = await connection.channel(publisher_confirms=False)
    try:
        declared = await channel.declare_queue(queue, passive=True)
        count = int(declared.declaration_result.message_count or 0)
        seen: list[str] = []
        held = []
        for _ in range(min(count, limit)):
            message = await declared.get(no_ack=False, fail=False)
            if message is None:
                break
            held.append(message)
            headers = message.headers or {}
            reason = headers.get("x-mshale-reason") or (headers.get("x-death") or [{}])[0].get("reason", "?")
            seen.append(f"{message.message_id} {message.routing_key} ({reason})")
        for message in held:
            await message.nack(requeue=True)
        return seen + [f"... {count - len(seen)} more"] * (count > len(seen))
    finally:
        await channel.close()


# -- duplicates ------------------------------------------------------------------------------------


def _check_duplicates(
    report: InvariantReport, logged: Counter[str], stream: list[EventEnvelope[Any]], contribution_rows: Sequence[Any]
) -> None:
    duplicates = report.duplicates
    twice = [event_id for event_id, count in logged.items() if count > 1]
    if twice:
        duplicates.append(f"{len(twice)} events are in the audit log more than once: {_listed(twice)}")
    answers: dict[str, set[tuple[str, uuid.UUID]]] = defaultdict(set)
    published: dict[int, set[str]] = defaultdict(set)
    for event in stream:
        if event.type in RECEIPT_TYPES:
            answers[str(event.payload.submission_id)].add((event.type, event.event_id))
        elif event.type == "model.published":
            published[event.payload.model_version].add(event.payload.sha256)
    doubled = [submission for submission, seen in answers.items() if len(seen) > 1]
    if doubled:
        duplicates.append(f"{len(doubled)} submissions got more than one receipt or verdict: {_listed(doubled)}")
    foreign = [s for s, seen in answers.items() if any(event_id != receipt_id(uuid.UUID(s)) for _, event_id in seen)]
    if foreign:
        duplicates.append(f"{len(foreign)} receipts do not carry the id derived from their submission: {_listed(foreign)}")
    per_submission = Counter(row.submission_id for row in contribution_rows if row.submission_id is not None)
    counted_twice = [submission for submission, count in per_submission.items() if count > 1]
    if counted_twice:
        duplicates.append(f"{len(counted_twice)} submissions have more than one contribution: {_listed(counted_twice)}")
    per_round = Counter((row.partner_id, row.round_id) for row in contribution_rows if row.kind == "update")
    updates_twice = [f"{partner} {round_id}" for (partner, round_id), count in per_round.items() if count > 1]
    if updates_twice:
        duplicates.append(f"{len(updates_twice)} partner rounds have more than one update contribution: {_listed(updates_twice)}")
    versions = [f"v{version}: {len(digests)} models" for version, digests in published.items() if len(digests) > 1]
    if versions:
        duplicates.append(f"model versions published as different models: {_listed(versions)}")


# -- the audit log ---------------------------------------------------------------------------------


def _check_audit(report: InvariantReport, verification: Any) -> None:
    report.audit += [f"verify: {problem.kind} at {problem.position}: {problem.detail}" for problem in verification.problems]
    replayed = report.replay
    assert replayed is not None
    if replayed.mismatch is not None:
        report.audit.append(f"replay: {replayed.mismatch.summary()}")
    if replayed.compared != report.counts["log entries"]:
        report.audit.append(f"replay: {replayed.compared} stream events matched, the log holds {report.counts['log entries']}")


# -- budgets ---------------------------------------------------------------------------------------


def _check_budgets(
    report: InvariantReport,
    budget_rows: Sequence[Any],
    spend_rows: Sequence[Any],
    partner_homes: Mapping[str, Path] | None,
    *,
    training_over: bool,
) -> None:
    problems = report.budgets
    replayed = report.replay
    assert replayed is not None
    if replayed.budgets is None:
        problems.append(f"the log's charges were not reconciled with the ledger: {replayed.budgets_skipped}")
    else:
        problems += [f"log vs ledger: {difference.kind}: {difference.summary()}" for difference in replayed.budgets.differences]
        problems += [
            f"log vs ledger: {t.partner_id} model {t.model_version}: log {t.log_rounds} rounds eps {t.log_epsilon:.6g}, "
            f"ledger {t.ledger_rounds} rounds eps {t.ledger_epsilon:.6g}"
            for t in replayed.budgets.totals
            if not t.equal
        ]
        ledger_epsilon = {(t.partner_id, t.model_version): t.ledger_epsilon for t in replayed.budgets.totals}
    spends: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for row in spend_rows:
        spends[(row.partner_id, row.model_version)].append(row)
    for budget in budget_rows:
        key = (budget.partner_id, budget.model_version)
        mine = spends.get(key, [])
        committed = epsilon([_mechanism(row) for row in mine if row.status == "committed"], budget.delta)
        spent = epsilon([_mechanism(row) for row in mine if row.status in ("reserved", "committed")], budget.delta)
        if replayed.budgets is not None and abs(ledger_epsilon.get(key, 0.0) - committed) > 1e-9 * max(1.0, committed):
            problems.append(f"{key[0]} model {key[1]}: the budget reports eps {ledger_epsilon.get(key, 0.0):.6g} committed, its spends compose to {committed:.6g}")
        if budget.state == "active" and budget.epsilon_total - spent < LOW_FRACTION * budget.epsilon_total:
            problems.append(f"{key[0]} model {key[1]}: {spent:.4g} of {budget.epsilon_total:.4g} spent but the budget is not paused")
        if spent > budget.epsilon_total * (1 + 1e-9):
            problems.append(f"{key[0]} model {key[1]}: spent {spent:.6g} exceeds the total {budget.epsilon_total:.6g}")
    if training_over:
        open_ = [f"{row.partner_id} {row.round_id}" for row in spend_rows if row.status == "reserved"]
        if open_:
            problems.append(f"{len(open_)} reservations left open after training: {_listed(open_)}")
    for partner_id, home in (partner_homes or {}).items():
        for path in sorted((Path(home) / "privacy" / partner_id).glob("model-*.json")):
            document = json.loads(path.read_text())
            version = int(document["model_version"])
            charged = {row.round_id: row for row in spends.get((partner_id, version), []) if row.status == "committed"}
            for entry in document["history"]:
                row = charged.get(entry["round_id"])
                if row is None:
                    problems.append(f"{partner_id} charged itself for {entry['round_id']} (model {version}); the ledger did not commit it")
                elif (row.noise_multiplier, row.sample_rate, row.steps) != (
                    entry["noise_multiplier"], entry["sample_rate"], entry["steps"]
                ):  # fmt: skip
                    problems.append(f"{partner_id} {entry['round_id']}: the partner's mechanism differs from the ledger's")


def _mechanism(row: Any) -> Mechanism:
    return Mechanism(row.noise_multiplier, row.sample_rate, row.steps)
