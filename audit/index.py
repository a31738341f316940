"""A local, rebuildable index of the log: event id -> leaf index, and every leaf hash.

The store is the truth; this is a cache that makes restarts cheap and duplicate checks exact.
It lives in SQLite (a file under MSHALE_HOME, or memory) and is only ever extended with
entries already durable in the store. On open it catches up with the store, and it starts
afresh if it was built for another log or disagrees with the store.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterable
from pathlib import Path

from mshale_fl.audit.merkle import MerkleTree, hash_leaf
from mshale_fl.audit.records import RecordError, parse_record

__all__ = ["LogIndex", "LogIndexError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leaves (
    idx INTEGER PRIMARY KEY,
    event_id BLOB NOT NULL UNIQUE,
    leaf_hash BLOB NOT NULL
);
"""


class LogIndexError(RuntimeError):
    """The index cannot be used (for example a record in the store is not a valid record)."""


class LogIndex:
    def __init__(self, path: Path | str | None, *, identity: str) -> None:
        """`identity` names the log (store and origin); an index built for another one is discarded."""
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL" if self.path is not None else "PRAGMA journal_mode=MEMORY")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.identity = identity
        self._size: int | None = None
        row = self._db.execute("SELECT value FROM meta WHERE name = 'identity'").fetchone()
        if row is None or row[0] != identity:
            self.reset()

    def reset(self) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM leaves")
            self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('identity', ?)", (self.identity,))
        self._size = 0

    def _transaction(self) -> sqlite3.Connection:
        return _Transaction(self._db)  # type: ignore[return-value]

    @property
    def size(self) -> int:
        if self._size is None:  # counted once (COUNT(*) walks the whole table), then kept up to date
            count, highest = self._db.execute("SELECT COUNT(*), MAX(idx) FROM leaves").fetchone()
            if count and highest != count - 1:
                raise LogIndexError(f"index holds {count} leaves but its highest index is {highest}")
            self._size = int(count)
        return self._size

    def load_tree(self) -> MerkleTree:
        tree = MerkleTree()
        for (leaf_hash,) in self._db.execute("SELECT leaf_hash FROM leaves ORDER BY idx"):
            tree.append(leaf_hash)
        return tree

    def position_of(self, event_id: uuid.UUID | str) -> int | None:
        key = (event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id))).bytes
        row = self._db.execute("SELECT idx FROM leaves WHERE event_id = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def known(self, event_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """The subset of `event_ids` already in the log."""
        ids = list(event_ids)
        found: set[uuid.UUID] = set()
        for chunk_start in range(0, len(ids), 500):
            chunk = ids[chunk_start : chunk_start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT event_id FROM leaves WHERE event_id IN ({marks})", [i.bytes for i in chunk])
            found.update(uuid.UUID(bytes=row[0]) for row in rows)
        return found

    def add(self, start: int, entries: list[tuple[uuid.UUID, bytes]]) -> None:
        """Record entries [start, start + len(entries)) as (event id, leaf hash); all or nothing."""
        if start != self.size:
            raise LogIndexError(f"index holds {self.size} leaves; cannot add at {start}")
        try:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO leaves (idx, event_id, leaf_hash) VALUES (?, ?, ?)",
                    [(start + offset, event_id.bytes, leaf_hash) for offset, (event_id, leaf_hash) in enumerate(entries)],
                )
        except sqlite3.IntegrityError as exc:
            raise LogIndexError(f"an event id between {start} and {start + len(entries) - 1} is already in the log") from exc
        self._size = start + len(entries)

    def close(self) -> None:
        self._db.close()


def index_entries(start: int, records: list[bytes], *, where: str) -> list[tuple[uuid.UUID, bytes]]:
    """Parse stored records into (event id, leaf hash), naming the exact entry that is invalid."""
    entries = []
    for offset, data in enumerate(records):
        try:
            record = parse_record(data)
        except RecordError as exc:
            raise LogIndexError(f"entry {start + offset} ({where}) is not a valid record: {exc}") from exc
        entries.append((record.event_uuid, hash_leaf(data)))
    return entries


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
