"""`audit replay`: the stream against the log (each kind of mismatch), and budgets against the ledger.

One stream is published once for the module (a real RabbitMQ vhost); each test builds the log
(and the ledger) that tells the story it needs, honest or not.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mshale_fl.agents.mishale.audit_replay import ReplayReport, replay_audit
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.broker import Publisher, connect, declare_topology
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.payloads import (
    RoundCompleted,
    RoundStarted,
    SubmissionAccepted,
    UpdateMasked,
)
from sqlalchemy import Engine
from typer.testing import CliRunner

from mshale_fl.cli.audit_cmd import app
from mshale_fl.config import get_settings
from mshale_fl.ledger import budgets, open_ledger, register_partner
from mshale_fl.ledger.accounting import Mechanism
from mshale_fl.ledger.handler import LedgerHandler
from mshale_fl.store.inbox import SqlInbox
from mshale_fl.testing.rabbitmq import amqp_url, temporary_vhost
from mshale_fl.testing.samples import sample_event

pytestmark = pytest.mark.rabbitmq

RUN = "run-a"
ROUND = Mechanism(noise_multiplier=1.1, sample_rate=0.02, steps=100)
runner = CliRunner()


def update(partner_id: str, round_number: int) -> EventEnvelope[Any]:
    payload = UpdateMasked(
        run_id=RUN, round=round_number, model_version=1, digest=f"{round_number:064x}", epsilon_spent=0.4, delta=1e-5
    )
    return new_event("update.masked", payload, partner_id=partner_id)


def round_started(round_number: int) -> EventEnvelope[Any]:
    payload = RoundStarted(run_id=RUN, round=round_number, model_version=1, cohort=["lab-a", "lab-b"])
    return new_event("round.started", payload, partner_id="mishale")


def round_completed(round_number: int, participants: list[str]) -> EventEnvelope[Any]:
    payload = RoundCompleted(run_id=RUN, round=round_number, model_version=1, participants=participants)
    return new_event("round.completed", payload, partner_id="mishale")


@dataclass
class Story:
    vhost: str
    published: list[EventEnvelope[Any]]
    """In publish order, with a repeated publish and an audit.checkpoint among them."""
    logged: list[EventEnvelope[Any]]
    """What an honest log holds: first occurrences, no checkpoints."""
    began: datetime

    def by_type(self, type_name: str, partner_id: str | None = None) -> EventEnvelope[Any]:
        return next(e for e in self.logged if e.type == type_name and (partner_id is None or e.partner_id == partner_id))

    def offset_of(self, event: EventEnvelope[Any]) -> int:
        return self.published.index(event)  # a fresh stream: one offset per message, from 0


@pytest.fixture(scope="module")
def story() -> Iterator[Story]:
    spec = sample_event("spec.submitted", seed=1, partner_id="lab-a")
    accepted = new_event(
        "submission.accepted", SubmissionAccepted(submission_id=spec.event_id, kind="spec", items=1), partner_id="lab-a"
    )
    update_a1, update_b1, update_a2 = update("lab-a", 1), update("lab-b", 1), update("lab-a", 2)
    logged = [
        spec, accepted, round_started(1), update_a1, update_b1, round_completed(1, ["lab-a", "lab-b"]),
        round_started(2), update_a2, round_completed(2, ["lab-a"]),  # lab-b trained in round 2, its update never came
        sample_event("model.published", seed=3),
    ]  # fmt: skip
    published = [*logged[:5], sample_event("audit.checkpoint", seed=1), update_a1, *logged[5:]]
    began = datetime.now(UTC) - timedelta(seconds=2)

    async def publish(vhost: str) -> None:
        connection = await connect(amqp_url(vhost), name="replay story")
        await declare_topology(connection, delivery_limit=5)
        publisher = await Publisher.open(connection, window=16)
        for event in published:  # one at a time: stream order is exactly this order
            await publisher.publish(event)
        await connection.close()

    with temporary_vhost() as vhost:
        asyncio.run(publish(vhost))
        yield Story(vhost, published, logged, began)


@pytest.fixture
async def connection(story: Story) -> AsyncIterator[Any]:
    connection = await connect(amqp_url(story.vhost), name="replay tests")
    yield connection
    await connection.close()


def write_log(directory: Path, events: list[EventEnvelope[Any]]) -> LocalStore:
    store = LocalStore(directory)
    with AuditAppender(store, NoteSigner.generate("mshale.test/replay"), index_path=None) as appender:
        for event in events:  # one batch per event, as under light load
            appender.append_batch([event])
    return store


def write_ledger(path: Path, story: Story, *, skip: tuple[EventEnvelope[Any], ...] = (), extra_commit: str | None = None) -> Engine:
    """A ledger that applied the story's events through the real ledger handler (minus `skip`)."""
    engine = open_ledger(f"sqlite:///{path}")
    for partner_id in ("lab-a", "lab-b"):
        register_partner(engine, partner_id, tier=1, broker=None)
    ledger = budgets.PrivacyBudgets(engine)
    for partner_id, round_number in (("lab-a", 1), ("lab-b", 1), ("lab-a", 2), ("lab-b", 2)):
        ledger.reserve(partner_id=partner_id, model_version=1, round_id=f"{RUN}/{round_number}", mechanism=ROUND)
    handler = LedgerHandler()
    inbox = SqlInbox(engine, handler.consumer_name)
    for event in story.logged:
        if event not in skip:
            inbox.apply_once(event.event_id, lambda connection, event=event: handler.handle(event, connection))
    if extra_commit is not None:  # charged outside any round the log knows of
        ledger.reserve(partner_id=extra_commit, model_version=1, round_id="run-z/1", mechanism=ROUND)
        ledger.commit(partner_id=extra_commit, round_id="run-z/1")
    return engine


async def check(
    connection: Any, store: LocalStore, start: Any = "first", ledger: Engine | None = None, grace: float = 2.0, **options: Any
) -> ReplayReport:
    return await replay_audit(connection, store, start, ledger=ledger, grace=grace, idle_timeout=1.0, **options)


# -- the stream against the log ----------------------------------------------------------------------


async def test_an_honest_log_and_ledger_match(connection: Any, story: Story, tmp_path: Path) -> None:
    ledger = write_ledger(tmp_path / "ledger.sqlite3", story)
    report = await check(connection, write_log(tmp_path / "log", story.logged), ledger=ledger)

    assert report.ok, report.summary()
    assert (report.compared, report.duplicates, report.checkpoints, report.aligned_at) == (10, 1, 1, 0)
    assert report.budgets is not None and report.budgets.differences == []
    totals = {(t.partner_id, t.model_version): t for t in report.budgets.totals}
    # lab-b's round 2 was charged at round close (it trained; its update never arrived): accounted for.
    assert (totals["lab-a", 1].log_rounds, totals["lab-b", 1].log_rounds) == (2, 2)
    assert totals["lab-b", 1].log_epsilon == pytest.approx(totals["lab-b", 1].ledger_epsilon) and totals["lab-b", 1].ledger_epsilon > 0
    assert totals["lab-a", 1].reported_epsilon_sum == pytest.approx(0.8)
    assert "result: OK" in report.summary()


async def test_an_event_missing_from_the_log_is_named(connection: Any, story: Story, tmp_path: Path) -> None:
    dropped = story.by_type("update.masked", "lab-b")
    report = await check(connection, write_log(tmp_path / "log", [e for e in story.logged if e is not dropped]))

    assert report.mismatch is not None and not report.ok
    assert (report.mismatch.kind, report.mismatch.position) == ("missing", 4)
    assert (report.mismatch.event_id, report.mismatch.offset) == (str(dropped.event_id), story.offset_of(dropped))


async def test_a_log_entry_never_on_the_stream_is_an_extra_event(connection: Any, story: Story, tmp_path: Path) -> None:
    forged = sample_event("access.denied", seed=7, partner_id="lab-b")
    report = await check(connection, write_log(tmp_path / "log", [*story.logged[:6], forged, *story.logged[6:]]))

    assert report.mismatch is not None
    assert (report.mismatch.kind, report.mismatch.position, report.mismatch.event_id) == ("extra", 6, str(forged.event_id))


async def test_an_extra_entry_after_the_last_event_is_found(connection: Any, story: Story, tmp_path: Path) -> None:
    forged = sample_event("model.published", seed=8)
    report = await check(connection, write_log(tmp_path / "log", [*story.logged, forged]))

    assert report.mismatch is not None
    assert (report.mismatch.kind, report.mismatch.position, report.mismatch.event_id) == ("extra", 10, str(forged.event_id))


async def test_two_events_in_the_wrong_order_are_reordered(connection: Any, story: Story, tmp_path: Path) -> None:
    swapped = [story.logged[0], story.logged[2], story.logged[1], *story.logged[3:]]
    # Strict order: a swap of neighbours is tolerated by default, as racing publishers cause it.
    report = await check(connection, write_log(tmp_path / "log", swapped), reorder_window=0)

    assert report.mismatch is not None
    assert (report.mismatch.kind, report.mismatch.position) == ("reordered", 1)
    assert report.mismatch.event_id == str(story.logged[1].event_id)
    assert "is log entry 2" in report.mismatch.detail


async def test_a_changed_payload_is_named_by_its_hash(connection: Any, story: Story, tmp_path: Path) -> None:
    accepted = story.by_type("submission.accepted")
    altered = accepted.model_copy(update={"payload": accepted.payload.model_copy(update={"items": 99})})
    report = await check(connection, write_log(tmp_path / "log", [altered if e is accepted else e for e in story.logged]))

    assert report.mismatch is not None
    assert (report.mismatch.kind, report.mismatch.position, report.mismatch.event_id) == ("changed", 1, str(accepted.event_id))
    assert "payload hash" in report.mismatch.detail


async def test_a_log_that_stops_short_is_missing_the_rest_after_the_grace(connection: Any, story: Story, tmp_path: Path) -> None:
    report = await check(connection, write_log(tmp_path / "log", story.logged[:-1]), grace=0.3)

    assert report.mismatch is not None
    assert (report.mismatch.kind, report.mismatch.position, report.mismatch.event_id) == ("missing", 9, str(story.logged[-1].event_id))


async def test_a_replay_from_an_offset_or_a_time_checks_that_part_of_the_log(
    connection: Any, story: Story, tmp_path: Path
) -> None:
    store = write_log(tmp_path / "log", story.logged)
    round_two = [e for e in story.logged if e.type == "round.started"][1]
    from_offset = await check(connection, store, story.offset_of(round_two), ledger=write_ledger(tmp_path / "l.sqlite3", story))
    assert from_offset.ok, from_offset.summary()
    assert (from_offset.aligned_at, from_offset.compared) == (6, 4)
    assert from_offset.budgets is None and "not the whole log" in (from_offset.budgets_skipped or "")

    from_time = await check(connection, store, story.began)
    assert from_time.ok and from_time.compared == 10 and from_time.aligned_at == 0


# -- budgets against the ledger ------------------------------------------------------------------------


async def test_a_ledger_charge_the_log_cannot_account_for_is_a_budget_difference(
    connection: Any, story: Story, tmp_path: Path
) -> None:
    ledger = write_ledger(tmp_path / "ledger.sqlite3", story, extra_commit="lab-a")
    report = await check(connection, write_log(tmp_path / "log", story.logged), ledger=ledger)

    assert report.mismatch is None and not report.ok and report.budgets is not None
    (difference,) = report.budgets.differences
    assert (difference.partner_id, difference.model_version, difference.round_id, difference.kind) == (
        "lab-a", 1, "run-z/1", "commit_without_update",
    )  # fmt: skip
    total = next(t for t in report.budgets.totals if t.partner_id == "lab-a")
    assert (total.log_rounds, total.ledger_rounds) == (2, 3) and total.ledger_epsilon > total.log_epsilon
    assert report.first_problem and "run-z/1" in report.first_problem


async def test_an_update_the_ledger_never_committed_is_a_budget_difference(
    connection: Any, story: Story, tmp_path: Path
) -> None:
    update_a2 = [e for e in story.logged if e.type == "update.masked" and e.partner_id == "lab-a"][1]
    closing = story.logged[8]  # round.completed of round 2 would commit it too
    ledger = write_ledger(tmp_path / "ledger.sqlite3", story, skip=(update_a2, closing))
    report = await check(connection, write_log(tmp_path / "log", story.logged), ledger=ledger)

    assert report.budgets is not None and not report.ok
    kinds = {(d.partner_id, d.round_id, d.kind) for d in report.budgets.differences}
    assert kinds == {("lab-a", f"{RUN}/2", "update_not_committed")}
    assert "reserved" in report.budgets.differences[0].detail


# -- the command line ----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(story: Story, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("MSHALE_BROKER_URL", amqp_url(story.vhost))
    monkeypatch.setenv("MSHALE_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_the_command_exits_0_when_everything_matches_and_1_naming_the_first_mismatch(cli_env: Path, story: Story) -> None:
    ledger_path = cli_env / "ledger.sqlite3"
    write_ledger(ledger_path, story).dispose()
    write_log(cli_env / "good", story.logged)
    write_log(cli_env / "bad", [e for e in story.logged if e.type != "model.published"])
    common = ["replay", "--from", "first", "--ledger-url", f"sqlite:///{ledger_path}", "--grace", "0.2"]

    good = runner.invoke(app, [*common, "--dir", str(cli_env / "good")])
    assert good.exit_code == 0, good.output
    assert "result: OK" in good.stdout and "lab-b model 1: log 2 rounds" in good.stdout

    bad = runner.invoke(app, [*common, "--dir", str(cli_env / "bad"), "--json"])
    assert bad.exit_code == 1, bad.output
    report = json.loads(bad.stdout)
    assert report["ok"] is False and report["mismatch"]["kind"] == "missing" and report["mismatch"]["position"] == 9
    assert report["first_problem"].startswith("missing at log entry 9")


def test_the_command_explains_usage_mistakes(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong_start = runner.invoke(app, ["replay", "--from", "yesterday", "--no-budgets"])
    assert wrong_start.exit_code == 2 and "--from must be" in wrong_start.stderr
    no_ledger = runner.invoke(app, ["replay", "--ledger-url", f"sqlite:///{cli_env / 'nope.sqlite3'}"])
    assert no_ledger.exit_code == 2 and "--no-budgets" in no_ledger.stderr and "Traceback" not in no_ledger.output

    monkeypatch.setenv("MSHALE_BROKER_URL", amqp_url(f"nope-{uuid.uuid4().hex[:6]}"))
    get_settings.cache_clear()
    wrong_vhost = runner.invoke(app, ["replay", "--no-budgets", "--dir", str(cli_env / "log")])
    assert wrong_vhost.exit_code == 2 and "virtual host" in wrong_vhost.stderr, wrong_vhost.output
