"""One step of the agent: changed corpus files -> what may leave -> submitted -> one outcome per file.

The step is the partner's usual `extract` then `submit`, on just the files that changed, through
the same code (nothing about what may leave is decided here):

1. `snapshot`: each changed file is read once and copied into `<state>/staging/` at its own
   relative path (so `[sensitivity]` globs match as in the corpus). Its SHA-256 is of exactly those
   bytes, so what is recorded is what was extracted, even if the file changes a moment later. A
   file whose bytes are the ones already recorded (touched, copied over itself) is not extracted
   again. A file that changed while it was read is left for the next scan.
2. `extract_corpus` (agents/partner/extract) over the staging folder into `<state>/outbox/`, at
   the agent's submit tier, under the agent config's labels and agreements.
3. `plan_transmission` (transmission.py): manifest and policy must both let a protocol leave;
   `full-ip` never does, and its spec file is never even read back. Two corpus-wide rules the
   batch alone cannot see are added, in the plan's own terms: a text that another file of the
   corpus labels `full-ip` is withheld (`same_text_as_full_ip`, as `plan_transmission` does
   within one folder), and a text already accepted at this tier is not sent again
   (`already_contributed`: at Tier 2 a vector sent again in another batch would be counted again).
4. `submit_plan` (submit.py) publishes as the partner and waits for the receipts (done by the daemon).
5. `outcomes`: one `FileRecord` per file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mshale_fl.agents.partner.agent_state import (
    FINAL_STATUSES,
    OUTBOX_FOLDER,
    PENDING,
    STAGING_FOLDER,
    FileRecord,
    utc_now,
)
from mshale_fl.agents.partner.extract.pipeline import extract_corpus
from mshale_fl.agents.partner.extract.sensitivity import PartnerConfig
from mshale_fl.agents.partner.policy import Decision
from mshale_fl.agents.partner.submit import SubmissionResult
from mshale_fl.agents.partner.transmission import PlannedItem, TransmissionPlan, plan_transmission
from mshale_fl.agents.partner.watch import FileSignature


@dataclass(frozen=True)
class Change:
    """A settled file whose record is missing or out of date."""

    source: str
    path: Path
    signature: FileSignature


@dataclass(frozen=True)
class Snapshot:
    sha256: str
    signature: FileSignature


@dataclass
class Prepared:
    """Everything decided before anything is sent."""

    plan: TransmissionPlan | None = None
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    """source -> why it could not be extracted (read failures and files with no step)."""
    already: dict[str, FileRecord] = field(default_factory=dict)
    """source -> the accepted record of the same text at this tier (not sent again)."""
    unchanged: dict[str, FileRecord] = field(default_factory=dict)
    """source -> its record with the new signature: the bytes were the ones already recorded."""
    deferred: list[str] = field(default_factory=list)
    """Vanished or still changing while read: the next scan decides."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(changes: list[Change], staging: Path, known: dict[str, FileRecord], fingerprint: str) -> Prepared:
    """Copy the changed files into `staging` (emptied first); see step 1 of the module docstring."""
    prepared = Prepared()
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for change in changes:
        try:
            data = change.path.read_bytes()
            after = FileSignature.of(change.path.stat())
        except FileNotFoundError:
            prepared.deferred.append(change.source)
            continue
        except OSError as error:
            prepared.unreadable[change.source] = f"cannot read file: {error.strerror or error}"
            prepared.snapshots[change.source] = Snapshot("", change.signature)
            continue
        if after != change.signature:  # written to while we read it
            prepared.deferred.append(change.source)
            continue
        digest = _sha256(data)
        record = known.get(change.source)
        if record is not None and record.sha256 == digest and record.fingerprint == fingerprint and record.status in FINAL_STATUSES:
            prepared.unchanged[change.source] = dataclasses.replace(
                record, size=after.size, mtime_ns=after.mtime_ns, inode=after.inode
            )
            continue
        target = staging / change.source
        target.parent.mkdir(parents=True, exist_ok=True)
        # A plain write: the staging folder is scratch, rebuilt each step, and never read after a crash.
        target.write_bytes(data)
        prepared.snapshots[change.source] = Snapshot(digest, after)
    return prepared


def _withheld(item: PlannedItem, reason: str, explanation: str) -> PlannedItem:
    return dataclasses.replace(
        item, decision=Decision(item.decision.form, False, reason, explanation), spec=None, vector=None
    )


def prepare(
    changes: list[Change],
    *,
    state_dir: Path,
    partner_config: PartnerConfig,
    submit_tier: int,
    fingerprint: str,
    known: dict[str, FileRecord],
    full_ip_hashes: set[str],
    contributed: dict[str, FileRecord],
) -> Prepared:
    """Steps 1-3 of the module docstring (blocking: file I/O and extraction; run it in a thread)."""
    prepared = snapshot(changes, state_dir / STAGING_FOLDER, known, fingerprint)
    if not any(snap.sha256 for snap in prepared.snapshots.values()):
        return prepared
    outbox = state_dir / OUTBOX_FOLDER
    extraction = extract_corpus(state_dir / STAGING_FOLDER, outbox, tier=submit_tier, config=partner_config)
    for failure in extraction.unreadable:
        prepared.unreadable[failure["source"]] = str(failure["reason"])
    if not extraction.protocols:
        return prepared
    plan = plan_transmission(outbox, tier=submit_tier, config=partner_config)
    items = []
    for item in plan.items:
        if item.transmittable and item.content_hash in full_ip_hashes:
            item = _withheld(item, "same_text_as_full_ip",
                             "another protocol of the corpus with the same text is labelled full-ip, so neither leaves")  # fmt: skip
        elif item.transmittable and item.content_hash in contributed:
            prepared.already[item.source] = contributed[item.content_hash]
            item = _withheld(item, "already_contributed", "the same text was already accepted at this tier")
        items.append(item)
    prepared.plan = dataclasses.replace(plan, items=tuple(items))
    return prepared


def outcomes(
    prepared: Prepared, result: SubmissionResult | None, *, fingerprint: str, submit_tier: int
) -> dict[str, FileRecord]:
    """A record per file the step settled. Without `result` (sending failed), files that were to be
    sent get no record, so the next step sends them."""
    now = utc_now()
    records: dict[str, FileRecord] = dict(prepared.unchanged)

    def record(source: str, status: str, **values: object) -> None:
        snap = prepared.snapshots[source]
        sig = snap.signature
        records[source] = FileRecord(sha256=snap.sha256, size=sig.size, mtime_ns=sig.mtime_ns, inode=sig.inode,
                                     status=status, fingerprint=fingerprint, updated_at=now, **values)  # type: ignore[arg-type]  # fmt: skip

    for source, reason in prepared.unreadable.items():
        if source in prepared.snapshots:
            record(source, "unreadable", reasons=[reason])
    if prepared.plan is None:
        return records
    sent = {row["source"]: row for row in result.as_dict()["receipts"]} if result is not None else {}
    for item in prepared.plan.items:
        if item.source not in prepared.snapshots:
            continue
        common = {"sensitivity": item.sensitivity.value, "content_hash": item.content_hash, "tier": submit_tier}
        earlier = prepared.already.get(item.source)
        if earlier is not None:
            record(item.source, "accepted", submission_id=earlier.submission_id, audit=earlier.audit,
                   reasons=[f"{item.decision.reason}: {item.decision.explanation}"], **common)  # fmt: skip
        elif not item.transmittable:
            record(item.source, "withheld", reasons=[f"{item.decision.reason}: {item.decision.explanation}"], **common)
        elif item.source in sent:
            row = sent[item.source]
            status = row["status"] if row["status"] in ("accepted", "rejected") else PENDING
            reasons = [f"{reason['code']}: {reason['message']}" for reason in row["reasons"]]
            record(item.source, status, submission_id=row["submission_id"], reasons=reasons, audit="pending", **common)
    return records


__all__ = ["Change", "Prepared", "Snapshot", "outcomes", "prepare", "snapshot"]
