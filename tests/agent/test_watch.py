"""The corpus watcher: a file is read only once it has stopped changing; old files count at once."""

from __future__ import annotations

import os
from pathlib import Path

from mshale_fl.agents.partner.watch import CorpusWatcher


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_file_being_written_is_settled_only_after_it_stops_changing(tmp_path: Path) -> None:
    old = tmp_path / "old.md"
    old.write_text("# Old\n1. Mix.\n")
    os.utime(old, (1_000, 1_000))
    monotonic, wall = Clock(0.0), Clock(2_000.0)
    watcher = CorpusWatcher(tmp_path, settle_seconds=2.0, monotonic=monotonic, wall_clock=wall)

    growing = tmp_path / "new.md"
    growing.write_text("# New\n")
    os.utime(growing, (1_999.5, 1_999.5))  # written half a second ago
    scan = watcher.scan()
    assert set(scan.settled) == {"old.md"} and scan.unsettled == 1 and scan.present == {"old.md", "new.md"}

    monotonic.now, wall.now = 1.0, 2_001.0  # one second later, more is written
    growing.write_text("# New\n1. Centrifuge at 1000 x g.\n")
    os.utime(growing, (2_001.0, 2_001.0))
    assert set(watcher.scan().settled) == {"old.md"}

    monotonic.now, wall.now = 2.5, 2_002.5  # unchanged for 1.5 s: not yet
    assert set(watcher.scan().settled) == {"old.md"}
    monotonic.now, wall.now = 3.1, 2_003.1  # unchanged for 2.1 s: settled
    scan = watcher.scan()
    assert set(scan.settled) == {"old.md", "new.md"} and scan.unsettled == 0


def test_only_the_files_extract_reads_are_watched(tmp_path: Path) -> None:
    for name in ("a.md", "b.txt", "c.json", "d.pdf", "mshale.toml", ".a.md.swp", "notes.docx~", "a.md.outcome.json"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "e.md").write_text("x")
    scan = CorpusWatcher(tmp_path, settle_seconds=0).scan()
    assert set(scan.settled) == {"a.md", "b.txt", "c.json", "d.pdf"}
