"""`serve` and `join` as a command line for process tests, as the `mshale-fl` app will mount them.

Used while `mshale-fl serve` / `mshale-fl join` are not registered in the main CLI yet (the lead
registers them); the error handling is the main CLI's (one line, exit 2).
"""

from __future__ import annotations

import sys

import typer

from mshale_fl.cli.train_cmd import join, serve
from mshale_fl.errors import UserFacingError

app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
app.command("serve")(serve)
app.command("join")(join)


if __name__ == "__main__":
    try:
        result = app(standalone_mode=False)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    sys.exit(result if isinstance(result, int) else 0)
