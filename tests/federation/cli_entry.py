"""`serve` and `join` as a command line for process tests, as the `mshale-fl` app will mount them.

Used while `mshale-fl serve` / `mshale-fl join` are not registered in the main CLI yet (the lead
registers them); the error handling is the main CLI's (one line, exit 2). With
MSHALE_TEST_SYNTHETIC_DATA=1 the partner trains on tests/federation/conftest.synthetic_data
instead of a corpus.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mshale_fl.cli.train_cmd import join, serve  # noqa: E402
from mshale_fl.errors import UserFacingError  # noqa: E402

app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
app.command("serve")(serve)
app.command("join")(join)


if __name__ == "__main__":
    if os.environ.get("MSHALE_TEST_SYNTHETIC_DATA") == "1":
        from mshale_fl.agents.partner import client_app

        from tests.federation.synthetic import synthetic_data

        client_app.load_partner_data = synthetic_data  # type: ignore[assignment]
    try:
        result = app(standalone_mode=False)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    sys.exit(result if isinstance(result, int) else 0)
