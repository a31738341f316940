"""Watching the corpus folder by polling: which protocol files exist, and which have settled.

Why polling and not inotify (or `watchfiles`, which is not a dependency): a lab's corpus often
sits on a network share (NFS, SMB) or a container bind mount, where kernel file events are not
delivered for writes made by other machines; a scan every few seconds works everywhere, and its
cost is one `stat` per file (10 000 files take a few tens of milliseconds). Content is hashed only
when a file's signature (size, modification time, inode) changes.

Debouncing: a file being written changes its signature from one scan to the next, so a file is
*settled* only once its signature has stayed the same for `settle_seconds`. A file already
older than that when first seen (the corpus as it was when the agent started) is settled at once.
The files considered are exactly those `extract` reads (`corpus_files`: protocol suffixes,
hidden files and folders skipped — editors' swap files among them — and outcome sidecars and
`mshale.toml` left out).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mshale_fl.agents.partner.extract.reader import corpus_files


@dataclass(frozen=True, slots=True)
class FileSignature:
    """What a scan sees of a file without reading it; a change means the content may have changed."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, result: os.stat_result) -> FileSignature:
        return cls(result.st_size, result.st_mtime_ns, result.st_ino)


@dataclass(frozen=True)
class Scan:
    """One look at the corpus: settled files (source -> path, signature), how many are still changing."""

    settled: dict[str, tuple[Path, FileSignature]] = field(default_factory=dict)
    unsettled: int = 0
    present: frozenset[str] = frozenset()


class CorpusWatcher:
    """Polls `corpus`; `scan()` returns the files whose signature has been stable for `settle_seconds`."""

    def __init__(
        self,
        corpus: Path,
        *,
        settle_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.corpus = Path(corpus)
        self.settle_seconds = settle_seconds
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._first_seen: dict[str, tuple[FileSignature, float]] = {}

    def scan(self) -> Scan:
        now, wall = self._monotonic(), self._wall_clock()
        settled: dict[str, tuple[Path, FileSignature]] = {}
        unsettled = 0
        seen: dict[str, tuple[FileSignature, float]] = {}
        for path in corpus_files(self.corpus):
            try:
                signature = FileSignature.of(path.stat())
            except OSError:  # removed or renamed between listing and stat: the next scan sees it
                continue
            source = path.relative_to(self.corpus).as_posix()
            previous = self._first_seen.get(source)
            if previous is not None and previous[0] == signature:
                since = previous[1]
            elif previous is None and wall - signature.mtime_ns / 1e9 >= self.settle_seconds:
                since = now - self.settle_seconds  # already old when first seen: settled
            else:
                since = now
            seen[source] = (signature, since)
            if now - since >= self.settle_seconds:
                settled[source] = (path, signature)
            else:
                unsettled += 1
        self._first_seen = seen
        return Scan(settled=settled, unsettled=unsettled, present=frozenset(seen))


__all__ = ["CorpusWatcher", "FileSignature", "Scan"]
