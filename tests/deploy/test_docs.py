"""The docs say what the code does: the CLI reference is regenerated from the app and must match."""

from __future__ import annotations

from pathlib import Path

from mshale_fl.cli.reference import render

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_current() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == render(), (
        "docs/cli.md is stale: run `python -m mshale_fl.cli.reference > docs/cli.md`"
    )


def test_readme_quick_start_has_exactly_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    block = quick_start.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["./run demo", "./run test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run test" in ci
