"""`mshale-fl model init`: (re)create version 0 of the shared model, deterministically from a seed."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mshale_fl.errors import UserFacingError

app = typer.Typer(help="The shared model mshale1: create model files.", no_args_is_help=True)
DEFAULT_OUTPUT = Path("models/mshale1_v0.pt")


@app.command("init")
def init(
    output: Path = typer.Option(DEFAULT_OUTPUT, "--output", "-o", help="Model file to write"),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the initial weights (0 gives the shipped file)"),
    force: bool = typer.Option(False, "--force", help="Replace an existing file with different weights"),
    as_json: bool = typer.Option(False, "--json", help="Print the path and digest as JSON"),
) -> None:
    """Write version 0 of mshale1 (223 -> 64 -> 32 -> 1): the same seed always gives the same weights and digest."""
    # Imported here: torch takes seconds to import and other commands should not pay for it.
    from mshale_fl.training.model import (
        ModelFileError,
        ModelMetadata,
        initial_model,
        load_model,
        model_digest,
        save_model,
    )

    model = initial_model(seed)
    digest = model_digest(model)
    if output.exists():
        try:
            existing, metadata = load_model(output)
            same = model_digest(existing) == digest and metadata == ModelMetadata(version=0)
        except ModelFileError:
            same = False
        if not same and not force:
            raise UserFacingError(f"{output} exists with other contents; pass --force to replace it")
    save_model(output, model, ModelMetadata(version=0, parent=None, rounds=0))
    if as_json:
        typer.echo(json.dumps({"path": str(output), "sha256": digest, "seed": seed, "version": 0}))
    else:
        typer.echo(f"wrote {output} (mshale1 version 0, seed {seed}, sha256 {digest})")
