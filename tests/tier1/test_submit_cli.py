"""`mshale-fl submit` as a partner runs it: one clear line for every mistake, the key never shown."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aio_pika
import pytest
import typer
from sqlalchemy import Engine
from typer.testing import CliRunner

from mshale_fl.agents.partner.extract import extract_corpus
from mshale_fl.agents.partner.submit import submit_plan
from mshale_fl.agents.partner.transmission import plan_transmission
from mshale_fl.cli.submit_cmd import submit
from mshale_fl.ledger import BrokerAdmin, broker_password, revoke_partner

from .conftest import Register
from .support import SHARED_DIR, build_corpus, cli_env, run_cli, unique_partner_id

pytestmark = pytest.mark.rabbitmq


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("submit")
    build_corpus(root / "corpus", SHARED_DIR)
    extract_corpus(root / "corpus", root / "out")
    return root / "out"


def one_line_error(result, *needles: str) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    flat = lines[0]
    for needle in needles:
        assert needle in flat, flat
    return flat


def test_a_revoked_partners_key_is_refused_with_one_clear_line(
    tmp_path: Path, specs: Path, broker_url: str, engine: Engine, admin: BrokerAdmin, register: Register,
    mishale: aio_pika.abc.AbstractConnection,
) -> None:  # fmt: skip
    dave = register(tier=1)
    api_key = dave.key.api_key.get_secret_value()
    revoke_partner(engine, dave.partner.id, broker=admin)
    result = run_cli("submit", "--specs", str(specs), env=cli_env(broker_url, tmp_path, MSHALE_API_KEY=api_key))
    line = one_line_error(result, dave.partner.id, "ACCESS_REFUSED", "unknown or was revoked")
    assert api_key not in line and broker_password(api_key) not in line
    # A key for a partner Mishale never registered reads the same.
    stranger = f"mshale_{unique_partner_id()}_{'0' * 16}_{'A' * 43}"
    result = run_cli("submit", "--specs", str(specs), "--api-key", stranger, env=cli_env(broker_url, tmp_path))
    assert stranger not in one_line_error(result, "unknown or was revoked")


def test_a_broker_that_is_down_is_one_clear_line(tmp_path: Path, specs: Path) -> None:
    key = f"mshale_{unique_partner_id()}_{'0' * 16}_{'A' * 43}"
    env = cli_env("amqp://guest:guest@127.0.0.1:1/nowhere", tmp_path, MSHALE_API_KEY=key)
    line = one_line_error(run_cli("submit", "--specs", str(specs), env=env), "cannot reach the Mishale broker", "MSHALE_BROKER_URL")
    assert key not in line and broker_password(key) not in line and "***" in line


def test_key_and_folder_mistakes_are_caught_before_connecting(tmp_path: Path, specs: Path) -> None:
    # In process (no broker is reachable at that URL): each must fail on its own account, before any connection.
    app = typer.Typer()
    app.command()(submit)
    env = {"MSHALE_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/nowhere", "MSHALE_API_KEY": "", "COLUMNS": "250"}

    def fails(*args: str, needle: str) -> str:
        result = CliRunner().invoke(app, list(args), env=env)
        assert result.exit_code == 2 and result.stdout == "", (result.stdout, result.stderr, result.exception)
        line = " ".join(result.stderr.split())
        assert line.startswith("error: ") and needle in line, line
        return line

    good_key = f"mshale_{unique_partner_id()}_{'0' * 16}_{'A' * 43}"
    fails("--specs", str(specs), needle="no API key")
    secret = "not-a-key-but-a-secret-password"
    assert secret not in fails("--specs", str(specs), "--api-key", secret, needle="malformed")
    (tmp_path / "empty").mkdir()
    fails("--specs", str(tmp_path / "empty"), "--api-key", good_key, needle="is empty")
    fails("--specs", str(tmp_path / "missing"), "--api-key", good_key, needle="does not exist")


def test_nothing_transmittable_means_nothing_sent(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "secret.md").write_text("# Kestrelwood lysis\n1. Add 100 µl buffer and vortex for 30 s.\n")
    extract_corpus(tmp_path / "corpus", tmp_path / "out")  # unlabelled: full-ip
    key = f"mshale_{unique_partner_id()}_{'0' * 16}_{'A' * 43}"
    unreachable = "amqp://guest:guest@127.0.0.1:1/nowhere"  # never contacted
    result = run_cli("submit", "--specs", str(tmp_path / "out"), env=cli_env(unreachable, tmp_path, MSHALE_API_KEY=key))
    assert result.returncode == 0, result.stderr
    assert "Nothing to submit" in result.stdout and "1 withheld" in result.stdout
    report = asyncio.run(submit_plan(plan_transmission(tmp_path / "out"), key, broker_url=unreachable)).as_dict()
    assert report["summary"]["published"] == 0 and report["withheld"][0]["reason"] == "full_ip_never_leaves"


async def test_without_a_validator_receipts_are_pending_at_the_timeout(
    tmp_path: Path, specs: Path, broker_url: str, register: Register, mishale: aio_pika.abc.AbstractConnection
) -> None:
    erin = register(tier=1)
    env = cli_env(broker_url, tmp_path, MSHALE_API_KEY=erin.key.api_key.get_secret_value())
    result = await asyncio.to_thread(run_cli, "submit", "--specs", str(specs), "--timeout", "1", "--json", env=env)
    assert result.returncode == 3, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert report["summary"]["pending"] == report["summary"]["published"] == 4
    assert {row["status"] for row in report["receipts"]} == {"pending"}
