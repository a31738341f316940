"""`mshale-fl schema ...`: export the contract for partners in any language."""

from __future__ import annotations

import typer

app = typer.Typer(help="The event contract: JSON Schemas and an AsyncAPI document.", no_args_is_help=True)
