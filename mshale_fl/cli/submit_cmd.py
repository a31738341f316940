"""`mshale-fl submit --specs DIR --api-key KEY [--batch-size N] [--config FILE] [--timeout S] [--json]`.

Sends what the folder's tier allows: a Tier 1 folder's transmittable specs (`spec.submitted`), a
Tier 2 folder's transmittable vectors in `vectors.submitted` batches; prints the receipts. A Tier 2
folder needs the partner config (`--config`, else the one `extract` used) to declare a DPA.

The key may also come from `MSHALE_API_KEY` (preferable: a command line shows in `ps`). It is
never printed or logged. Exit status: 0 every submission accepted (or nothing to send), 1 some
rejected, 3 some receipts still missing at the timeout, 2 a mistake to fix (bad key, no DPA for
Tier 2, broker refused or unreachable, missing or empty folder) printed as one line.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mshale_fl.agents.partner.batches import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE
from mshale_fl.agents.partner.submit import DEFAULT_TIMEOUT, SubmissionResult, submit_plan
from mshale_fl.agents.partner.transmission import load_partner_config, manifest_tier, plan_transmission
from mshale_fl.config import get_settings
from mshale_fl.errors import UserFacingError
from mshale_fl.ledger.api_keys import partner_id_from_key
from mshale_fl.logging import configure_logging

EXIT_REJECTED = 1
EXIT_PENDING = 3


def _fail(message: object, code: int = 2) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(message))}", highlight=False)
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
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=MAX_BATCH_SIZE, envvar="MSHALE_BATCH_SIZE",
                          help="Tier 2: at most this many vectors per vectors.submitted event.")
    ] = DEFAULT_BATCH_SIZE,  # fmt: skip
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Partner config declaring your agreements (default: the one extract used)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Publish what your extraction folder may send (Tier 1 specs, Tier 2 vector batches) as your partner identity, and print the receipts."""
    if not api_key:
        raise _fail("no API key: pass --api-key or set MSHALE_API_KEY")
    try:
        partner_id = partner_id_from_key(api_key)
        tier = manifest_tier(specs)
        partner_config = load_partner_config(specs, config) if tier == 2 or config is not None else None
        plan = plan_transmission(specs, tier=tier, config=partner_config)
        if partner_config is not None and not plan.local_mode:
            partner_config.require_agreement_for(tier)
    except UserFacingError as error:
        raise _fail(error) from None
    settings = get_settings()
    if not structlog.is_configured():
        configure_logging(settings.log_level)  # to stderr: stdout stays clean for the table and --json
    console = Console(stderr=True)
    unit = "batches" if plan.tier == 2 else "specs"
    progress = Progress(
        TextColumn(f"submitting {unit} as {partner_id}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=json_output or not console.is_terminal or not plan.transmitted,
    )  # fmt: skip
    task = progress.add_task("submit", total=None)

    def on_confirmed(confirmed: int, total: int | None) -> None:
        progress.update(task, completed=confirmed, total=total)

    try:
        with progress:
            result = asyncio.run(
                submit_plan(plan, api_key, broker_url=settings.broker_url, timeout=timeout,
                            window=settings.publish_window, batch_size=batch_size, progress=on_confirmed)
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


STYLE = {"accepted": "green", "rejected": "red", "pending": "yellow"}
MAX_REASONS_SHOWN = 5


def _reasons_text(reasons: list[dict]) -> str:
    shown = [f"{r['code']}" + (f" ({r['field']})" if r.get("field") else "") + f": {r['message']}"
             for r in reasons[:MAX_REASONS_SHOWN]]  # fmt: skip
    if len(reasons) > MAX_REASONS_SHOWN:
        shown.append(f"... {len(reasons) - MAX_REASONS_SHOWN} more (--json lists them all)")
    return escape("; ".join(shown) or "-")


def _print_result(result: SubmissionResult, timeout: float) -> None:
    console = Console(highlight=False, soft_wrap=False)
    data = result.as_dict()
    summary = data["summary"]
    tier = result.plan.tier
    if not result.published:
        console.print(f"Nothing to submit: none of the {summary['protocols']} protocols may leave at Tier {tier} "
                      f"({summary['withheld']} withheld). `mshale-fl inspect --specs {result.plan.folder}` says why.")  # fmt: skip
        return
    table = Table(title=f"Receipts for partner {result.partner_id}", title_justify="left")
    if tier == 2:
        # One row per batch: a per-protocol table of a large corpus would bury the reasons.
        for column in ("batch", "vectors", "label", "submission", "status", "reasons"):
            table.add_column(column, overflow="fold")
        for number, row in enumerate(data["submissions"], start=1):
            table.add_row(str(number), str(row["items"]), row["sensitivity"], row["submission_id"][:8],
                          f"[{STYLE[row['status']]}]{row['status']}[/]", _reasons_text(row["reasons"]))  # fmt: skip
    else:
        for column in ("protocol", "submission", "status", "reasons"):
            table.add_column(column, overflow="fold")
        for row in data["receipts"]:
            table.add_row(escape(row["source"]), row["submission_id"][:8], f"[{STYLE[row['status']]}]{row['status']}[/]",
                          _reasons_text(row["reasons"]))  # fmt: skip
        for row in data["withheld"]:
            table.add_row(escape(row["source"]), "-", "[dim]withheld (not sent)[/]", escape(f"{row['reason']}: {row['explanation']}"))
    console.print(table)
    if tier == 2 and data["withheld"]:
        withheld = Table("protocol", "label", "withheld because", title="Withheld (never sent)", title_justify="left")
        for row in data["withheld"]:
            withheld.add_row(escape(row["source"]), row["sensitivity"], escape(f"{row['reason']}: {row['explanation']}"))
        console.print(withheld)
    if tier == 2:  # counted in vectors: protocols with the same text share one
        batches = data["submissions"]
        counts = {status: sum(b["items"] for b in batches if b["status"] == status) for status in STYLE}
        line = (f"Published {sum(b['items'] for b in batches)} vector(s) in {len(batches)} batch(es) as "
                f"{result.partner_id}: {counts['accepted']} accepted, {counts['rejected']} rejected")  # fmt: skip
    else:
        line = (f"Published {summary['published']} spec(s) as {result.partner_id}: {summary['accepted']} accepted, "
                f"{summary['rejected']} rejected")  # fmt: skip
    if timeout <= 0:
        line += "; receipts not awaited (--timeout 0)"
    elif summary["pending"]:
        line += f", {summary['pending']} without a receipt after {timeout:g} s (run submit again later: it is safe)"
    console.print(line + f"; {summary['withheld']} withheld.")
