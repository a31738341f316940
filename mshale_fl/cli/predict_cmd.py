"""`mshale-fl predict --specs DIR | --vectors FILE-or-DIR [--api-key KEY] [--batch-size N] [--json]`.

Asks Mishale's predict workers for the predicted efficiency of each protocol that may leave (the
same rule as `submit`: see mshale_fl/access/prediction_requests.py) and prints one row per protocol:
the prediction and the model version that made it, or why it was denied and what would grant it,
or why it was never sent. The key may come from `MSHALE_API_KEY` and is never printed.

Exit status: 0 every protocol sent got a prediction (or nothing may be sent), 1 some were denied,
3 some got no answer before the timeout, 2 a mistake to fix (bad key, no DPA for vectors, broker
unreachable, a path outside an extraction folder), printed as one line.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mshale_fl.access.client import PredictionOutcome, open_access_client
from mshale_fl.access.prediction_requests import MAX_BATCH, PredictionAsk, extraction_folder, plan_predictions
from mshale_fl.agents.partner.transmission import load_partner_config
from mshale_fl.config import get_settings
from mshale_fl.errors import UserFacingError
from mshale_fl.ledger.api_keys import partner_id_from_key
from mshale_fl.logging import configure_logging

EXIT_DENIED = 1
EXIT_UNANSWERED = 3


def _fail(message: object, code: int = 2) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(message))}", highlight=False)
    return typer.Exit(code)


def predict(
    specs: Annotated[
        Path | None,
        typer.Option(
            "--specs", help="An extraction output folder (or a folder or spec file in it): predict from specs (Tier 1)."
        ),
    ] = None,
    vectors: Annotated[
        Path | None,
        typer.Option(
            "--vectors",
            help="A Tier 2 extraction output folder, or a folder or vector file in it: predict from feature vectors.",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="MSHALE_API_KEY",
            show_default=False,
            show_envvar=True,
            help="Your partner API key (better: set MSHALE_API_KEY).",
        ),
    ] = None,  # fmt: skip
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", min=1, max=MAX_BATCH, help="Items per request; more than 1 is a batch (Tier 2)."),
    ] = 1,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for the answers.")] = 60.0,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Partner config declaring your agreements (default: the one extract used)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Predicted protocol efficiency for your specs (Tier 1) or feature vectors (Tier 2), from the latest model."""
    if (specs is None) == (vectors is None):
        raise _fail("pass exactly one of --specs DIR or --vectors FILE-or-DIR")
    if not api_key:
        raise _fail("no API key: pass --api-key or set MSHALE_API_KEY")
    path, kind = (specs, "specs") if specs is not None else (vectors, "vectors")
    assert path is not None
    try:
        partner_id = partner_id_from_key(api_key)
        folder = extraction_folder(path)
        partner_config = load_partner_config(folder, config) if kind == "vectors" or config is not None else None
        ask = plan_predictions(path, kind, partner_id, config=partner_config, batch_size=batch_size)  # type: ignore[arg-type]
    except UserFacingError as error:
        raise _fail(error) from None
    settings = get_settings()
    if not structlog.is_configured():
        configure_logging(settings.log_level)  # to stderr: stdout stays clean for the table and --json
    outcomes: list[PredictionOutcome] = []
    if ask.requests:
        console = Console(stderr=True)
        progress = Progress(
            TextColumn(f"asking for predictions as {partner_id}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=True, disable=json_output or not console.is_terminal,
        )  # fmt: skip
        task = progress.add_task("predict", total=len(ask.requests))

        async def run() -> list[PredictionOutcome]:
            async with open_access_client(api_key, settings.broker_url) as client:
                events = [event for event, _ in ask.requests]
                return await client.predict(
                    events, timeout=timeout, progress=lambda n: progress.update(task, completed=n)
                )

        try:
            with progress:
                outcomes = asyncio.run(run())
        except UserFacingError as error:
            raise _fail(error) from None
        except KeyboardInterrupt:
            raise _fail("interrupted", 130) from None
    result = result_rows(ask, outcomes)
    if json_output:
        typer.echo(json.dumps({"partner_id": partner_id, "kind": kind, **result}, indent=2, sort_keys=True))
    else:
        _print(partner_id, kind, result, timeout)
    summary = result["summary"]
    if summary["denied"]:
        raise typer.Exit(EXIT_DENIED)
    if summary["unanswered"]:
        raise typer.Exit(EXIT_UNANSWERED)


def result_rows(ask: PredictionAsk, outcomes: list[PredictionOutcome]) -> dict[str, Any]:
    """One row per protocol asked about (and per protocol withheld), plus a summary."""
    rows: list[dict[str, Any]] = []
    for (request, items), outcome in zip(ask.requests, outcomes, strict=True):
        answer = outcome.answer
        efficiency: dict[str, float] = {}
        if answer is not None and answer.type == "prediction.ready":
            efficiency = {p.item_hash: p.efficiency for p in answer.payload.predictions}
        for item in items:
            row: dict[str, Any] = {
                "source": item.source,
                "item_hash": item.content_hash,
                "request_id": str(request.event_id),
            }
            if answer is None:
                row.update(
                    status="unanswered", reasons=[], remedy="run predict again (is `mshale-fl worker predict` running?)"
                )
            elif answer.type == "prediction.ready":
                row.update(status="predicted", efficiency=efficiency.get(item.content_hash),
                           model_version=answer.payload.model_version)  # fmt: skip
            else:
                row.update(status="denied", reasons=[r.model_dump(mode="json") for r in answer.payload.reasons],
                           remedy=answer.payload.remedy)  # fmt: skip
            rows.append(row)
    withheld = [
        {"source": item.source, "sensitivity": item.sensitivity.value, "reason": item.decision.reason,
         "explanation": item.decision.explanation}
        for item in ask.withheld
    ]  # fmt: skip
    count = lambda status: sum(1 for row in rows if row["status"] == status)  # noqa: E731
    return {
        "summary": {
            "protocols": len(ask.selected),
            "requests": len(ask.requests),
            "predicted": count("predicted"),
            "denied": count("denied"),
            "unanswered": count("unanswered"),
            "withheld": len(withheld),
        },
        "predictions": rows,
        "withheld": withheld,
    }


STYLE = {"predicted": "green", "denied": "red", "unanswered": "yellow"}


def _print(partner_id: str, kind: str, result: dict[str, Any], timeout: float) -> None:
    console = Console(highlight=False, soft_wrap=False)
    rows, summary = result["predictions"], result["summary"]
    if rows:
        table = Table(title=f"Predicted efficiency for partner {partner_id} (from {kind})", title_justify="left")
        for column in ("protocol", "item", "efficiency", "model", "status / why"):
            table.add_column(column, overflow="fold", justify="right" if column in ("efficiency", "model") else "left")
        for row in rows:
            status = row["status"]
            if status == "predicted":
                why = f"[{STYLE[status]}]predicted[/]"
                efficiency, model = f"{row['efficiency']:.3f}", str(row["model_version"])
            else:
                reasons = "; ".join(f"{r['code']}: {r['message']}" for r in row.get("reasons", []))
                why = f"[{STYLE[status]}]{status}[/] " + escape(
                    reasons + (f" -> {row['remedy']}" if row.get("remedy") else "")
                )
                efficiency = model = "-"
            table.add_row(escape(row["source"]), row["item_hash"][:12], efficiency, model, why)
        console.print(table)
    if result["withheld"]:
        withheld = Table("protocol", "label", "withheld because", title="Withheld (never sent)", title_justify="left")
        for row in result["withheld"]:
            withheld.add_row(
                escape(row["source"]), row["sensitivity"], escape(f"{row['reason']}: {row['explanation']}")
            )
        console.print(withheld)
    line = (f"{summary['predicted']} predicted, {summary['denied']} denied, {summary['withheld']} withheld "
            f"of {summary['protocols']} protocol(s), in {summary['requests']} request(s)")  # fmt: skip
    if summary["unanswered"]:
        line += f"; {summary['unanswered']} without an answer after {timeout:g} s"
    if not summary["requests"]:
        line = f"Nothing to ask: none of the {summary['protocols']} protocol(s) may leave as {kind} ({summary['withheld']} withheld)."
    console.print(line)
