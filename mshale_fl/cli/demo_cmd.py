"""`mshale-fl demo`: the README's main job."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from mshale_fl.config import get_settings


def demo(
    home: Path = typer.Option(None, "--home", help="State folder for the demo (default: MSHALE_HOME/demo); wiped first"),
    keep_running: bool = typer.Option(False, "--keep-running", help="Leave the workers up afterwards (for the console)"),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON"),
) -> None:
    """Run a small federation locally: partners, extraction, submissions, workers, audit verification."""
    from mshale_fl.demo.runner import Demo, print_summary

    # Wide enough for the summary tables when output goes to a file or CI log.
    console = Console(stderr=as_json, width=None if sys.stdout.isatty() else 140)
    runner = Demo(home or get_settings().home / "demo", console, keep_running=keep_running)
    report = runner.run()
    if as_json:
        typer.echo(json.dumps(report.as_json(), sort_keys=True))
    else:
        print_summary(report, console)
    if keep_running:
        sys.stdout.flush()
        runner.stay_up()
    if not (report.audit.get("ok") and report.replay.get("ok")):
        raise typer.Exit(1)
