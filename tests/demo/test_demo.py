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


@pytest.mark.timeout(1500)  # two whole demos; on a loaded 2-core machine one can take a few minutes
def test_demo_runs_end_to_end_twice_and_leaves_nothing_behind(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    for _ in range(2):  # it can run again: fresh vhost, fresh state, same outcome
        summary = _run_demo(home)
        outcome = {
            (r["partner_id"], r["tier"], r["source"]): (r["status"], [reason["code"] for reason in r["reasons"] or []])
            for r in summary["receipts"]
        }
        # Tier 1: only published specs leave; the rest is withheld with its reason.
        assert outcome[("demo-alpha", 1, "plasmid-miniprep.md")] == ("accepted", [])
        assert outcome[("demo-alpha", 1, "pcr-colony-screen.txt")] == ("accepted", [])
        assert outcome[("demo-alpha", 1, "proprietary-lysis.md")] == ("withheld", ["full_ip_never_leaves"])
        assert outcome[("demo-alpha", 1, "internal/bead-cleanup.md")] == ("withheld", ["internal_at_most_vectors"])
        # Tier 2 with a DPA: vectors of everything but full-ip are accepted.
        beta = {source: status for (partner, _, source), (status, _) in outcome.items() if partner == "demo-beta"}
        assert beta.pop("proprietary-lysis.md") == "withheld"
        assert set(beta.values()) == {"accepted"} and len(beta) == 4
        # A Tier 1 partner sending vectors is rejected by Mishale, with the reason.
        assert outcome[("demo-alpha", 2, "plasmid-miniprep.md")] == ("rejected", ["tier.not_granted"])
        assert summary["replay"]["ok"] is True and summary["replay"]["compared"] == summary["audit"]["entries"]
        # Tier 3: three DP rounds with all three trainers, a published model, budgets spent within
        # the partners' own epsilon (0.5), as the ledger recorded them.
        training = summary["training"]
        assert [(r["round"], r["failed"], len(r["participants"])) for r in training["rounds"]] == [
            (1, False, 3), (2, False, 3), (3, False, 3)
        ]  # fmt: skip
        assert len(training["published_digest"]) == 64
        assert {b["partner_id"] for b in summary["budgets"]} == {"demo-gamma", "demo-delta", "demo-epsilon"}
        states = {b["partner_id"]: b["state"] for b in summary["budgets"]}
        for budget in summary["budgets"]:
            assert 0.0 < budget["spent"] <= 0.5 + 1e-9
        # demo-epsilon's small ledger budget ran under 10 %: the ledger paused it for this version.
        assert states == {"demo-gamma": "active", "demo-delta": "active", "demo-epsilon": "paused"}
        for record in training["rounds"]:
            metrics = record["metrics"]
            # secure aggregation unmasked all three updates; the loss is on Mishale's hold-out data
            assert metrics["secagg_unmasked"] == 3 and metrics["secagg_threshold"] == 2
            assert 0.0 <= metrics["eval_loss"] < 1.0
        assert [p["tier"] for p in summary["partners"]] == [1, 2, 3, 3, 3]
        # What partners get back: the Tier 1 partner's accepted specs are predicted, a Tier 3 trainer
        # downloads the model it helped train (verified against registry and log), Tier 2 may not.
        access = summary["access"]
        predictions = [row for row in access if row["action"] == "predict spec"]
        assert {row["item"] for row in predictions} == {"plasmid-miniprep.md", "pcr-colony-screen.txt"}
        assert all(row["status"] == "predicted" and 0.0 <= row["detail"] <= 1.0 for row in predictions)
        downloads = {row["partner_id"]: row for row in access if row["action"].startswith("download")}
        assert downloads["demo-gamma"]["status"] == "granted"
        assert downloads["demo-gamma"]["detail"] == training["published_digest"]
        assert downloads["demo-beta"]["status"] == "denied" and downloads["demo-beta"]["detail"] != "denied"
        audit = summary["audit"]
        assert audit["ok"] is True
        # two submissions and their two receipts at least, every one under a signed checkpoint
        assert audit["verified_size"] == audit["entries"] >= 4
        assert len(audit["verified_root"]) == 64
    assert not _processes_with_home_under(home), "demo workers left running"


@pytest.mark.timeout(300)
def test_a_demo_killed_with_sigkill_takes_its_workers_with_it(tmp_path: Path) -> None:
    import os
    import signal
    import time

    home = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "mshale_fl.cli", "demo", "--home", str(home), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(_processes_with_home_under(home)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_processes_with_home_under(home)) >= 3, "the demo's workers did not start"
    finally:
        os.kill(demo.pid, signal.SIGKILL)
        demo.wait()
    deadline = time.monotonic() + 30
    while _processes_with_home_under(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_with_home_under(home) == []
