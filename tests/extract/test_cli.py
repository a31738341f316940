"""`mshale-fl extract` from the command line: summaries, JSON, and user mistakes without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from mshale_fl.cli.extract_cmd import extract

from .conftest import write

STEP = "Title\nAdd 5 ml water and incubate at 37 °C for 1 h.\n"


def _invoke(*args: str):
    app = typer.Typer()
    app.command()(extract)
    return CliRunner().invoke(app, list(args))


def test_json_summary_lists_unreadable_files(tmp_path: Path) -> None:
    write(tmp_path / "corpus" / "mshale.toml", '[sensitivity]\ndefault = "published"\n')
    write(tmp_path / "corpus" / "ok.txt", STEP)
    write(tmp_path / "corpus" / "bad.json", "{")
    result = _invoke("--corpus", str(tmp_path / "corpus"), "--output", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["summary"] == {"by_sensitivity": {"published": 1}, "protocols": 1, "transmittable": 1,
                                  "unreadable": 1, "withheld": 0}  # fmt: skip
    assert summary["unreadable"][0]["source"] == "bad.json"
    assert summary["config"].endswith("mshale.toml")
    assert (tmp_path / "out" / "specs" / "ok.txt.spec.json").is_file()


def test_human_summary_names_labels_and_reasons(tmp_path: Path) -> None:
    write(tmp_path / "corpus" / "ok.txt", STEP)
    result = _invoke("--corpus", str(tmp_path / "corpus"), "--output", str(tmp_path / "out"), "--local-mode")
    assert result.exit_code == 0, result.output
    assert "full-ip" in result.output and "full_ip_never_leaves" in result.output
    assert "local mode" in result.output


def test_user_mistakes_exit_2_with_a_message(tmp_path: Path) -> None:
    write(tmp_path / "file.txt", STEP)
    write(tmp_path / "corpus" / "ok.txt", STEP)
    write(tmp_path / "bad.toml", "[sensitivity]\ndefault = 3\n")
    cases = [
        (["--corpus", str(tmp_path / "missing"), "--output", str(tmp_path / "o")], "does not exist"),
        (["--corpus", str(tmp_path / "corpus"), "--output", str(tmp_path / "file.txt")], "not a folder"),
        (["--corpus", str(tmp_path / "corpus"), "--output", str(tmp_path / "o"), "--config", str(tmp_path / "bad.toml")],
         "sensitivity.default"),
        (["--corpus", str(tmp_path / "corpus"), "--output", str(tmp_path / "o"), "--config", str(tmp_path / "nope.toml")],
         "does not exist"),
    ]  # fmt: skip
    for args, message in cases:
        result = _invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
    assert _invoke("--corpus", str(tmp_path / "corpus"), "--output", str(tmp_path / "o"), "--tier", "3").exit_code == 2


def test_a_corrupt_salt_is_refused_rather_than_replaced(tmp_path: Path) -> None:
    write(tmp_path / "corpus" / "ok.txt", STEP)
    write(tmp_path / ".mshale" / "salt", "not a salt\n")
    result = _invoke("--corpus", str(tmp_path / "corpus"), "--output", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "is not a salt" in result.output
    assert (tmp_path / ".mshale" / "salt").read_text() == "not a salt\n"
