"""`mshale-fl corpus synth` from the command line: summary, JSON, and mistakes as one line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from mshale_fl.cli import app
from mshale_fl.corpus import GROUND_TRUTH_NAME, MANIFEST_NAME


def test_json_summary_and_the_files_it_names(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    args = ["corpus", "synth", "--partners", "2", "--out", str(out), "--protocols-per-partner", "6", "--seed", "3"]
    result = CliRunner().invoke(app, [*args, "--json", "--reveal-ground-truth"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["manifest"] == str(out / MANIFEST_NAME) and summary["ground_truth"] == str(out / GROUND_TRUTH_NAME)
    assert [p["partner_id"] for p in summary["partners"]] == ["lab-01", "lab-02"]
    assert all(p["protocols"] == 6 and set(p["labels"]) == {"published", "internal", "efficiency", "full-ip"}
               for p in summary["partners"])  # fmt: skip
    assert (out / "lab-01" / "mshale.toml").is_file() and (out / GROUND_TRUTH_NAME).is_file()

    human = CliRunner().invoke(app, [*args, "--force"])
    assert human.exit_code == 0, human.output
    assert "Synthesized 2 partner corpora" in human.output and "Ground truth: hidden" in human.output
    assert not (out / GROUND_TRUTH_NAME).exists()  # the stale one went with the corpus it described


def test_an_occupied_folder_is_refused_in_one_line_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    completed = subprocess.run(
        [sys.executable, "-m", "mshale_fl.cli", "corpus", "synth", "--partners", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 2
    assert completed.stderr.strip().count("\n") == 0 and "not empty" in completed.stderr and "--force" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
