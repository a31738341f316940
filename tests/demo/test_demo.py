"""The README's main job, run as a user runs it, with its summary checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def _processes_with_home_under(home: Path) -> list[str]:
    """PIDs of live processes whose MSHALE_HOME lies under `home` (the demo's workers set it)."""
    found = []
    needle = f"MSHALE_HOME={home}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes():
                found.append(environ.parent.name)
        except OSError:  # ended while we looked, or not ours to read
            continue
    return found


def _run_demo(home: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "mshale_fl.cli", "demo", "--home", str(home), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_demo_runs_end_to_end_twice_and_leaves_nothing_behind(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    for _ in range(2):  # it can run again: fresh vhost, fresh state, same outcome
        summary = _run_demo(home)
        by_status: dict[str, list[dict]] = {}
        for receipt in summary["receipts"]:
            by_status.setdefault(receipt["status"], []).append(receipt)
        assert {r["source"] for r in by_status["accepted"]} == {"plasmid-miniprep.md", "pcr-colony-screen.txt"}
        withheld = {r["source"]: r["reasons"][0]["code"] for r in by_status["withheld"]}
        assert withheld["proprietary-lysis.md"] == "full_ip_never_leaves"
        assert withheld["internal/bead-cleanup.md"] == "internal_at_most_vectors"
        assert "rejected" not in by_status
        assert [p["tier"] for p in summary["partners"]] == [1, 2, 3]
        audit = summary["audit"]
        assert audit["ok"] is True
        # two submissions and their two receipts at least, every one under a signed checkpoint
        assert audit["verified_size"] == audit["entries"] >= 4
        assert len(audit["verified_root"]) == 64
    assert not _processes_with_home_under(home), "demo workers left running"
