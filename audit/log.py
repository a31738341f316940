"""How the log lies in a write-once store: entry bundles and checkpoints, each written once.

    entries/<start, 20 digits>       records [start, start + n), each a big-endian uint16
                                     length then the record bytes (the C2SP tlog-tiles encoding)
    checkpoints/<size, 20 digits>    the signed checkpoint note for tree size `size`

Keys are derived from positions, so the store's write-once rule is also the log's sequencer:
two writers that both think the log ends at `start` race for the same key and exactly one
wins. Numbers are zero-padded so that the store's sorted listing is the log's order.

Unlike Tessera and C2SP tlog-tiles we do not cut entries into fixed 256-entry tiles. A fixed
tile that fills over several batches is rewritten as a new partial tile (`.p/<width>`) at each
checkpoint; tlog-tiles lets a log delete superseded partial tiles, but in a COMPLIANCE-locked
bucket nothing can be deleted, so every partial tile would stay forever (up to 255 copies of
each entry at one event per batch). One bundle per append batch writes each entry exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from mshale_fl.audit.records import MAX_RECORD_BYTES
from mshale_fl.audit.stores.base import ObjectStore

__all__ = [
    "BundleFormatError",
    "LogLayoutError",
    "TransparencyLog",
    "decode_bundle",
    "encode_bundle",
]

ENTRIES = "entries/"
CHECKPOINTS = "checkpoints/"
_POSITION = re.compile(r"^[0-9]{20}$")


class LogLayoutError(ValueError):
    """The objects in the store do not form a contiguous log (gap, overlap, stray key)."""


class BundleFormatError(LogLayoutError):
    """An entry bundle cannot be decoded."""


def position_key(prefix: str, position: int) -> str:
    return f"{prefix}{position:020d}"


def encode_bundle(records: Sequence[bytes]) -> bytes:
    parts = []
    for record in records:
        if not 0 < len(record) <= MAX_RECORD_BYTES:
            raise ValueError(f"a record must be 1-{MAX_RECORD_BYTES} bytes, got {len(record)}")
        parts.append(len(record).to_bytes(2, "big"))
        parts.append(record)
    return b"".join(parts)


def decode_bundle(data: bytes, *, key: str = "bundle") -> list[bytes]:
    records = []
    offset, end = 0, len(data)
    while offset < end:
        if offset + 2 > end:
            raise BundleFormatError(f"{key}: truncated length prefix at byte {offset}")
        length = int.from_bytes(data[offset : offset + 2], "big")
        if length == 0:
            raise BundleFormatError(f"{key}: empty record at byte {offset}")
        if offset + 2 + length > end:
            raise BundleFormatError(f"{key}: record at byte {offset} claims {length} bytes, only {end - offset - 2} remain")
        records.append(data[offset + 2 : offset + 2 + length])
        offset += 2 + length
    if not records:
        raise BundleFormatError(f"{key}: bundle holds no records")
    return records


@dataclass(frozen=True)
class StrayKey:
    key: str
    reason: str


class TransparencyLog:
    """Reads and writes the log's objects; holds no state beyond the store it wraps."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @property
    def description(self) -> str:
        return self.store.description

    # -- listing ------------------------------------------------------------------------------

    def _positions(self, prefix: str) -> tuple[list[int], list[StrayKey]]:
        positions, strays = [], []
        for key in self.store.list_keys(prefix):
            name = key[len(prefix) :]
            if _POSITION.match(name):
                positions.append(int(name))
            else:
                strays.append(StrayKey(key, f"not a {prefix.rstrip('/')} key (expected 20 digits)"))
        return positions, strays

    def bundle_starts(self) -> list[int]:
        return self._positions(ENTRIES)[0]

    def checkpoint_sizes(self) -> list[int]:
        return self._positions(CHECKPOINTS)[0]

    def stray_keys(self) -> list[StrayKey]:
        """Objects under the log's folders whose names are not positions."""
        return self._positions(ENTRIES)[1] + self._positions(CHECKPOINTS)[1]

    # -- reading ------------------------------------------------------------------------------

    def read_bundle(self, start: int) -> list[bytes]:
        key = position_key(ENTRIES, start)
        return decode_bundle(self.store.get(key), key=key)

    def iter_bundles(self, starts: Sequence[int] | None = None, *, from_index: int = 0) -> Iterator[tuple[int, list[bytes]]]:
        """Yield (start, records) in order from the bundle holding `from_index`; refuse gaps and overlaps."""
        starts = self.bundle_starts() if starts is None else starts
        expected: int | None = None
        for position, start in enumerate(starts):
            following = starts[position + 1] if position + 1 < len(starts) else None
            if following is not None and following <= from_index:
                continue
            if expected is None:
                if start > from_index:
                    raise LogLayoutError(f"no entry bundle holds entry {from_index}: the next one starts at {start}")
            elif start != expected:
                problem = "gap" if start > expected else "overlap"
                raise LogLayoutError(
                    f"{problem} in the log: the bundle before ends at entry {expected}, the next starts at {start}"
                )
            records = self.read_bundle(start)
            expected = start + len(records)
            if following is not None and following < expected:
                raise LogLayoutError(
                    f"overlap in the log: bundle {start} holds entries up to {expected - 1}, the next starts at {following}"
                )
            yield start, records

    def read_checkpoint(self, size: int) -> bytes:
        return self.store.get(position_key(CHECKPOINTS, size))

    # -- writing ------------------------------------------------------------------------------

    def write_bundle(self, start: int, records: Sequence[bytes]) -> None:
        self.store.put_immutable(position_key(ENTRIES, start), encode_bundle(records))

    def write_checkpoint(self, size: int, note: bytes) -> None:
        self.store.put_immutable(position_key(CHECKPOINTS, size), note)
