"""The `mshale-fl` command line: one Typer app assembled from one module per command group."""

from __future__ import annotations

import sys

import click
import typer

from mshale_fl.cli import (
    agent_cmd,
    audit_cmd,
    broker_cmd,
    console_cmd,
    corpus_cmd,
    demo_cmd,
    extract_cmd,
    inspect_cmd,
    model_cmd,
    partners_cmd,
    predict_cmd,
    schema_cmd,
    submit_cmd,
    train_cmd,
    worker_cmd,
)
from mshale_fl.errors import UserFacingError

app = typer.Typer(
    name="mshale-fl",
    help="Contribute lab protocol knowledge to a shared model without giving away your IP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# The main job
app.command("demo")(demo_cmd.demo)

# Partner side
app.command("extract")(extract_cmd.extract)
app.command("inspect")(inspect_cmd.inspect)
app.command("submit")(submit_cmd.submit)
app.command("join")(train_cmd.join)
app.command("predict")(predict_cmd.predict)
app.add_typer(agent_cmd.app, name="agent")

# Mishale operators
app.add_typer(partners_cmd.partners_app, name="partners")
app.add_typer(partners_cmd.agreements_app, name="agreements")
app.command("budget")(partners_cmd.budget)
app.add_typer(broker_cmd.broker_app, name="broker")
app.add_typer(broker_cmd.events_app, name="events")
app.add_typer(worker_cmd.app, name="worker")
app.command("serve")(train_cmd.serve)
app.add_typer(model_cmd.app, name="model")
app.command("console")(console_cmd.console)

# Auditors
app.add_typer(audit_cmd.app, name="audit")

# Contract and quality
app.add_typer(schema_cmd.app, name="schema")
app.add_typer(extract_cmd.eval_app, name="eval")
app.add_typer(corpus_cmd.app, name="corpus")


def main() -> None:
    """Entry point of `mshale-fl`: user-facing errors become one line and an exit code, not a traceback."""
    try:
        result = app(standalone_mode=False)
    except UserFacingError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(error.exit_code)
    except click.ClickException as error:  # usage errors: click's own message and exit code
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    # Without standalone mode click returns the code of a `typer.Exit` instead of exiting.
    sys.exit(result if isinstance(result, int) else 0)

