"""The writer of the log: appends events in batches, exactly once each, and signs a checkpoint.

One batch is written in this order:
  1. the entry bundle(s) (write-once; the key is the position, so a concurrent writer loses)
  2. the local index (event id -> position, leaf hash)
  3. the signed checkpoint for the new size

and the caller acknowledges the events only after `append_batch` returns. A crash anywhere in
between is repaired on the next start, without a gap or a duplicate:
  - after 1: the bundle is durable, so it is part of the log; the index catches up from the
    store, a checkpoint is signed for it, and the redelivered events are skipped by event id;
  - after 2: the same, without the catch-up;
  - before 1: nothing was written; the redelivered events are appended normally.

Events are deduplicated by event id against the whole log (the index), so at-least-once
delivery and publisher retries never produce a second entry. `audit.checkpoint` events are not
logged: they announce this log's own checkpoints, and logging them would trigger a new
checkpoint for every checkpoint, forever.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

from mshale_fl.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    sign_checkpoint,
)
from mshale_fl.audit.index import LogIndex, LogIndexError, index_entries
from mshale_fl.audit.log import LogLayoutError, TransparencyLog
from mshale_fl.audit.merkle import MerkleTree, hash_leaf
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.receipts import Receipt
from mshale_fl.audit.records import record_for_event
from mshale_fl.audit.stores.base import ObjectExistsError, ObjectStore
from mshale_fl.crashpoints import crash_point

__all__ = ["AuditAppender", "LogConflictError", "LogIntegrityError"]

DEFAULT_BUNDLE_ENTRIES = 1024
NOT_LOGGED_TYPES = frozenset({"audit.checkpoint"})
_CONFLICT_RETRIES = 3


class LogIntegrityError(RuntimeError):
    """The stored log contradicts its own signed checkpoints; the appender refuses to extend it."""


class LogConflictError(RuntimeError):
    """Another writer kept extending the log at the same time; this batch was not appended."""


class AuditAppender:
    """Appends events to the transparency log in `store`, signing each new size with `signer`.

    Only one appender should write a log at a time (the audit worker is a single active
    consumer); if two do, the write-once keys guarantee the log never forks, and the loser
    re-reads the log and retries.
    """

    def __init__(
        self,
        store: ObjectStore,
        signer: NoteSigner,
        *,
        index_path: Path | str | None = None,
        origin: str | None = None,
        max_bundle_entries: int = DEFAULT_BUNDLE_ENTRIES,
        not_logged_types: Iterable[str] = NOT_LOGGED_TYPES,
    ) -> None:
        if max_bundle_entries < 1:
            raise ValueError("max_bundle_entries must be at least 1")
        self.log = TransparencyLog(store)
        self.signer = signer
        self.origin = origin or signer.name
        self.max_bundle_entries = max_bundle_entries
        self.not_logged_types = frozenset(not_logged_types)
        identity = f"{self.origin}\n{store.description}\n{signer.verifier.to_key()}"
        self.index = LogIndex(index_path, identity=identity)
        self.tree = MerkleTree()
        self._bundle_starts: list[int] = []
        self._checkpoint: Checkpoint | None = None
        self._sync()

    # -- public API ---------------------------------------------------------------------------

    @property
    def checkpoint(self) -> Checkpoint:
        """The latest signed checkpoint (it covers every entry in the log)."""
        assert self._checkpoint is not None
        return self._checkpoint

    @property
    def size(self) -> int:
        return self.tree.size

    def append_batch(self, events: Sequence[Any]) -> Checkpoint:
        """Append the events not yet in the log, in order, and return the checkpoint covering them.

        Events already in the log (by event id), repeated within the batch, or of a type that is
        not logged are skipped, so redelivered events leave no duplicate. Nothing is written if
        no event is new. Raises `RecordError` before writing anything if an event cannot be
        recorded, `LogIntegrityError` if the store contradicts its checkpoints, and
        `LogConflictError` if another writer keeps winning the race for the next position.
        """
        records = self._new_records(events)
        for _ in range(_CONFLICT_RETRIES):
            if not records:
                if self.checkpoint.size < self.tree.size:
                    # An earlier call wrote its entries but failed to store their checkpoint
                    # (the caller retries it): sign them now, so the result covers the batch.
                    self._sign_latest()
                return self.checkpoint
            try:
                self._append_records(records)
                return self.checkpoint
            except ObjectExistsError:
                # Someone else wrote at our position: learn what they wrote, then drop what is now logged.
                self._sync()
                known = self.index.known(event_id for event_id, _ in records)
                records = [(event_id, record) for event_id, record in records if event_id not in known]
        raise LogConflictError(f"another writer kept extending {self.log.description}; the batch was not appended")

    def refresh(self) -> Checkpoint:
        """Catch up with entries and checkpoints another appender wrote to the store; the latest checkpoint.

        For a process that answers receipt requests without being the writer (a standby audit
        worker): its view is otherwise the one it had at start. Costs a listing and one read.
        """
        self._sync()
        return self.checkpoint

    def position_of(self, event_id: uuid.UUID | str) -> int | None:
        """The leaf index of an event, or None if it is not in the log."""
        return self.index.position_of(event_id)

    def receipt(self, event_id: uuid.UUID | str) -> Receipt:
        """The inclusion proof of a logged event against the latest signed checkpoint."""
        position = self.index.position_of(event_id)
        if position is None:
            raise KeyError(f"event {event_id} is not in the log")
        checkpoint = self.checkpoint
        if position >= checkpoint.size:  # written, but its batch failed before the checkpoint
            raise KeyError(f"event {event_id} is entry {position}, not yet covered by a checkpoint")
        return Receipt(
            record=self.record_at(position),
            index=position,
            tree_size=checkpoint.size,
            proof=tuple(self.tree.inclusion_proof(position, checkpoint.size)),
            checkpoint=checkpoint.note,
        )

    def record_at(self, position: int) -> bytes:
        """The stored record bytes of entry `position`."""
        if not 0 <= position < self.tree.size:
            raise IndexError(f"entry {position} is not in the log of {self.tree.size} entries")
        start = self._bundle_starts[bisect.bisect_right(self._bundle_starts, position) - 1]
        return self.log.read_bundle(start)[position - start]

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """Proof that the latest checkpoint extends the tree of `old_size` (for partners' witnesses)."""
        return self.tree.consistency_proof(old_size, self.checkpoint.size)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------

    def _new_records(self, events: Sequence[Any]) -> list[tuple[uuid.UUID, bytes]]:
        candidates = [event for event in events if event.type not in self.not_logged_types]
        known = self.index.known(event.event_id for event in candidates)
        records, seen = [], set(known)
        for event in candidates:
            if event.event_id in seen:
                continue
            seen.add(event.event_id)
            records.append((event.event_id, record_for_event(event).to_bytes()))
        return records

    def _append_records(self, records: list[tuple[uuid.UUID, bytes]]) -> None:
        start = self.tree.size
        for chunk_start in range(0, len(records), self.max_bundle_entries):
            chunk = records[chunk_start : chunk_start + self.max_bundle_entries]
            self.log.write_bundle(start, [record for _, record in chunk])
            self._bundle_starts.append(start)
            self._add_entries(start, [(event_id, hash_leaf(record)) for event_id, record in chunk])
            start += len(chunk)
        crash_point("audit.before_checkpoint")
        self._sign_latest()

    def _add_entries(self, start: int, entries: list[tuple[uuid.UUID, bytes]]) -> None:
        self.index.add(start, entries)
        for _, leaf_hash in entries:
            self.tree.append(leaf_hash)

    def _sign_latest(self) -> None:
        checkpoint = sign_checkpoint(self.signer, self.tree.size, self.tree.root(), origin=self.origin)
        try:
            self.log.write_checkpoint(checkpoint.size, checkpoint.note)
        except ObjectExistsError:
            existing = self._open_checkpoint(checkpoint.size)
            if existing.root != checkpoint.root:
                raise LogIntegrityError(
                    f"a checkpoint for size {checkpoint.size} already exists with a different root: the log forked"
                ) from None
            checkpoint = existing
        self._checkpoint = checkpoint

    def _open_checkpoint(self, size: int) -> Checkpoint:
        try:
            return open_checkpoint(self.log.read_checkpoint(size), self.signer.verifier, origin=self.origin)
        except CheckpointError as exc:
            raise LogIntegrityError(f"checkpoint {size} in {self.log.description} does not verify: {exc}") from exc

    # -- catching up with the store --------------------------------------------------------------

    def _sync(self) -> None:
        """Bring index, tree and checkpoint in line with the store; adopt and sign an unsigned tail."""
        try:
            self._catch_up()
            self._check_against_latest_checkpoint()
        except (LogIntegrityError, LogIndexError, LogLayoutError):
            # A stale or foreign index is the harmless explanation: rebuild it from the store once.
            self.index.reset()
            self.tree = MerkleTree()
            try:
                self._catch_up()
                self._check_against_latest_checkpoint()
            except (LogIndexError, LogLayoutError) as exc:
                raise LogIntegrityError(f"{self.log.description}: {exc}") from exc

    def _catch_up(self) -> None:
        starts = self.log.bundle_starts()
        indexed = self.index.size
        if self.tree.size != indexed:
            self.tree = self.index.load_tree()
        stored = 0
        for start, records in self.log.iter_bundles(starts, from_index=indexed):
            stored = start + len(records)
            fresh = records[max(indexed - start, 0) :]
            if fresh:
                first = start + len(records) - len(fresh)
                self._add_entries(first, index_entries(first, fresh, where=f"bundle {start}"))
        if indexed > 0 and stored < indexed:
            raise LogIndexError(f"the index holds {indexed} entries but the store only {stored}")
        self._bundle_starts = starts

    def _check_against_latest_checkpoint(self) -> None:
        sizes = self.log.checkpoint_sizes()
        if sizes:
            latest = self._open_checkpoint(sizes[-1])
            if latest.size > self.tree.size:
                raise LogIntegrityError(
                    f"checkpoint {latest.size} covers more entries than the store holds ({self.tree.size})"
                )
            if self.tree.root(latest.size) != latest.root:
                raise LogIntegrityError(
                    f"the entries in the store do not hash to the root signed at size {latest.size}"
                )
            self._checkpoint = latest
            if latest.size == self.tree.size:
                return
        # No checkpoint yet, or entries beyond the latest one (a crash after their bundle was written).
        self._sign_latest()
