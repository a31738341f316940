"""`mshale-fl partners|agreements|budget` against the real broker (throw-away vhost) and a SQLite ledger.

The commands are mounted on a Typer app the way the main CLI registers them. One test runs the
CLI in a fresh process, to read exactly what it logs, and checks the API key is never in it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import typer
from typer.testing import CliRunner

from mshale_fl.cli import partners_cmd
from mshale_fl.config import get_settings
from mshale_fl.ledger import budgets
from mshale_fl.ledger.accounting import Mechanism
from mshale_fl.ledger.broker_identity import BrokerAdmin, broker_password
from mshale_fl.ledger.database import open_ledger
from mshale_fl.testing.rabbitmq import MANAGEMENT_URL

from .helpers import days, scan_database_text, unique_partner_id

pytestmark = pytest.mark.rabbitmq

CLI_SCRIPT = """
import typer
from mshale_fl.cli import partners_cmd
app = typer.Typer()
app.add_typer(partners_cmd.partners_app, name="partners")
app.add_typer(partners_cmd.agreements_app, name="agreements")
app.command("budget")(partners_cmd.budget)
app()
"""


def make_app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(partners_cmd.partners_app, name="partners")
    app.add_typer(partners_cmd.agreements_app, name="agreements")
    app.command("budget")(partners_cmd.budget)
    return app


@pytest.fixture
def env(tmp_path: Path, broker_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    values = {"MSHALE_HOME": str(tmp_path / ".mshale"), "MSHALE_BROKER_URL": broker_url, "MSHALE_LOG_LEVEL": "DEBUG"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MSHALE_LEDGER_URL", raising=False)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """structlog output of the in-process commands, as JSON lines."""
    buffer = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(file=buffer),
        cache_logger_on_first_use=False,
    )
    yield buffer
    structlog.reset_defaults()


@pytest.fixture
def cli(env: dict[str, str], logs: io.StringIO, broker_users: list[str]):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    app = make_app()

    def invoke(*args: str, expect: int = 0, input: str | None = None):  # type: ignore[no-untyped-def]
        if args[:2] == ("partners", "add"):
            broker_users.append(args[2])
        result = runner.invoke(app, list(args), input=input)
        assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
        return result

    return invoke


def test_add_list_show_revoke(cli, env: dict[str, str], logs: io.StringIO) -> None:  # type: ignore[no-untyped-def]
    partner_id = unique_partner_id()
    added = cli(
        "partners",
        "add",
        partner_id,
        "--tier",
        "2",
        "--academic",
        "--name",
        "Lab A",
        "--dpa-until",
        days(365).isoformat(),
    )
    api_key = added.stdout.strip().splitlines()[-1]
    assert api_key.startswith("mshale_")
    assert "shown once" in added.stdout

    listed = json.loads(cli("partners", "list", "--json").stdout)
    assert [(p["id"], p["tier"], p["status"], p["academic"]) for p in listed] == [(partner_id, 2, "active", True)]
    assert partner_id in cli("partners", "list").stdout

    shown = cli("partners", "show", partner_id, "--json").stdout
    data = json.loads(shown)
    assert data["partner"]["tier"] == 2
    assert [(a["kind"], a["active"], a["attorney_reviewed"]) for a in data["agreements"]] == [("DPA", True, False)]
    assert api_key not in shown and api_key not in cli("partners", "show", partner_id).stdout

    with BrokerAdmin(MANAGEMENT_URL, "guest", "guest", "/") as admin:
        assert admin.user_exists(partner_id)
    cli("partners", "revoke", partner_id, "--yes")
    with BrokerAdmin(MANAGEMENT_URL, "guest", "guest", "/") as admin:
        assert not admin.user_exists(partner_id)
    assert json.loads(cli("partners", "show", partner_id, "--json").stdout)["partner"]["status"] == "revoked"
    assert json.loads(cli("partners", "show", partner_id, "--json").stdout)["api_keys"][0]["revoked"] is True

    captured = logs.getvalue()
    assert "partner_registered" in captured and "partner_revoked" in captured  # the capture works
    assert api_key not in captured
    assert broker_password(api_key) not in captured
    engine = open_ledger(f"sqlite:///{Path(env['MSHALE_HOME']) / 'ledger.sqlite3'}")
    stored = scan_database_text(engine)
    engine.dispose()
    assert partner_id in stored
    assert api_key not in stored and api_key.rsplit("_", 1)[1] not in stored
    assert broker_password(api_key) not in stored


def test_tier_requirements_are_refused_with_a_clear_message(cli) -> None:  # type: ignore[no-untyped-def]
    partner_id = unique_partner_id()
    refused = cli("partners", "add", partner_id, "--tier", "2", expect=2)
    assert refused.stderr.startswith("error: ")
    assert "Data Processing Agreement" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout

    not_reviewed = cli("partners", "add", partner_id, "--tier", "2", "--dpa-until", days(30).isoformat(), expect=2)
    assert "attorney" in not_reviewed.stderr

    no_training = cli("partners", "add", partner_id, "--tier", "3", expect=2)
    assert "training agreement" in no_training.stderr
    with BrokerAdmin(MANAGEMENT_URL, "guest", "guest", "/") as admin:
        assert not admin.user_exists(partner_id)

    cli("partners", "add", partner_id, "--tier", "1")
    cli("partners", "set-tier", partner_id, "3", expect=2)
    cli("agreements", "add", partner_id, "--kind", "training", "--until", days(90).isoformat())
    assert "now Tier 3" in cli("partners", "set-tier", partner_id, "3").stdout
    assert "TRAINING" in cli("agreements", "list", partner_id).stdout

    assert "already registered" in cli("partners", "add", partner_id, "--tier", "1", expect=2).stderr
    assert "no partner" in cli("partners", "show", "lab-nobody-here", expect=2).stderr


def test_budget_command_reports_and_raises(cli, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    partner_id = unique_partner_id()
    cli(
        "partners",
        "add",
        partner_id,
        "--tier",
        "3",
        "--training-until",
        days(90).isoformat(),
        "--epsilon",
        "5",
        "--dataset-epsilon",
        "50",
    )
    engine = open_ledger(f"sqlite:///{Path(env['MSHALE_HOME']) / 'ledger.sqlite3'}")
    ledger = budgets.PrivacyBudgets(engine)
    for number in (1, 2, 3):
        ledger.reserve(
            partner_id=partner_id, model_version=4, round_id=f"run/{number}", mechanism=Mechanism(1.0, 0.05, 50)
        )
    ledger.commit(partner_id=partner_id, round_id="run/1")
    engine.dispose()

    report = json.loads(cli("budget", "--partner-id", partner_id, "--model-version", "4", "--json").stdout)
    (budget,) = report["budgets"]
    assert budget["state"] == "paused"
    assert budget["epsilon_total"] == 5.0
    assert budget["epsilon_remaining"] == pytest.approx(5.0 - budget["epsilon_spent"])
    assert [spend["status"] for spend in budget["spends"]] == ["committed", "reserved", "reserved"]
    assert {spend["accountant"] for spend in budget["spends"]} == {"rdp"}
    assert report["dataset"]["epsilon_total"] == 50.0
    text = cli("budget", "--partner-id", partner_id).stdout
    assert "model version 4 [paused: budget_low]" in text and "run/1" in text

    raised = json.loads(
        cli("budget", "--partner-id", partner_id, "--model-version", "4", "--set-total", "8", "--json").stdout
    )
    assert raised["budgets"][0]["state"] == "active"
    assert "--model-version" in cli("budget", "--partner-id", partner_id, "--set-total", "8", expect=2).stderr
    assert "no budget" in cli("budget", "--partner-id", partner_id, "--model-version", "9", expect=2).stderr


def test_the_api_key_never_appears_in_the_process_logs(env: dict[str, str], broker_users: list[str]) -> None:
    partner_id = unique_partner_id()
    broker_users.append(partner_id)
    process_env = {**os.environ, **env}
    added = subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, "partners", "add", partner_id, "--tier", "1", "--json"],
        env=process_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    api_key = json.loads(added.stdout)["api_key"]
    revoked = subprocess.run(
        [sys.executable, "-c", CLI_SCRIPT, "partners", "revoke", partner_id, "--yes"],
        env=process_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    logged = added.stderr + revoked.stderr
    assert "partner_registered" in logged and "broker_user_deleted" in logged  # logs were produced
    assert api_key not in logged
    assert api_key.rsplit("_", 1)[1] not in logged
    assert broker_password(api_key) not in logged


def test_identity_key_is_shown_and_reset(cli, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    from mshale_fl.ledger.identities import register_identity_key

    partner_id = unique_partner_id()
    cli("partners", "add", partner_id, "--tier", "1")
    assert json.loads(cli("partners", "show", partner_id, "--json").stdout)["identity_key"] is None
    assert "none yet" in cli("partners", "show", partner_id).stdout
    engine = open_ledger(f"sqlite:///{Path(env['MSHALE_HOME']) / 'ledger.sqlite3'}")
    with engine.begin() as connection:
        register_identity_key(connection, partner_id, b"\x07" * 32)
    shown = json.loads(cli("partners", "show", partner_id, "--json").stdout)["identity_key"]
    assert shown["public_key"] == "07" * 32 and shown["fingerprint"] in cli("partners", "show", partner_id).stdout
    assert "forgotten" in cli("partners", "reset-identity", partner_id, "--yes").stdout
    assert "had no identity key" in cli("partners", "reset-identity", partner_id, "--yes").stdout
    with engine.begin() as connection:
        register_identity_key(connection, partner_id, b"\x08" * 32)  # a new key is accepted after the reset
    engine.dispose()
