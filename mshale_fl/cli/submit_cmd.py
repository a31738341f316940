"""`mshale-fl submit --specs DIR --api-key KEY [--timeout S] [--json]`: send the transmittable specs, print receipts.

The key may also come from `MSHALE_API_KEY` (preferable: a command line shows in `ps`). It is
never printed or logged. Exit status: 0 every submission accepted (or nothing to send), 1 some
rejected, 3 some receipts still missing at the timeout, 2 a mistake to fix (bad key, broker
refused or unreachable, missing or empty folder) printed as one line.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import structlog
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mshale_fl.agents.partner.submit import DEFAULT_TIMEOUT, SubmissionResult, submit_plan
from mshale_fl.agents.partner.transmission import plan_transmission
from mshale_fl.config import get_settings
from mshale_fl.errors import UserFacingError
from mshale_fl.ledger.api_keys import partner_id_from_key
from mshale_fl.logging import configure_logging

EXIT_REJECTED = 1
EXIT_PENDING = 3


def _fail(message: object, code: int = 2) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def submit(
    specs: Annotated[Path, typer.Option("--specs", help="The output folder of `mshale-fl extract` (specs/ and manifest.json).")],
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="MSHALE_API_KEY", show_default=False, show_envvar=True,
                     help="Your partner API key (better: set MSHALE_API_KEY)."),
    ] = None,  # fmt: skip
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Seconds to wait for the receipts (0: do not wait).")
    ] = DEFAULT_TIMEOUT,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Publish every transmittable spec as a spec.submitted event, as your partner identity, and print the receipts."""
    if not api_key:
        raise _fail("no API key: pass --api-key or set MSHALE_API_KEY")
    try:
        partner_id = partner_id_from_key(api_key)
        plan = plan_transmission(specs, tier=1)
    except UserFacingError as error:
        raise _fail(error) from None
    settings = get_settings()
    if not structlog.is_configured():
        configure_logging(settings.log_level)  # to stderr: stdout stays clean for the table and --json
    console = Console(stderr=True)
    total = len(plan.transmitted)
    progress = Progress(
        TextColumn(f"submitting as {partner_id}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=json_output or not console.is_terminal or total == 0,
    )  # fmt: skip
    task = progress.add_task("submit", total=total)

    def on_confirmed(confirmed: int, _total: int | None) -> None:
        progress.update(task, completed=confirmed)

    try:
        with progress:
            result = asyncio.run(
                submit_plan(plan, api_key, broker_url=settings.broker_url, timeout=timeout,
                            window=settings.publish_window, progress=on_confirmed)
            )  # fmt: skip
    except UserFacingError as error:
        raise _fail(error) from None
    except KeyboardInterrupt:
        raise _fail("interrupted: what was confirmed is submitted; run submit again to finish (it is safe)", 130) from None

    if json_output:
        typer.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True))
    else:
        _print_result(result, timeout)
    if result.rejected:
        raise typer.Exit(EXIT_REJECTED)
    if result.pending and timeout > 0:
        raise typer.Exit(EXIT_PENDING)


def _print_result(result: SubmissionResult, timeout: float) -> None:
    console = Console(highlight=False, soft_wrap=False)
    data = result.as_dict()
    summary = data["summary"]
    if not result.published:
        console.print(f"Nothing to submit: none of the {summary['protocols']} protocols may leave at Tier 1 "
                      f"({summary['withheld']} withheld). `mshale-fl inspect --specs {result.plan.folder}` says why.")  # fmt: skip
        return
    table = Table(title=f"Receipts for partner {result.partner_id}", title_justify="left")
    for column in ("protocol", "submission", "status", "reasons"):
        table.add_column(column, overflow="fold")
    style = {"accepted": "green", "rejected": "red", "pending": "yellow"}
    for row in data["receipts"]:
        reasons = "; ".join(f"{r['code']}: {r['message']}" for r in row["reasons"]) or "-"
        table.add_row(row["source"], row["submission_id"][:8], f"[{style[row['status']]}]{row['status']}[/]", reasons)
    for row in data["withheld"]:
        table.add_row(row["source"], "-", "[dim]withheld (not sent)[/]", f"{row['reason']}: {row['explanation']}")
    console.print(table)
    line = (f"Published {summary['published']} spec(s) as {result.partner_id}: {summary['accepted']} accepted, "
            f"{summary['rejected']} rejected")  # fmt: skip
    if timeout <= 0:
        line += "; receipts not awaited (--timeout 0)"
    elif summary["pending"]:
        line += f", {summary['pending']} without a receipt after {timeout:g} s (run submit again later: it is safe)"
    console.print(line + f"; {summary['withheld']} withheld.")
