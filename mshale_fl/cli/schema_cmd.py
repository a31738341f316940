"""`mshale-fl schema export DIR`: the contract as files, for partners in any language."""

from __future__ import annotations

import json
from pathlib import Path

import typer
import yaml

from mshale_fl.fileio import write_atomic
from mshale_fl.schemas.export import asyncapi_document, json_schemas

app = typer.Typer(help="The event contract: JSON Schemas and an AsyncAPI document.", no_args_is_help=True)


@app.command("export")
def export(
    directory: Path = typer.Argument(..., help="Folder to write the schemas into (created if missing)"),
    as_json: bool = typer.Option(False, "--json", help="Print the written file names as JSON"),
) -> None:
    """Write a JSON Schema per model and asyncapi.yaml, generated from the models."""
    written: list[str] = []
    for name, document in sorted(json_schemas().items()):
        write_atomic(directory / name, json.dumps(document, indent=2, sort_keys=True) + "\n")
        written.append(name)
    write_atomic(directory / "asyncapi.yaml", yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True))
    written.append("asyncapi.yaml")
    if as_json:
        typer.echo(json.dumps({"directory": str(directory), "files": written}))
    else:
        typer.echo(f"wrote {len(written)} files to {directory}")
