"""`mshale-fl console`: the read-only web page for operators and auditors."""

from __future__ import annotations

import errno
import json

import typer

from mshale_fl.config import get_settings
from mshale_fl.errors import UserFacingError
from mshale_fl.logging import configure_logging

DEFAULT_PORT = 8470


class ConsoleAddressError(UserFacingError):
    """The console cannot listen on the address asked for."""


def console(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (the console has no login: keep it local)"),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=0, max=65535, help="Port to listen on (0: any free port)"),
    refresh: int = typer.Option(10, "--refresh", min=2, max=3600, help="Seconds between page reloads"),
    verify_every: float = typer.Option(
        60.0, "--verify-every", min=0.0, help="Least seconds between two full verifications of a growing audit log"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the state once as JSON (what /api/state serves) and exit"),
) -> None:
    """Serve a read-only page: partners, training rounds and loss, privacy budgets, audit checkpoint, dead letters.

    Reads the deployment named by the MSHALE_* / MSHALE_AUDIT_* environment (ledger, MSHALE_HOME,
    audit store, broker vhost); changes nothing anywhere.
    """
    from mshale_fl.console.server import ConsoleServer, is_loopback
    from mshale_fl.console.sources import ConsoleSources
    from mshale_fl.console.state import ConsoleState

    settings = get_settings()
    configure_logging(settings.log_level)
    state = ConsoleState(ConsoleSources.from_settings(settings), refresh_seconds=refresh, verify_every=verify_every)
    if as_json:
        try:
            typer.echo(json.dumps(state.collect(), indent=2, sort_keys=True))
        finally:
            state.close()
        return
    try:
        server = ConsoleServer((host, port), state)
    except OSError as error:
        state.close()
        if error.errno == errno.EADDRINUSE:
            raise ConsoleAddressError(f"port {port} on {host} is in use; choose another with --port") from None
        raise ConsoleAddressError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    if not is_loopback(host):
        typer.echo(
            f"warning: listening on {host}: anyone who can reach it sees partners, budgets and the audit state "
            "(the console has no login)",
            err=True,
        )
    # The line tests and scripts read to find the port (with --port 0).
    typer.echo(f"console at {server.url} (read-only; Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        state.close()
