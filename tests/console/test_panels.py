"""The console's panels and server without a browser: fallbacks, failures, read-only behaviour."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from mshale_fl.audit.config import AuditSettings
from mshale_fl.audit.log import ENTRIES, position_key
from mshale_fl.audit.note import NoteSigner
from mshale_fl.config import Settings
from mshale_fl.console.audit_panel import AuditPanel
from mshale_fl.console.dead_letter_panel import DeadLetterPanel
from mshale_fl.console.ledger_panels import LedgerReader, read_budgets, read_partners
from mshale_fl.console.page import render_page
from mshale_fl.console.panels import SourceUnavailable, run_panel
from mshale_fl.console.plot import line_plot_svg, nice_ticks
from mshale_fl.console.server import ConsoleServer
from mshale_fl.console.sources import ConsoleSources
from mshale_fl.console.state import ConsoleState
from mshale_fl.console.training_panel import choose_metric, read_training
from mshale_fl.federation.runs import RoundRecord
from mshale_fl.testing.rabbitmq import MANAGEMENT_URL
from mshale_fl.testing.samples import sample_event

from mshale_fl.ledger.tables import partners as partners_table

from .system import ORIGIN, System, build_audit_log, build_ledger, build_run, temporary_postgres_database


def _record(number: int, metrics: dict[str, float], *, failed: bool = False) -> RoundRecord:
    return RoundRecord(
        round=number, failed=failed, participants=[], cohort=[], metrics=metrics, model_file=None, digest=None,
        completed_at=datetime.now(UTC).isoformat(),
    )


def _state_with(**panels: dict) -> dict:
    down = {"ok": False, "source": "s", "error": "down"}
    state = {"format": "x", "generated_at": "now", "refresh_seconds": 5, "partners": down, "training": down,
             "budgets": down, "audit": down, "dead_letters": down}
    state.update(panels)
    return state


# -- training: which metric is plotted ---------------------------------------------------------------


def test_eval_loss_is_plotted_when_any_round_records_it() -> None:
    rounds = [_record(1, {"update_norm": 0.9}), _record(2, {"eval_loss": 1.5, "update_norm": 0.4})]
    assert choose_metric(rounds) == "eval_loss"


def test_without_eval_loss_update_norm_is_plotted_and_labelled_as_not_a_loss(tmp_path: Path) -> None:
    build_run(tmp_path, [{"update_norm": 0.9, "cohort": 2.0}, {"update_norm": 0.5, "cohort": 2.0}])
    panel = run_panel("training", "runs", lambda: read_training(tmp_path))
    plot = panel["plot"]
    assert plot["metric"] == "update_norm" and not plot["is_loss"]
    assert [point["value"] for point in plot["points"]] == [0.9, 0.5]
    html = render_page(_state_with(training=panel))
    assert "No evaluation loss (<code>eval_loss</code>) is recorded" in html
    assert "update norm (L2 distance between consecutive global models; not a loss)" in html
    assert html.count('class="point"') == 2


def test_a_metric_without_a_known_meaning_is_still_plotted_with_its_name() -> None:
    assert choose_metric([_record(1, {"cohort": 3.0, "dropouts": 0.0})]) == "cohort"
    assert choose_metric([_record(1, {})]) is None


def test_a_run_with_no_rounds_says_so_instead_of_plotting(tmp_path: Path) -> None:
    build_run(tmp_path, [])
    panel = run_panel("training", "runs", lambda: read_training(tmp_path))
    assert panel["ok"] and panel["plot"]["points"] == []
    html = render_page(_state_with(training=panel))
    assert "has no completed rounds yet" in html and "<svg" not in html.split('id="training"')[1].split("</section>")[0]
    assert "round 1 of 5 in progress or interrupted" in html


def test_a_failed_round_without_the_metric_leaves_a_gap(tmp_path: Path) -> None:
    build_run(tmp_path, [{"eval_loss": 2.0}, {"cohort": 2.0}, {"eval_loss": 1.0}])
    panel = read_training(tmp_path)
    assert [point["round"] for point in panel["plot"]["points"]] == [1, 3]


def test_a_home_without_training_is_empty_and_a_missing_home_is_an_error(tmp_path: Path) -> None:
    panel = run_panel("training", "runs", lambda: read_training(tmp_path))
    assert panel["ok"] and panel["runs"] == [] and panel["plot"] is None
    assert "No training run under" in render_page(_state_with(training=panel))
    missing = run_panel("training", "runs", lambda: read_training(tmp_path / "nowhere"))
    assert not missing["ok"] and "MSHALE_HOME" in missing["error"] and "does not exist" in missing["error"]


def test_an_unreadable_run_state_is_named_and_the_others_still_show(tmp_path: Path) -> None:
    state = build_run(tmp_path, [{"eval_loss": 1.0}])
    broken = tmp_path / "federation" / "runs" / "v1-broken" / "state.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    panel = read_training(tmp_path)
    assert [run["run_id"] for run in panel["runs"]] == [state.run_id]
    assert len(panel["unreadable"]) == 1 and "v1-broken" in panel["unreadable"][0]


# -- plot ---------------------------------------------------------------------------------------------


def test_ticks_are_round_numbers_inside_the_range() -> None:
    assert nice_ticks(1.236, 2.164) == [1.4, 1.6, 1.8, 2.0]
    assert nice_ticks(0.0, 100.0) == [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
    assert nice_ticks(3.0, 3.0) == [3.0]


def test_a_single_point_is_drawn_without_a_line_and_labels_are_escaped() -> None:
    svg = line_plot_svg([(1, 0.5)], y_label="<b>", title="a & b")
    assert svg.count("<circle") == 1 and "<polyline" not in svg
    assert "&lt;b&gt;" in svg and "a &amp; b" in svg and "<b>" not in svg


def test_source_data_is_escaped_on_the_page() -> None:
    partners = {
        "ok": True, "source": "ledger", "error": None,
        "partners": [{"id": "lab-x", "display_name": "<script>alert(1)</script>", "tier": 1, "academic": False,
                      "status": "active", "created_at": "now", "agreements": []}],
    }
    html = render_page(_state_with(partners=partners, audit={"ok": False, "source": "<i>", "error": "<img src=x>"}))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img" not in html and "&lt;img src=x&gt;" in html


# -- ledger -------------------------------------------------------------------------------------------


def test_the_console_never_creates_or_migrates_a_ledger(tmp_path: Path) -> None:
    missing = tmp_path / "ledger.sqlite3"
    reader = LedgerReader(f"sqlite:///{missing}")
    panel = run_panel("partners", "ledger", lambda: reader.read(read_partners))
    assert not panel["ok"] and f"no ledger database at {missing}" in panel["error"]
    assert not missing.exists()

    sqlite3.connect(missing).close()  # an empty database file, not yet migrated
    reader = LedgerReader(f"sqlite:///{missing}")
    panel = run_panel("partners", "ledger", lambda: reader.read(read_partners))
    assert not panel["ok"] and "has no tables yet" in panel["error"]
    tables = sqlite3.connect(missing).execute("select name from sqlite_master").fetchall()
    assert tables == []  # still nothing written
    reader.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        with temporary_postgres_database() as url:
            yield url


def test_partners_and_budgets_are_read_and_nothing_can_be_written(ledger_url: str) -> None:
    build_ledger(ledger_url)
    reader = LedgerReader(ledger_url)
    try:
        partners = reader.read(read_partners)["partners"]
        assert [(p["id"], p["tier"]) for p in partners] == [
            ("lab-four", 3), ("lab-one", 1), ("lab-three", 3), ("lab-two", 2)
        ]
        assert [a["kind"] for a in partners[2]["agreements"]] == ["DPA", "TRAINING"]
        assert all(a["active"] for p in partners for a in p["agreements"])
        budgets = reader.read(read_budgets)
        assert budgets["pause_fraction"] == 0.10
        by_partner = {b["partner_id"]: b for b in budgets["budgets"]}
        assert by_partner["lab-four"]["state"] == "paused" and by_partner["lab-four"]["below_pause_line"]
        assert by_partner["lab-three"]["state"] == "active" and by_partner["lab-three"]["fraction_remaining"] > 0.9
        assert by_partner["lab-three"]["rounds_committed"] == 1
        with pytest.raises(SourceUnavailable, match="cannot read the ledger.*(readonly|read-only)"):
            reader.read(lambda connection: connection.execute(partners_table.delete()))
    finally:
        reader.close()
    check = LedgerReader(ledger_url)
    assert len(check.read(read_partners)["partners"]) == 4
    check.close()


# -- audit --------------------------------------------------------------------------------------------


def _audit_settings(home: Path, **overrides: object) -> AuditSettings:
    return AuditSettings(
        origin=ORIGIN, local_dir=home / "audit" / "log", key_file=home / "audit" / "signing.key", **overrides
    )


def test_a_tampered_log_shows_verification_failed(tmp_path: Path) -> None:
    build_audit_log(System(home=tmp_path, broker_url="", vhost=""), batches=2)
    bundle = tmp_path / "audit" / "log" / Path(position_key(ENTRIES, 5))
    data = bytearray(bundle.read_bytes())
    data[-3] ^= 0x01
    os.chmod(bundle, 0o644)
    bundle.write_bytes(bytes(data))
    panel = run_panel("audit log", "store", AuditPanel(_audit_settings(tmp_path)).read)
    assert panel["ok"]  # the source is readable; what it holds is wrong
    assert panel["latest_checkpoint"]["signature_ok"]
    assert not panel["verification"]["ok"] and panel["verification"]["first_bad_position"] == 5
    html = render_page(_state_with(audit=panel))
    assert "VERIFICATION FAILED" in html and 'data-ok="false"' in html


def test_a_checkpoint_signed_by_another_key_is_shown_invalid(tmp_path: Path) -> None:
    build_audit_log(System(home=tmp_path, broker_url="", vhost=""), batches=1)
    stranger = NoteSigner.generate(ORIGIN).verifier.to_key()
    panel = AuditPanel(_audit_settings(tmp_path, verifier_key=stranger)).read()
    assert panel["verifier"] == "MSHALE_AUDIT_VERIFIER_KEY"
    assert not panel["latest_checkpoint"]["signature_ok"] and not panel["verification"]["ok"]
    assert "signature INVALID" in render_page(_state_with(audit={"ok": True, "source": "s", "error": None, **panel}))


def test_no_log_and_no_key_are_reported_with_the_fix(tmp_path: Path) -> None:
    panel = run_panel("audit log", "store", AuditPanel(_audit_settings(tmp_path)).read)
    assert panel["error"].startswith("audit log: no audit log at") and "MSHALE_AUDIT_LOCAL_DIR" in panel["error"]
    (tmp_path / "audit" / "log").mkdir(parents=True)
    panel = run_panel("audit log", "store", AuditPanel(_audit_settings(tmp_path)).read)
    assert "no key to verify the log with" in panel["error"] and "MSHALE_AUDIT_VERIFIER_KEY" in panel["error"]


def test_full_verification_is_redone_only_when_the_log_grew_and_the_interval_passed(tmp_path: Path) -> None:
    appender = build_audit_log(System(home=tmp_path, broker_url="", vhost=""), batches=1)
    now = [0.0]
    audit = AuditPanel(_audit_settings(tmp_path), verify_every=60.0, clock=lambda: now[0])
    first = audit.read()["verification"]
    assert first["entries"] == 5 and not first["log_grew_since"]
    appender.append_batch([sample_event("round.started", seed=99)])
    now[0] = 30.0
    throttled = audit.read()
    assert throttled["latest_checkpoint"]["size"] == 6  # the newest checkpoint is always shown
    assert throttled["verification"]["entries"] == 5 and throttled["verification"]["log_grew_since"]
    now[0] = 61.0
    assert audit.read()["verification"]["entries"] == 6


# -- dead letters -------------------------------------------------------------------------------------


@pytest.mark.rabbitmq
def test_dead_letter_queues_not_declared_and_a_missing_vhost_are_told_apart(vhost: str) -> None:
    panel = DeadLetterPanel(MANAGEMENT_URL, "guest", "guest", vhost).read()
    assert [queue["declared"] for queue in panel["queues"]] == [False, False]
    assert "not declared" in render_page(_state_with(dead_letters={"ok": True, "source": "s", "error": None, **panel}))
    missing = run_panel("dead letters", "api", DeadLetterPanel(MANAGEMENT_URL, "guest", "guest", f"{vhost}-gone").read)
    assert f"vhost '{vhost}-gone' does not exist" in missing["error"]


@pytest.mark.rabbitmq
def test_refused_management_credentials_name_the_settings(vhost: str) -> None:
    panel = run_panel("dead letters", "api", DeadLetterPanel(MANAGEMENT_URL, "guest", "not-the-password", vhost).read)
    assert "refused user 'guest'" in panel["error"] and "MSHALE_BROKER_MANAGEMENT_PASSWORD" in panel["error"]


def test_an_unexpected_failure_in_one_panel_is_shown_not_raised() -> None:
    def broken() -> dict:
        raise KeyError("surprise")

    panel = run_panel("training", "runs", broken)
    assert panel == {"ok": False, "source": "runs", "error": "training: unexpected KeyError: 'surprise'"}
    with pytest.raises(SourceUnavailable):
        raise SourceUnavailable("x")


# -- the server ---------------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    settings = Settings(home=tmp_path, broker_url="amqp://guest:guest@127.0.0.1:5672/nowhere",
                        broker_management_url="http://127.0.0.1:9")
    state = ConsoleState(ConsoleSources.from_settings(settings, _audit_settings(tmp_path)))
    server = ConsoleServer(("127.0.0.1", 0), state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        state.close()


def test_the_server_answers_get_and_head_and_refuses_everything_else(served: str) -> None:
    with httpx.Client(base_url=served, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<meta http-equiv="refresh" content="10">' in page.text
        assert "dead letters: RabbitMQ management API unreachable at http://127.0.0.1:9" in page.text
        assert client.head("/api/state").status_code == 200
        assert client.get("/api/state").json()["format"] == "mshale-console-state/1"
        assert client.get("/admin").status_code == 404
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            refused = client.request(method, "/api/state")
            assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"


def test_a_loopback_console_refuses_requests_for_other_host_names(served: str) -> None:
    with httpx.Client(base_url=served, timeout=30) as client:
        assert client.get("/", headers={"Host": "attacker.example"}).status_code == 421
        port = served.rsplit(":", 1)[1].rstrip("/")
        assert client.get("/api/state", headers={"Host": f"localhost:{port}"}).status_code == 200


def test_console_json_prints_the_state_once(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MSHALE_")}
    env.update(MSHALE_HOME=str(tmp_path), MSHALE_BROKER_MANAGEMENT_URL="http://127.0.0.1:9")
    build_run(tmp_path, [{"eval_loss": 1.0}])
    done = subprocess.run(
        [sys.executable, "-m", "mshale_fl.cli", "console", "--json"], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["training"]["plot"]["points"] == [{"round": 1, "value": 1.0, "failed": False}]
    assert state["dead_letters"]["error"].startswith("dead letters: RabbitMQ management API unreachable")


def test_a_port_in_use_is_one_line_with_the_fix(served: str, tmp_path: Path) -> None:
    port = served.rsplit(":", 1)[1].rstrip("/")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MSHALE_")}
    env["MSHALE_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "mshale_fl.cli", "console", "--port", port], env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().endswith(f"error: port {port} on 127.0.0.1 is in use; choose another with --port")
    assert "Traceback" not in done.stderr


def test_vhost_in_the_broker_url_is_the_one_watched() -> None:
    settings = Settings(broker_url=f"amqp://guest:guest@127.0.0.1:5672/{quote('a/b', safe='')}")
    assert ConsoleSources.from_settings(settings, AuditSettings()).vhost == "a/b"
