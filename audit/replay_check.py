"""Comparing the replayed event stream with the log: every event once, in order, same record.

The stream `mshale.events.log` holds what was published; the log holds what the audit worker
appended. After dropping what the log leaves out on purpose — `audit.checkpoint` events, and
repeated publishes of one event id (at-least-once publishing: the first occurrence counts) —
the two must be the same sequence, record for record. A stream event matches a log entry when
the record built from it is byte-identical to the stored one (same id, type, partner, time,
round, budget, model version and payload hash).

`StreamLogComparison` is fed stream events one at a time and reads the log sequentially
(`LogCursor`), so memory stays small: the set of event ids seen, and an id -> position map of the
log built only when a mismatch has to be classified or a replay starts mid-stream. It stops
comparing at the first mismatch and names it:

- `missing`:   a stream event that is not in the log at all;
- `extra`:     a log entry whose event never appears on the stream (in the replayed range);
- `reordered`: both are there, in another order (further apart than `REORDER_WINDOW`, see below);
- `changed`:   same event id, different record (the payload hash, or another field, differs).

Order is checked up to what concurrent publishers cause. RabbitMQ keeps the order of messages
from one channel to one queue, but the stream and the audit queue are two queues: publishes from
different channels (partners, worker replicas) that race may be enqueued in one order in the
stream and in another in the audit queue, and so in the log. A stream event whose record is in the
log at most `REORDER_WINDOW` entries after the expected position therefore matches there (counted
in `concurrent`); the entry it skipped must still be matched by a later stream event, or it is
`extra`.

Alignment: a replay of the whole stream must begin at log entry 0. A replay from an offset or a
time begins at the log position of its first event (events logged before that are not checked);
if that first event is itself a late re-publish of an earlier event, start one offset later.
"""

from __future__ import annotations

import bisect
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from mshale_fl.audit.appender import NOT_LOGGED_TYPES
from mshale_fl.audit.log import LogLayoutError, TransparencyLog
from mshale_fl.audit.records import (
    AuditRecord,
    RecordError,
    parse_record,
    record_for_event,
)
from mshale_fl.audit.stores.base import ObjectStore

__all__ = ["BUDGET_EVENT_TYPES", "REORDER_WINDOW", "LogCursor", "Mismatch", "StreamLogComparison"]

REORDER_WINDOW = 1024
"""How far (in log entries) a stream event may be found after its expected position and still match:
racing publishes are reordered by a few places (2 measured with 4 partners), a burst released at
once (after a memory alarm) by up to the publishers' windows of unconfirmed messages."""

BUDGET_EVENT_TYPES = frozenset({"update.masked", "round.started", "round.completed"})
"""Matched events kept for the budget reconciliation (see agents/mishale/audit_replay.py)."""


@dataclass(frozen=True)
class Mismatch:
    kind: str
    """missing | extra | reordered | changed"""
    position: int
    """The log entry where stream and log first disagree."""
    offset: int | None
    """The stream offset of the event concerned (None for a log entry absent from the stream)."""
    event_id: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        where = f"log entry {self.position}" + (f", stream offset {self.offset}" if self.offset is not None else "")
        return f"{self.kind} at {where}: {self.detail}"


class LogCursor:
    """Reads the log's records in order, one bundle in memory at a time; can look ahead and refresh."""

    def __init__(self, store: ObjectStore) -> None:
        self.log = TransparencyLog(store)
        self.position = 0
        self._starts = self.log.bundle_starts()
        self._records: list[bytes] = []
        self._records_start = 0
        self._index: dict[bytes, int] | None = None
        self._indexed_starts: list[int] = []

    def peek(self) -> bytes | None:
        """The record at the current position, or None at the end of the log (as last listed)."""
        return self.record_at(self.position)

    def advance(self) -> None:
        self.position += 1

    def seek(self, position: int) -> None:
        self.position = position

    def refresh(self) -> None:
        """List the store again (the audit worker may have appended meanwhile)."""
        self._starts = self.log.bundle_starts()

    def size(self) -> int:
        """Entries in the log as last listed."""
        if not self._starts:
            return 0
        last = self._starts[-1]
        return last + len(self._bundle(last))

    def record_at(self, position: int) -> bytes | None:
        if self._records_start <= position < self._records_start + len(self._records):
            return self._records[position - self._records_start]
        slot = bisect.bisect_right(self._starts, position) - 1
        if slot < 0:
            if self._starts:
                raise LogLayoutError(f"the log's first bundle starts at entry {self._starts[0]}, not 0")
            return None
        start = self._starts[slot]
        records = self._bundle(start)
        if position >= start + len(records):
            following = self._starts[slot + 1] if slot + 1 < len(self._starts) else None
            if following is not None:
                raise LogLayoutError(f"gap in the log: bundle {start} ends at entry {start + len(records)}, the next starts at {following}")
            return None
        self._records, self._records_start = records, start
        return records[position - start]

    def find(self, event_id: uuid.UUID) -> int | None:
        """The log position of an event, or None (builds an id -> position map once per listing)."""
        if self._index is None or self._indexed_starts != self._starts:
            self._index = {}
            for start, records in self.log.iter_bundles(self._starts):
                for offset, data in enumerate(records):
                    try:
                        self._index.setdefault(parse_record(data).event_uuid.bytes, start + offset)
                    except RecordError:
                        continue  # reported as `changed` when the comparison reaches it
            self._indexed_starts = list(self._starts)
        return self._index.get(event_id.bytes)

    def _bundle(self, start: int) -> list[bytes]:
        if start == self._records_start and self._records:
            return self._records
        return self.log.read_bundle(start)


@dataclass
class _Suspect:
    """A log entry that is not the expected event: `reordered` if its event shows up later on the stream."""

    position: int
    logged_id: bytes
    logged: AuditRecord
    offset: int
    event: Any
    found_at: int


class StreamLogComparison:
    """Feed stream events in order with `feed`; call `finish` when the replayed range is done."""

    def __init__(self, cursor: LogCursor, *, from_first_entry: bool, reorder_window: int = REORDER_WINDOW) -> None:
        self.cursor = cursor
        self.from_first_entry = from_first_entry
        self.reorder_window = reorder_window
        self.concurrent = 0
        """Events matched a little after their expected position (concurrent publishes, see the module docstring)."""
        self._matched_ahead: set[int] = set()
        self.seen: set[bytes] = set()
        self.aligned_at: int | None = None
        self.compared = 0
        self.duplicates = 0
        self.checkpoints = 0
        self.unrecordable = 0
        self.first_offset: int | None = None
        self.last_offset: int | None = None
        self.mismatch: Mismatch | None = None
        self.budget_events: list[Any] = []
        """Matched events of `BUDGET_EVENT_TYPES`, in log order up to concurrent publishes (first occurrences)."""
        self._suspect: _Suspect | None = None

    @property
    def settled(self) -> bool:
        """A mismatch was found (perhaps not yet classified): later events can only classify it."""
        return self.mismatch is not None or self._suspect is not None

    def feed(self, offset: int, event: Any, *, log_complete: bool = False) -> bool:
        """Compare one stream event. False when the log has no entry for it yet: call again later
        (the audit worker may be behind), or with `log_complete=True` to call it missing."""
        if self.first_offset is None:
            self.first_offset = offset
        self.last_offset = offset
        if event.type in NOT_LOGGED_TYPES:
            self.checkpoints += 1
            return True
        key = event.event_id.bytes
        if self._suspect is not None:
            if key == self._suspect.logged_id:
                self._settle_reordered(offset)
            return True
        if self.mismatch is not None:
            return True
        if key in self.seen:
            self.duplicates += 1
            return True
        try:
            expected = record_for_event(event).to_bytes()
        except RecordError:
            # The audit worker dead-letters an event it cannot record; it is absent by design.
            self.unrecordable += 1
            return True
        if self.aligned_at is None:
            position = 0 if self.from_first_entry else self.cursor.find(event.event_id)
            if position is None:
                if not log_complete:
                    return False  # perhaps not appended yet
                self.mismatch = Mismatch(
                    "missing", 0, offset, str(event.event_id),
                    f"the replay's first event {event.event_id} ({event.type}) is not in the log",
                )  # fmt: skip
                return True
            self.cursor.seek(position)
            self.aligned_at = position
        entry = self.cursor.peek()
        if entry is None:
            if not log_complete:
                return False
            self.mismatch = Mismatch(
                "missing", self.cursor.position, offset, str(event.event_id),
                f"event {event.event_id} ({event.type}) is on the stream but the log ends at {self.cursor.position} entries",
            )  # fmt: skip
            return True
        if entry == expected:
            self._matched(event)
            self.cursor.advance()
            while self.cursor.position in self._matched_ahead:
                self._matched_ahead.discard(self.cursor.position)
                self.cursor.advance()
            return True
        ahead = self.cursor.find(event.event_id) if self.reorder_window else None
        if (
            ahead is not None
            and self.cursor.position < ahead <= self.cursor.position + self.reorder_window
            and ahead not in self._matched_ahead
            and self.cursor.record_at(ahead) == expected
        ):
            self._matched(event)
            self._matched_ahead.add(ahead)
            self.concurrent += 1
            return True
        self._classify(offset, event, expected, entry)
        return True

    def _matched(self, event: Any) -> None:
        self.seen.add(event.event_id.bytes)
        self.compared += 1
        if event.type in BUDGET_EVENT_TYPES:
            self.budget_events.append(event)

    def finish(self, log_size: int) -> Mismatch | None:
        """End of the replayed range; `log_size` is how far the log must be covered. The first mismatch."""
        if self._suspect is not None:
            suspect, self._suspect = self._suspect, None
            self.mismatch = Mismatch(
                "extra", suspect.position, None, suspect.logged.event_id,
                f"log entry {suspect.position} holds event {suspect.logged.event_id} ({suspect.logged.event_type}), "
                f"which is not on the stream; the stream's next event {suspect.event.event_id} is entry {suspect.found_at}",
            )  # fmt: skip
        if self.mismatch is None:
            start = self.aligned_at if self.aligned_at is not None else 0
            if self.aligned_at is None and not self.from_first_entry:
                return None  # nothing replayed: nothing to align the log with
            position = max(self.cursor.position, start)
            if position < log_size:
                entry = self.cursor.record_at(position)
                logged = _parse_or_none(entry) if entry is not None else None
                name = f"event {logged.event_id} ({logged.event_type})" if logged else "an invalid record"
                self.mismatch = Mismatch(
                    "extra", position, None, logged.event_id if logged else None,
                    f"log entry {position} holds {name}, which is not on the stream "
                    f"(the replay ended after {self.compared} matching events; the log has {log_size} entries)",
                )  # fmt: skip
        return self.mismatch

    # -- classification ------------------------------------------------------------------------

    def _classify(self, offset: int, event: Any, expected: bytes, entry: bytes) -> None:
        position = self.cursor.position
        try:
            logged = parse_record(entry)
        except RecordError as error:
            self.mismatch = Mismatch("changed", position, offset, str(event.event_id), f"log entry {position} is not a valid record: {error}")
            return
        if logged.event_uuid == event.event_id:
            differing = _differing_fields(parse_record(expected), logged)
            self.mismatch = Mismatch(
                "changed", position, offset, str(event.event_id),
                f"event {event.event_id} ({event.type}) differs from log entry {position} in {differing}",
            )  # fmt: skip
            return
        found = self.cursor.find(event.event_id)
        if found is not None and found < position:
            # Its first occurrence was before the replayed range: a re-publish, not a new event.
            self.duplicates += 1
            return
        if found is None:
            self.mismatch = Mismatch(
                "missing", position, offset, str(event.event_id),
                f"event {event.event_id} ({event.type}) is on the stream but not in the log; "
                f"log entry {position} holds {logged.event_id} ({logged.event_type}) instead",
            )  # fmt: skip
            return
        self._suspect = _Suspect(position, logged.event_uuid.bytes, logged, offset, event, found)

    def _settle_reordered(self, later_offset: int) -> None:
        suspect, self._suspect = self._suspect, None
        assert suspect is not None
        self.mismatch = Mismatch(
            "reordered", suspect.position, suspect.offset, str(suspect.event.event_id),
            f"event {suspect.event.event_id} ({suspect.event.type}) is log entry {suspect.found_at}, expected at entry "
            f"{suspect.position}, which holds {suspect.logged.event_id} (stream offset {later_offset}, later)",
        )  # fmt: skip



def _parse_or_none(entry: bytes) -> AuditRecord | None:
    try:
        return parse_record(entry)
    except RecordError:
        return None


def _differing_fields(expected: AuditRecord, logged: AuditRecord) -> str:
    parts = []
    for name in ("payload_sha256", "event_type", "partner_id", "occurred_at", "round", "model_version", "dp_epsilon", "dp_delta"):
        want, have = getattr(expected, name), getattr(logged, name)
        if want != have:
            label = "payload hash" if name == "payload_sha256" else name
            parts.append(f"{label} (stream {want}, log {have})")
    return ", ".join(parts) or "its encoding"
