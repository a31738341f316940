"""A stream of hostile messages against the running validate, ledger and audit workers on the real broker.

Mallory is a registered partner with her own restricted broker user, so the broker vouches for
who she is, and she sends everything a partner's user is able to send: garbage bytes, JSON of the
wrong shape, deep nesting, a body over the size limit, free text where the contract has none,
NaN, another partner's id in the body, Mishale's own event types (a contribution, a masked
update, a round result) with and without `user_id`, replays of her own and of another partner's
event ids. A partner revoked in the ledger (its broker user left in place) submits too.

Afterwards: every hostile message was dead-lettered with a reason header or answered with a
rejection receipt, as the code does; the three workers are still running and accept Alice's valid
submission; the ledger counts nothing that came from hostile input and holds none of its text;
the audit log verifies, holds none of its text, and still equals the replayed stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from pamqp.commands import Basic

from mshale_fl.agents.mishale.audit_replay import compare_stream_with_log
from mshale_fl.agents.mishale.audit_worker import AuditProcessor, serve_audit
from mshale_fl.agents.mishale.ledger_worker import FORGED_SENDER, ledger_processor
from mshale_fl.agents.mishale.validate import receipt_id, validate_processor
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.log import TransparencyLog
from mshale_fl.audit.records import parse_record
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.verify import verify_log
from mshale_fl.broker import (
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    UNROUTABLE_QUEUE,
    Publisher,
    broker_user,
    declare_configured_topology,
    run_worker,
)
from mshale_fl.broker.publisher import encode_event
from mshale_fl.config import Settings
from mshale_fl.ledger import broker_password, revoke_partner
from mshale_fl.ledger.contributions import contribution_totals
from mshale_fl.schemas.events import MAX_EVENT_BYTES, EventEnvelope, new_event, parse_event
from mshale_fl.schemas.payloads import SpecSubmitted, SubmissionAccepted
from mshale_fl.schemas.vocabulary import Sensitivity
from mshale_fl.testing.broker import eventually, ready_count, take
from mshale_fl.testing.rabbitmq import amqp_url
from mshale_fl.testing.samples import sample_event, sample_payload, sample_spec

from .conftest import Register
from .strategies import MARKER

pytestmark = pytest.mark.rabbitmq

ORIGIN = "mshale.test/hostile"
WORKERS = ("validate", "ledger", "audit")


def spec_event(partner_id: str, seed: int) -> EventEnvelope[Any]:
    return new_event(
        "spec.submitted", SpecSubmitted(sensitivity=Sensitivity.PUBLISHED, spec=sample_spec(seed)), partner_id=partner_id
    )


def json_body(event: EventEnvelope[Any], change: Callable[[dict[str, Any]], None]) -> bytes:
    data = event.model_dump(mode="json")
    change(data)
    return json.dumps(data).encode()


@asynccontextmanager
async def running_workers(settings: Settings, log_dir: Path, signer: NoteSigner) -> AsyncIterator[dict[str, asyncio.Task[Any]]]:
    """validate, ledger and audit in this process, as `mshale-fl worker <role>` runs them; stopped cleanly at the end."""
    stop = asyncio.Event()
    audit = AuditProcessor(lambda: AuditAppender(LocalStore(log_dir), signer, index_path=log_dir.parent / "index.sqlite3"))
    processors = {"validate": validate_processor(settings), "ledger": ledger_processor(settings)}
    options: dict[str, Any] = {"stop": stop, "install_signal_handlers": False, "shutdown_grace": 5}
    tasks = {role: asyncio.create_task(run_worker(role, processor, settings, retry_delay=0.05, **options))
             for role, processor in processors.items()}  # fmt: skip
    tasks["audit"] = asyncio.create_task(serve_audit(audit, settings, **options))
    try:
        yield tasks
    finally:
        stop.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), timeout=60)
        for processor in (*processors.values(), audit):
            processor.close()
        failures = {role: result for role, result in zip(tasks, results, strict=True) if isinstance(result, BaseException)}
        assert not failures, f"workers failed: {failures}"


class Mallory:
    """A registered partner publishing as her own broker user: the broker checks `user_id` and her prefix."""

    def __init__(self, publisher: Publisher, partner_id: str) -> None:
        self.publisher = publisher
        self.partner_id = partner_id
        self.sent: dict[str, str] = {}  # message id -> what it was

    async def raw(self, name: str, body: bytes, *, kind: str = "spec.submitted", user_id: str | None = "self") -> str:
        message_id = f"hostile-{name}"
        self.sent[message_id] = name
        properties = Basic.Properties(
            content_type="application/json", delivery_mode=2, message_id=message_id,
            user_id=self.partner_id if user_id == "self" else user_id,
        )  # fmt: skip
        await self.publisher.publish_raw(body, exchange=EVENTS_EXCHANGE, routing_key=f"{self.partner_id}.{kind}",
                                         properties=properties)  # fmt: skip
        return message_id


async def test_hostile_messages_are_refused_and_the_workers_keep_serving(
    tmp_path: Path, vhost: str, settings: Settings, engine: Any, register: Register
) -> None:
    alice, mallory_reg, revoked = register(), register(), register()
    revoke_partner(engine, revoked.partner.id, broker=None)  # revoked in the ledger; its broker user still works
    log_dir = tmp_path / "audit-log"
    signer = NoteSigner.generate(ORIGIN)

    mishale = await aio_pika.connect(settings.broker_url)
    await declare_configured_topology(mishale, settings)
    observer = await (await mishale.channel()).declare_queue("test.receipts", durable=True)
    await observer.bind(EVENTS_EXCHANGE, routing_key="*.submission.*")  # not `#`: unknown types stay unroutable

    def partner_connection(registration: Any) -> Any:
        key = broker_password(registration.key.api_key.get_secret_value())
        return aio_pika.connect(amqp_url(vhost, registration.partner.id, key))

    connections = [await partner_connection(r) for r in (alice, mallory_reg, revoked)]
    alice_pub, mallory_pub, revoked_pub = [await Publisher.open(c, window=32) for c in connections]
    m = Mallory(mallory_pub, mallory_reg.partner.id)
    mid = mallory_reg.partner.id
    mishale_user = broker_user(settings.broker_url)

    async with running_workers(settings, log_dir, signer) as workers:
        # -- before: Alice and Mallory each make one honest submission ----------------------------------
        alice_first, mallory_first = spec_event(alice.partner.id, 1), spec_event(mid, 2)
        await alice_pub.publish(alice_first)
        await mallory_pub.publish(mallory_first)

        # -- the hostile stream ------------------------------------------------------------------------
        free_text = spec_event(mid, 3)
        vectors = sample_event("vectors.submitted", partner_id=mid)
        expected_dead: set[tuple[str, str, str]] = set()  # (message id, consumer, reason)
        expected_rejections: dict[uuid.UUID, set[str]] = {}  # submission id -> reason codes it must name

        def unparseable(message_id: str) -> None:
            expected_dead.update({(message_id, "validate", "invalid_event"), (message_id, "audit", "invalid_event")})

        unparseable(await m.raw("garbage", os.urandom(4096)))
        unparseable(await m.raw("wrong-shape", json.dumps({"hello": f"{MARKER} miniprep", "steps": [1, 2]}).encode()))
        unparseable(await m.raw("deep", b"[" * 200_000 + b"]" * 200_000))
        unparseable(await m.raw("oversized", b" " * (MAX_EVENT_BYTES + 1)))
        unparseable(await m.raw("bad-utf8", encode_event(spec_event(mid, 4)).replace(b'"published"', b'"publ\xff\xfe"')))

        def smuggle(data: dict[str, Any]) -> None:
            data["schema_version"] = f"{MARKER} v2"
            data["payload"]["spec"]["title"] = f"{MARKER} rapid lysis, the secret buffer"
            data["payload"]["spec"]["steps"][0][MARKER] = "proprietary"

        unparseable(await m.raw("free-text", json_body(free_text, smuggle)))
        expected_rejections[free_text.event_id] = {"event.schema_version", "spec.unknown_field"}

        def nan(data: dict[str, Any]) -> None:
            data["payload"]["vectors"][0]["values"][7] = "__nan__"

        unparseable(await m.raw("nan", json_body(vectors, nan).replace(b'"__nan__"', b"NaN"), kind="vectors.submitted"))
        expected_rejections[vectors.event_id] = {"vector.non_finite"}

        # Another partner's id in the body, under her own routing key (the broker refuses Alice's prefix).
        message_id = await m.raw("forged-partner", encode_event(spec_event(alice.partner.id, 5)))
        expected_dead.update({(message_id, "validate", "routing_key_mismatch"), (message_id, "audit", "routing_key_mismatch")})

        # Mishale's own event types under her prefix: the ledger must not count them.
        forged_system = {
            "contribution": new_event("submission.accepted", SubmissionAccepted(submission_id=uuid.uuid4(), kind="spec",
                                                                                  items=10_000), partner_id=mid),
            "update": new_event("update.masked", sample_payload("update.masked"), partner_id=mid),
            "round": new_event("round.completed", sample_payload("round.completed"), partner_id=mid),
        }  # fmt: skip
        for name, event in forged_system.items():
            message_id = await m.raw(f"system-{name}", encode_event(event), kind=event.type)
            expected_dead.add((message_id, "ledger", FORGED_SENDER))
        unsigned = forged_system["contribution"].model_copy(update={"event_id": uuid.uuid4()})
        message_id = await m.raw("system-unsigned", encode_event(unsigned), kind=unsigned.type, user_id=None)
        expected_dead.add((message_id, "ledger", FORGED_SENDER))

        # Replays: her own submission again, her event id with other content, Alice's event id as hers.
        await m.raw("replay-same", encode_event(mallory_first))
        await m.raw("replay-changed", encode_event(spec_event(mid, 6).model_copy(update={"event_id": mallory_first.event_id})))
        await m.raw("replay-alice-id", encode_event(spec_event(mid, 7).model_copy(update={"event_id": alice_first.event_id})))

        # An event type the contract does not have: no worker sees it, the alternate exchange keeps it.
        await m.raw("unknown-type", encode_event(spec_event(mid, 8)), kind="spec.exfiltrated")

        # A partner revoked in the ledger.
        from_revoked = spec_event(revoked.partner.id, 9)
        await revoked_pub.publish(from_revoked)
        expected_rejections[from_revoked.event_id] = {"partner.revoked"}

        # -- after: the workers still serve a valid submission --------------------------------------------
        alice_last = spec_event(alice.partner.id, 10)
        await alice_pub.publish(alice_last)

        dead = await take(mishale, DEAD_LETTER_QUEUE, expected=len(expected_dead), timeout=90)
        found_dead = {(d.message_id, d.headers["x-mshale-consumer"], d.headers["x-mshale-reason"]) for d in dead}
        assert found_dead == expected_dead
        assert all(d.headers["x-mshale-detail"] for d in dead), "every dead letter says why"
        assert {d.headers.get("x-mshale-user-id") for d in dead} == {mid, None}, "the broker-checked sender, if any"

        receipts: dict[uuid.UUID, list[EventEnvelope[Any]]] = {}

        async def all_answered() -> bool:
            while (message := await observer.get(no_ack=True, fail=False)) is not None:
                # Receipts come from Mishale's user (Mallory's forged submission.accepted comes from hers).
                if ".submission." in (message.routing_key or "") and message.user_id == mishale_user:
                    receipt = parse_event(message.body)
                    receipts.setdefault(receipt.payload.submission_id, []).append(receipt)
            wanted = {alice_first.event_id, mallory_first.event_id, alice_last.event_id, *expected_rejections}
            return wanted <= set(receipts) and len(receipts[mallory_first.event_id]) >= 3

        await eventually(all_answered, timeout=60)
        assert all(not task.done() for task in workers.values()), "no worker may stop on hostile input"

    # -- receipts: one answer per submission id, whatever was replayed ---------------------------------
    for submission_id, answers in receipts.items():
        assert {answer.event_id for answer in answers} == {receipt_id(submission_id)}
        assert len({answer.model_dump_json(exclude={"occurred_at"}) for answer in answers}) == 1
    for event in (alice_first, mallory_first, alice_last):
        assert receipts[event.event_id][0].type == "submission.accepted"
    for submission_id, codes in expected_rejections.items():
        (receipt, *_) = receipts[submission_id]
        assert receipt.type == "submission.rejected" and receipt.partner_id in (mid, revoked.partner.id)
        assert codes <= {reason.code for reason in receipt.payload.reasons}
    for answers in receipts.values():
        assert MARKER.lower() not in answers[0].model_dump_json().lower(), "a receipt never quotes hostile input"
    assert await ready_count(mishale, DEAD_LETTER_QUEUE) == 0, "nothing dead-lettered beyond the expected"
    unroutable = await take(mishale, UNROUTABLE_QUEUE, expected=1, timeout=10)
    assert [message.message_id for message in unroutable] == ["hostile-unknown-type"]

    # -- the ledger counts Alice's two specs and Mallory's one honest spec, nothing else ----------------
    with engine.connect() as db:
        assert contribution_totals(db, alice.partner.id)["spec"] == {"events": 2, "items": 2}
        mallory_totals = contribution_totals(db, mid)
        assert mallory_totals.pop("spec") == {"events": 1, "items": 1}  # not 10,001 items, no update
        assert all(totals["events"] == 0 for totals in mallory_totals.values())
        assert all(totals["events"] == 0 for totals in contribution_totals(db, revoked.partner.id).values())
    engine.dispose()
    ledger_file = Path(settings.ledger_url.removeprefix("sqlite:///"))
    assert MARKER.lower().encode() not in ledger_file.read_bytes().lower()

    # -- the audit log verifies, holds no hostile text, and equals the replayed stream -----------------
    store = LocalStore(log_dir)
    report = verify_log(store, signer.verifier, origin=ORIGIN)
    assert report.ok, report
    logged = [parse_record(data).event_id for _, records in TransparencyLog(store).iter_bundles() for data in records]
    assert len(logged) == len(set(logged)), "an event id is logged once, however often it is replayed"
    assert {str(alice_first.event_id), str(alice_last.event_id), str(mallory_first.event_id)} <= set(logged)
    for path in [*log_dir.rglob("*"), tmp_path / "index.sqlite3"]:
        if path.is_file():
            assert MARKER.lower().encode() not in path.read_bytes().lower(), path
    comparison, log_size, invalid = await compare_stream_with_log(mishale, store, "first", grace=2, idle_timeout=2)
    assert comparison.mismatch is None, comparison.mismatch
    assert log_size == len(logged)
    assert invalid == 8  # the seven unparseable bodies and the event under another partner's routing key

    for connection in (*connections, mishale):
        await connection.close()
