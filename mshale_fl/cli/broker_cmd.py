"""`mshale-fl broker declare` and `mshale-fl events tail`: the broker topology and its history.

Broker failures (RabbitMQ not running, wrong credentials, a queue declared with other arguments)
are `UserFacingError`s: printed as one line on stderr with their exit code (2), never a traceback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer

from mshale_fl.broker.connection import connect
from mshale_fl.broker.errors import BrokerError, redact_url
from mshale_fl.broker.replay import StreamRecord, parse_start, replay_url
from mshale_fl.broker.topology import declare_configured_topology
from mshale_fl.config import get_settings

broker_app = typer.Typer(help="The RabbitMQ topology (exchanges, quorum queues, the event stream).", no_args_is_help=True)
events_app = typer.Typer(help="The event history kept in the stream mshale.events.log.", no_args_is_help=True)



# Callbacks make each app a command group even with a single command, so the commands keep their
# names (`broker declare`, `events tail`) however the apps are mounted.
@broker_app.callback()
def _broker_group() -> None:
    """The RabbitMQ topology (exchanges, quorum queues, the event stream)."""


@events_app.callback()
def _events_group() -> None:
    """The event history kept in the stream mshale.events.log."""
T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coroutine)
    except BrokerError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(error.exit_code) from None


@broker_app.command("declare")
def declare(
    url: str = typer.Option(None, "--url", help="AMQP URL (default: MSHALE_BROKER_URL)", show_default=False),
) -> None:
    """Declare every exchange, queue, stream and binding; safe to run again at any time."""
    settings = get_settings()
    broker_url = url or settings.broker_url

    async def main() -> None:
        connection = await connect(broker_url, robust=False, name="mshale-fl broker declare")
        try:
            declared = await declare_configured_topology(connection, settings)
        finally:
            await connection.close()
        typer.echo(
            f"declared {len(declared.exchanges)} exchanges, {len(declared.queues)} queues "
            f"({', '.join(declared.queues)}) and {declared.bindings} bindings on {redact_url(broker_url)}"
        )

    _run(main())


@broker_app.command("ping")
def ping(
    url: str = typer.Option(None, "--url", help="AMQP URL (default: MSHALE_BROKER_URL)", show_default=False),
) -> None:
    """Connect to RabbitMQ and disconnect: exit 0 when reachable (used by health checks)."""
    broker_url = url or get_settings().broker_url

    async def main() -> None:
        connection = await connect(broker_url, robust=False, name="mshale-fl broker ping")
        await connection.close()
        typer.echo(f"ok: {redact_url(broker_url)}")

    _run(main())


@events_app.command("tail")
def tail(
    start: str = typer.Option("first", "--from", help="first, last, next, an offset, or an ISO-8601 time (UTC)"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table"),
    limit: int = typer.Option(None, "--limit", min=1, help="Stop after this many events", show_default=False),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep waiting for new events"),
    url: str = typer.Option(None, "--url", help="AMQP URL (default: MSHALE_BROKER_URL)", show_default=False),
) -> None:
    """Print the events of the stream from a point on, one line each, in publish order."""
    try:
        start_from = parse_start(start)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--from") from None
    broker_url = url or get_settings().broker_url

    async def main() -> int:
        shown = 0
        async for record in replay_url(broker_url, start_from, follow=follow):
            typer.echo(_json_line(record) if as_json else _text_line(record))
            shown += 1
            if limit is not None and shown >= limit:
                break
        return shown

    _run(main())


def _text_line(record: StreamRecord) -> str:
    try:
        event = record.event()
    except ValueError as error:
        when = record.timestamp.isoformat() if record.timestamp else "-"
        return f"{record.offset}\t{when}\t{record.routing_key}\t{record.message_id or '-'}\tINVALID ({_short(error)})"
    return f"{record.offset}\t{event.occurred_at.isoformat()}\t{record.routing_key}\t{event.event_id}"


def _json_line(record: StreamRecord) -> str:
    line: dict[str, Any] = {"offset": record.offset, "routing_key": record.routing_key}
    try:
        line["event"] = record.event().model_dump(mode="json")
    except ValueError as error:
        line["invalid"] = _short(error)
        line["body"] = record.body.decode("utf-8", errors="replace")
    return json.dumps(line, separators=(",", ":"))


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:200]
