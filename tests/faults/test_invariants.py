"""`check_invariants` itself: quiet on a consistent system, loud on each kind of damage.

A small consistent world is built by hand on the real broker, a SQLite ledger and a local log: a
spec submission and its receipt, one training round of one partner (reservation, round.started,
update.masked, round.completed, applied by the real ledger handler), each event on the stream,
in the log and in the inboxes. Then one thing at a time is broken, as a faulty worker would.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import Engine, delete, insert, update

from mshale_fl.agents.mishale.validate import receipt_id
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.broker import DEAD_LETTER_EXCHANGE, Publisher, connect, declare_topology
from mshale_fl.ledger import AgreementKind, AgreementTerms, open_ledger, register_partner
from mshale_fl.ledger import budgets
from mshale_fl.ledger.accounting import Mechanism
from mshale_fl.ledger.handler import LedgerHandler
from mshale_fl.ledger.tables import contributions, privacy_spends
from mshale_fl.schemas import payloads as p
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.store.schema import inbox
from mshale_fl.testing.invariants import InvariantReport, check_invariants
from mshale_fl.testing.samples import sample_event

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq]

ORIGIN = "mshale.test/invariants"
PARTNER = "lab-a"
RUN = "run-1"
MECHANISM = Mechanism(1.1, 0.05, 40)


@dataclass
class World:
    broker_url: str
    engine: Engine
    store: LocalStore
    signer: NoteSigner
    appender: AuditAppender
    events: dict[str, EventEnvelope[Any]]
    home: Path

    async def publish(self, *events: EventEnvelope[Any]) -> None:
        connection = await connect(self.broker_url, name="invariants test")
        try:
            publisher = await Publisher.open(connection, window=64)
            await publisher.publish_many(list(events))
            await publisher.close()
        finally:
            await connection.close()

    async def check(self, **options: Any) -> InvariantReport:
        return await check_invariants(
            self.broker_url, self.store, self.signer.verifier, self.engine, origin=ORIGIN, grace=0.5, **options
        )

    def apply(self, consumer: str, event: EventEnvelope[Any]) -> None:
        with self.engine.begin() as connection:
            if consumer == "ledger":
                LedgerHandler().handle(event, connection)
            connection.execute(
                insert(inbox).values(consumer=consumer, event_id=str(event.event_id), applied_at=datetime.now(UTC), outputs="[]")
            )


@pytest.fixture
async def world(broker_url: str, tmp_path: Path) -> World:
    from datetime import date, timedelta

    engine = open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    training = AgreementTerms(AgreementKind.TRAINING, valid_from=date.today() - timedelta(days=1),
                              valid_until=date.today() + timedelta(days=30))  # fmt: skip
    register_partner(engine, PARTNER, tier=3, broker=None, agreements=[training], epsilon_per_model_version=8.0)
    signer = NoteSigner.generate(ORIGIN)
    store = LocalStore(tmp_path / "log")
    appender = AuditAppender(store, signer, index_path=tmp_path / "index.sqlite3")
    spec = sample_event("spec.submitted", partner_id=PARTNER)
    events = {
        "spec": spec,
        "receipt": new_event("submission.accepted", p.SubmissionAccepted(submission_id=spec.event_id, kind="spec", items=1),
                             partner_id=PARTNER, event_id=receipt_id(spec.event_id)),  # fmt: skip
        "started": new_event("round.started", p.RoundStarted(run_id=RUN, round=1, model_version=1, cohort=[PARTNER]),
                             partner_id="mishale"),  # fmt: skip
        "update": new_event("update.masked", p.UpdateMasked(run_id=RUN, round=1, model_version=1, digest="ab" * 32,
                            epsilon_spent=0.5, delta=1e-5), partner_id=PARTNER),  # fmt: skip
        "completed": new_event("round.completed", p.RoundCompleted(run_id=RUN, round=1, model_version=1,
                               participants=[PARTNER]), partner_id="mishale"),  # fmt: skip
    }
    with engine.begin() as connection:
        budgets.reserve(connection, partner_id=PARTNER, model_version=1, round_id=f"{RUN}/1", mechanism=MECHANISM)
    built = World(broker_url, engine, store, signer, appender, events, tmp_path / "partner")
    connection = await connect(broker_url, name="invariants test")
    await declare_topology(connection, delivery_limit=5)
    await connection.close()
    await built.publish(*events.values())
    appender.append_batch(list(events.values()))
    built.apply("validate", events["spec"])
    for name in ("receipt", "started", "update", "completed"):
        built.apply("ledger", events[name])
    accountant = built.home / "privacy" / PARTNER / "model-1.json"
    accountant.parent.mkdir(parents=True)
    accountant.write_text(json.dumps({"model_version": 1, "history": [
        {"noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 40, "round_id": f"{RUN}/1"}]}))  # fmt: skip
    yield built
    appender.close()
    engine.dispose()


async def test_a_consistent_system_passes(world: World) -> None:
    report = await world.check(partner_homes={PARTNER: world.home})
    assert report.ok, report.summary()
    assert report.counts["log entries"] == 5 and report.counts["spends committed"] == 1
    assert report.counts["contributions"] == 2  # the spec and the update


async def test_an_effect_that_never_happened_is_lost(world: World) -> None:
    with world.engine.begin() as connection:
        connection.execute(delete(contributions).where(contributions.c.kind == "spec"))
    report = await world.check()
    assert any("accepted submissions have no contribution" in line for line in report.lost), report.summary()


async def test_an_event_the_worker_never_applied_is_lost(world: World) -> None:
    late = sample_event("spec.submitted", seed=5, partner_id=PARTNER)
    await world.publish(late)
    world.appender.append_batch([late])
    report = await world.check()
    assert any("never applied by the validate worker" in line for line in report.lost), report.summary()
    assert any("submissions have no receipt" in line for line in report.lost), report.summary()


async def test_a_confirmed_event_missing_from_the_log_is_lost_and_breaks_the_replay(world: World) -> None:
    stray = sample_event("access.denied", partner_id=PARTNER)
    await world.publish(stray)
    report = await world.check(expected=[stray.event_id, uuid.uuid4()])
    assert any("not in the audit log" in line for line in report.lost), report.summary()
    assert any("not on the stream" in line for line in report.lost), report.summary()
    assert any(line.startswith("replay: missing") for line in report.audit), report.summary()


async def test_a_dead_lettered_message_is_lost(world: World) -> None:
    connection = await aio_pika.connect(world.broker_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(DEAD_LETTER_EXCHANGE)
        message = aio_pika.Message(b"{}", message_id="poison", headers={"x-mshale-reason": "invalid_event"})
        await exchange.publish(message, routing_key="lab-a.spec.submitted")
    report = await world.check()
    assert any("mshale.dead-letter" in line and "poison" in line and "invalid_event" in line for line in report.lost), report.summary()
    # Looked at, not taken: a second check sees it again.
    assert any("mshale.dead-letter" in line for line in (await world.check()).lost)


async def test_a_second_contribution_for_one_submission_is_a_duplicate(world: World) -> None:
    spec = world.events["spec"]
    with world.engine.begin() as connection:
        connection.execute(insert(contributions).values(
            event_id=str(uuid.uuid4()), partner_id=PARTNER, kind="spec", item_count=1, submission_id=str(spec.event_id),
            occurred_at=datetime.now(UTC), recorded_at=datetime.now(UTC)))  # fmt: skip
    report = await world.check()
    assert any("more than one contribution" in line for line in report.duplicates), report.summary()


async def test_a_second_verdict_for_one_submission_is_a_duplicate(world: World) -> None:
    spec = world.events["spec"]
    other = new_event("submission.rejected", p.SubmissionRejected(submission_id=spec.event_id, kind="spec",
                      reasons=[p.Reason(code="spec.empty", message="x")]), partner_id=PARTNER)  # fmt: skip
    await world.publish(other)
    world.appender.append_batch([other])
    world.apply("ledger", other)
    report = await world.check()
    assert any("more than one receipt or verdict" in line for line in report.duplicates), report.summary()
    assert any("do not carry the id derived" in line for line in report.duplicates), report.summary()


async def test_a_spend_the_log_does_not_account_for_breaks_the_budgets(world: World) -> None:
    with world.engine.begin() as connection:
        budgets.reserve(connection, partner_id=PARTNER, model_version=1, round_id=f"{RUN}/2", mechanism=MECHANISM)
        budgets.commit(connection, partner_id=PARTNER, round_id=f"{RUN}/2")
    report = await world.check()
    assert any("commit_without_update" in line for line in report.budgets), report.summary()


async def test_an_open_reservation_and_an_uncharged_partner_round_break_the_budgets(world: World) -> None:
    with world.engine.begin() as connection:
        budgets.reserve(connection, partner_id=PARTNER, model_version=1, round_id=f"{RUN}/3", mechanism=MECHANISM)
        connection.execute(update(privacy_spends).where(privacy_spends.c.round_id == f"{RUN}/1").values(steps=41))
    accountant = world.home / "privacy" / PARTNER / "model-1.json"
    document = json.loads(accountant.read_text())
    document["history"].append({"noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 40, "round_id": f"{RUN}/9"})
    accountant.write_text(json.dumps(document))
    report = await world.check(partner_homes={PARTNER: world.home})
    assert any("reservations left open" in line for line in report.budgets), report.summary()
    assert any(f"charged itself for {RUN}/9" in line for line in report.budgets), report.summary()
    assert any("mechanism differs" in line for line in report.budgets), report.summary()
    assert (await world.check(partner_homes={PARTNER: world.home}, training_over=False)).budgets != report.budgets
