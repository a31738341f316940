"""The `mshale-fl` command line: one Typer app assembled from one module per command group."""

from __future__ import annotations

import typer

from mshale_fl.cli import schema_cmd

app = typer.Typer(
    name="mshale-fl",
    help="Contribute lab protocol knowledge to a shared model without giving away your IP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(schema_cmd.app, name="schema")


def main() -> None:
    app()
