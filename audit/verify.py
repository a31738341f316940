"""Independent verification of a whole log, as an auditor runs it (`mshale-fl audit verify`).

Nothing of the writer is trusted or reused: no index, no cached state. The verifier

  1. reads every entry bundle in order, checks that they are contiguous and that every record
     is a canonical audit record with an event id not seen before, and rebuilds the tree;
  2. checks the signature of every checkpoint against the log's verifier key, that the
     rebuilt tree has the signed root at the checkpoint's size, and that each checkpoint is
     consistent with the one before it (with a consistency proof from the rebuilt tree,
     verified by the same function partners use);
  3. on a store that keeps versions (S3), flags every key with more than one version or a
     delete marker: write-once objects must have exactly one version, ever.

Every problem carries the position it concerns (an entry index, or a tree size); the report's
`first_bad_position` is the smallest, i.e. the longest prefix of the log that can be trusted.
Entries after the last checkpoint are reported as a warning, not an error: a writer that
crashed between writing a bundle and its checkpoint leaves exactly that, and signs it on restart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mshale_fl.audit.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from mshale_fl.audit.log import (
    CHECKPOINTS,
    ENTRIES,
    BundleFormatError,
    TransparencyLog,
    decode_bundle,
    position_key,
)
from mshale_fl.audit.merkle import MerkleTree, ProofError, hash_leaf, verify_consistency
from mshale_fl.audit.note import NoteVerifier
from mshale_fl.audit.records import RecordError, parse_record
from mshale_fl.audit.stores.base import ObjectStore, StoreError

__all__ = ["Problem", "VerificationReport", "verify_log"]

MAX_PROBLEMS = 1_000


@dataclass(frozen=True)
class Problem:
    kind: str
    """bad_record, duplicate_event, bad_bundle, gap, overlap, bad_checkpoint, root_mismatch,
    inconsistent, checkpoint_beyond_entries, overwritten, delete_marker, stray_key, no_checkpoint,
    unsigned_tail (warning)"""
    position: int | None
    """Entry index (or tree size, for checkpoints) the problem starts at."""
    message: str
    key: str | None = None


@dataclass
class VerificationReport:
    store: str
    origin: str
    entries: int = 0
    checkpoints: int = 0
    verified_size: int = 0
    """The largest checkpointed size whose whole prefix verified (what a reader can trust)."""
    verified_root: str | None = None
    """Hex root hash signed at `verified_size`."""
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_position(self) -> int | None:
        positions = [p.position for p in self.problems if p.position is not None]
        if positions:
            return min(positions)
        return 0 if self.problems else None

    def problems_before(self, position: int) -> bool:
        return any(p.position is None or p.position < position for p in self.problems)

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.truncated = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "store": self.store,
            "origin": self.origin,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "verified_size": self.verified_size,
            "verified_root": self.verified_root,
            "first_bad_position": self.first_bad_position,
            "problems": [asdict(p) for p in sorted(self.problems, key=_order)],
            "warnings": [asdict(p) for p in self.warnings],
            "problems_truncated": self.truncated,
        }

    def summary(self) -> str:
        if self.ok:
            lines = [
                f"OK: {self.entries} entries and {self.checkpoints} checkpoints of {self.origin} in {self.store} verify"
            ]
        else:
            lines = [
                f"FAILED: {len(self.problems)} problem(s) in {self.store}; "
                f"the log verifies up to size {self.verified_size}, first bad position {self.first_bad_position}"
            ]
            lines += [f"  [{p.kind}] at {p.position}: {p.message}" for p in sorted(self.problems, key=_order)[:50]]
            if len(self.problems) > 50 or self.truncated:
                lines.append("  ... (more problems; use --json for all)")
        lines += [f"  warning [{w.kind}] at {w.position}: {w.message}" for w in self.warnings]
        return "\n".join(lines)


def _order(problem: Problem) -> tuple[int, str]:
    return (problem.position if problem.position is not None else -1, problem.kind)


def verify_log(store: ObjectStore, verifier: NoteVerifier, *, origin: str | None = None) -> VerificationReport:
    origin = origin or verifier.name
    log = TransparencyLog(store)
    report = VerificationReport(store=store.description, origin=origin)
    try:
        _verify(log, verifier, origin, report)
    except StoreError as exc:
        report.add(Problem("store_error", None, f"the store failed during verification: {exc}"))
    return report


def _verify(log: TransparencyLog, verifier: NoteVerifier, origin: str, report: VerificationReport) -> None:
    for stray in log.stray_keys():
        report.add(Problem("stray_key", None, stray.reason, key=stray.key))
    _check_versions(log, report)

    checkpoints = _read_checkpoints(log, verifier, origin, report)
    report.checkpoints = len(checkpoints)
    if not checkpoints:
        report.add(Problem("no_checkpoint", 0, "the log has no valid signed checkpoint"))

    tree = MerkleTree()
    seen: dict[str, int] = {}
    pending = list(checkpoints)  # ascending by size
    previous: Checkpoint | None = None
    trusted = True  # every checkpoint so far matched

    def settle_checkpoints() -> None:
        nonlocal previous, trusted
        while pending and pending[0].size <= tree.size:
            checkpoint = pending.pop(0)
            start = previous.size if previous is not None else 0
            if tree.root(checkpoint.size) != checkpoint.root:
                trusted = False
                report.add(
                    Problem(
                        "root_mismatch",
                        start,
                        f"entries [{start}, {checkpoint.size}) do not hash to the root signed at size {checkpoint.size}",
                        key=position_key(CHECKPOINTS, checkpoint.size),
                    )
                )
                continue
            if previous is not None:
                try:
                    proof = tree.consistency_proof(previous.size, checkpoint.size)
                    verify_consistency(previous.size, checkpoint.size, proof, previous.root, checkpoint.root)
                except ProofError as exc:
                    trusted = False
                    report.add(Problem("inconsistent", previous.size, str(exc), key=position_key(CHECKPOINTS, checkpoint.size)))
                    continue
            previous = checkpoint
            if trusted and not report.problems_before(checkpoint.size):
                report.verified_size = checkpoint.size
                report.verified_root = checkpoint.root.hex()

    settle_checkpoints()  # a checkpoint of size 0
    expected = 0
    for start in log.bundle_starts():
        key = position_key(ENTRIES, start)
        if start != expected:
            kind = "gap" if start > expected else "overlap"
            report.add(Problem(kind, expected, f"the entries end at {expected} but the next bundle starts at {start}", key=key))
            if start < expected:
                continue  # an overlapping bundle cannot be placed; skip it
            break  # after a gap no later position can be placed in the tree
        try:
            records = decode_bundle(log.store.get(key), key=key)
        except BundleFormatError as exc:
            report.add(Problem("bad_bundle", start, str(exc), key=key))
            break
        for offset, data in enumerate(records):
            position = start + offset
            try:
                record = parse_record(data)
            except RecordError as exc:
                report.add(Problem("bad_record", position, f"entry {position} (record {offset} of {key}): {exc}", key=key))
            else:
                first = seen.setdefault(record.event_id, position)  # canonical text: as unique as the UUID
                if first != position:
                    report.add(
                        Problem(
                            "duplicate_event",
                            position,
                            f"entry {position} repeats event {record.event_id} already logged at entry {first}",
                            key=key,
                        )
                    )
            tree.append(hash_leaf(data))
            if pending and pending[0].size == tree.size:
                settle_checkpoints()
        expected = start + len(records)
    report.entries = tree.size
    settle_checkpoints()

    for checkpoint in pending:
        report.add(
            Problem(
                "checkpoint_beyond_entries",
                tree.size,
                f"checkpoint {checkpoint.size} covers entries [{tree.size}, {checkpoint.size}) that are missing",
                key=position_key(CHECKPOINTS, checkpoint.size),
            )
        )
    last_signed = checkpoints[-1].size if checkpoints else 0
    if tree.size > last_signed:
        report.warnings.append(
            Problem(
                "unsigned_tail",
                last_signed,
                f"entries [{last_signed}, {tree.size}) are not covered by a checkpoint yet "
                "(a writer stopped before signing; it signs them when it restarts)",
            )
        )


def _read_checkpoints(
    log: TransparencyLog, verifier: NoteVerifier, origin: str, report: VerificationReport
) -> list[Checkpoint]:
    valid = []
    for size in log.checkpoint_sizes():
        key = position_key(CHECKPOINTS, size)
        try:
            checkpoint = open_checkpoint(log.read_checkpoint(size), verifier, origin=origin)
        except CheckpointError as exc:
            report.add(Problem("bad_checkpoint", size, f"checkpoint {size}: {exc}", key=key))
            continue
        if checkpoint.size != size:
            report.add(Problem("bad_checkpoint", min(size, checkpoint.size), f"object {key} holds the checkpoint for size {checkpoint.size}", key=key))
            continue
        valid.append(checkpoint)
    return valid


def _check_versions(log: TransparencyLog, report: VerificationReport) -> None:
    for prefix in (ENTRIES, CHECKPOINTS):
        history = log.store.key_history(prefix)
        if history is None:
            return  # the store keeps no versions (a local directory)
        for item in history:
            name = item.key[len(prefix) :]
            position = int(name) if name.isdigit() else None
            if len(item.versions) > 1:
                report.add(
                    Problem(
                        "overwritten",
                        position,
                        f"{item.key} has {len(item.versions)} versions; a write-once object must have one",
                        key=item.key,
                    )
                )
            if item.delete_markers:
                report.add(
                    Problem(
                        "delete_marker",
                        position,
                        f"{item.key} has {len(item.delete_markers)} delete marker(s): someone tried to delete it",
                        key=item.key,
                    )
                )
