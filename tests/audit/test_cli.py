"""`mshale-fl audit keygen | pubkey | verify | proof` (the Typer sub-app the lead registers)."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.keys import load_signing_key
from mshale_fl.audit.note import NoteVerifier
from mshale_fl.audit.receipts import Receipt, verify_receipt
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.stores.s3 import S3Store
from typer.testing import CliRunner

from mshale_fl.cli.audit_cmd import app
from mshale_fl.config import get_settings

from .audit_support import S3_REGION

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("MSHALE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MSHALE_AUDIT_ORIGIN", "mshale.test/cli")
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def test_keygen_creates_a_private_key_once_and_prints_the_verifier_key(home: Path) -> None:
    result = runner.invoke(app, ["keygen"])
    assert result.exit_code == 0, result.output
    verifier = NoteVerifier.from_key(result.stdout.strip())
    assert verifier.name == "mshale.test/cli"
    key_file = home / "audit" / "signing.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_signing_key(key_file).verifier.to_key() == verifier.to_key()

    again = runner.invoke(app, ["keygen"])
    assert again.exit_code == 2 and "already exists" in again.stderr and "Traceback" not in again.output
    assert runner.invoke(app, ["pubkey"]).stdout.strip() == verifier.to_key()


def test_pubkey_without_a_key_explains_what_to_do(home: Path) -> None:
    result = runner.invoke(app, ["pubkey"])
    assert result.exit_code == 2 and "mshale-fl audit keygen" in result.stderr


@pytest.fixture
def local_log(home: Path, make_events: Any) -> tuple[LocalStore, list[Any]]:
    assert runner.invoke(app, ["keygen"]).exit_code == 0
    signer = load_signing_key(home / "audit" / "signing.key")
    store = LocalStore(home / "audit" / "log")
    events = make_events(30)
    with AuditAppender(store, signer) as appender:
        appender.append_batch(events[:12])
        appender.append_batch(events[12:])
    return store, events


def test_verify_a_local_log(local_log: tuple[LocalStore, list[Any]]) -> None:
    result = runner.invoke(app, ["verify"])
    assert result.exit_code == 0 and result.stdout.startswith("OK: 30 entries and 3 checkpoints")
    report = json.loads(runner.invoke(app, ["verify", "--json"]).stdout)
    assert report["ok"] is True and report["entries"] == 30 and report["first_bad_position"] is None


def test_verify_reports_the_first_bad_position(local_log: tuple[LocalStore, list[Any]]) -> None:
    store, _ = local_log
    (store.root / "entries" / "00000000000000000012").unlink()  # drop the second batch
    result = runner.invoke(app, ["verify"])
    assert result.exit_code == 1
    assert "FAILED" in result.stdout and "first bad position 12" in result.stdout
    report = json.loads(runner.invoke(app, ["verify", "--json"]).stdout)
    assert report["ok"] is False and report["first_bad_position"] == 12 and report["verified_size"] == 12


def test_an_auditor_verifies_with_the_public_key_only(local_log: tuple[LocalStore, list[Any]], home: Path, tmp_path: Path) -> None:
    store, _ = local_log
    public = runner.invoke(app, ["pubkey"]).stdout.strip()
    (home / "audit" / "signing.key").unlink()
    result = runner.invoke(app, ["verify", "--dir", str(store.root), "--verifier-key", public])
    assert result.exit_code == 0, result.output
    wrong = runner.invoke(app, ["verify", "--verifier-key", "mshale.test/cli+00000000+AAAA"])
    assert wrong.exit_code == 2 and "invalid verifier key" in wrong.stderr


def test_proof_prints_a_receipt_that_verifies(local_log: tuple[LocalStore, list[Any]], home: Path) -> None:
    _, events = local_log
    verifier = load_signing_key(home / "audit" / "signing.key").verifier
    result = runner.invoke(app, ["proof", "--event-id", str(events[17].event_id)])
    assert result.exit_code == 0, result.output
    receipt = Receipt.from_json(result.stdout)
    _, checkpoint = verify_receipt(receipt, verifier, event=events[17])
    assert receipt.index == 17 and checkpoint.size == 30


def test_proof_of_an_unknown_or_malformed_event_id(local_log: tuple[LocalStore, list[Any]]) -> None:
    unknown = runner.invoke(app, ["proof", "--event-id", str(uuid.uuid4())])
    assert unknown.exit_code == 1 and "is not in the log" in unknown.stderr
    malformed = runner.invoke(app, ["proof", "--event-id", "not-a-uuid"])
    assert malformed.exit_code == 2 and "is not a UUID" in malformed.stderr


def test_verify_on_s3(home: Path, s3_env: str, worm_store: S3Store, make_events: Any) -> None:
    assert runner.invoke(app, ["keygen"]).exit_code == 0
    signer = load_signing_key(home / "audit" / "signing.key")
    with AuditAppender(worm_store, signer, max_bundle_entries=8) as appender:
        appender.append_batch(make_events(20))
    arguments = ["--store", "s3", "--bucket", worm_store.bucket, "--region", S3_REGION, "--prefix", "log/", "--endpoint-url", s3_env]
    result = runner.invoke(app, ["verify", *arguments, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entries"] == 20
    worm_store.client.put_object(Bucket=worm_store.bucket, Key="log/entries/00000000000000000008", Body=b"overwrite")
    flagged = runner.invoke(app, ["verify", *arguments])
    assert flagged.exit_code == 1 and "[overwritten] at 8" in flagged.stdout


def test_the_worker_opens_its_appender_from_settings(home: Path, make_events: Any) -> None:
    from mshale_fl.audit.config import open_appender

    assert runner.invoke(app, ["keygen"]).exit_code == 0
    events = make_events(5)
    with open_appender() as appender:
        assert appender.append_batch(events).size == 5
    with open_appender() as reopened:  # the index under MSHALE_HOME makes the restart cheap
        assert reopened.index.path == home / "audit" / "index-local.sqlite3"
        assert reopened.append_batch(events).size == 5
    assert runner.invoke(app, ["verify"]).exit_code == 0
