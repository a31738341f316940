"""Tier 2 on the real broker with real worker processes: extract --tier 2 -> submit -> validate -> ledger.

A queue bound to `#` on `mshale.events`, declared before anything is sent, sees every event anyone
publishes. From it we prove that only vectors left the partner (no spec), that nothing of a
`full-ip` protocol did (not its hash, not a published copy of its text), and that no word of any
protocol appears in any published byte unless the contract's closed vocabularies hold it; that the
ledger records one contribution per batch with the batch's vectors as items, and nothing more on
resubmission. Then Mishale's side of the gate: partners without an active DPA are rejected, and
every kind of bad vector a partner can publish by hand gets a receipt with its reason while the
worker keeps running.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from pamqp.commands import Basic
from sqlalchemy import Engine, update
from tier1.conftest import Register, drain, partner_url
from tier1.support import ALLOWED_WORDS, cli_env, message_bytes, protocol_texts, published_words, run_cli, words, worker_process

from mshale_fl.agents.mishale.validate import receipt_id
from mshale_fl.agents.partner.extract import extract_corpus, read_manifest
from mshale_fl.agents.partner.featurize import featurize
from mshale_fl.agents.partner.submit import submit_plan
from mshale_fl.agents.partner.transmission import plan_transmission
from mshale_fl.broker import DEAD_LETTER_QUEUE, EVENTS_EXCHANGE, Publisher
from mshale_fl.ledger.contributions import contribution_totals
from mshale_fl.ledger.tables import agreements
from mshale_fl.schemas.events import EventEnvelope, new_event, parse_event
from mshale_fl.schemas.payloads import SubmissionAccepted
from mshale_fl.testing.broker import eventually, take
from mshale_fl.testing.samples import sample_spec

from .submission_support import build_tier2_corpus, dpa, first_vector, raw_body, training_agreement, vectors_event

pytestmark = pytest.mark.rabbitmq


def _totals(engine: Engine, partner_id: str) -> dict[str, dict[str, int]]:
    with engine.connect() as db:  # a short read: a long-held transaction would block the ledger worker
        return contribution_totals(db, partner_id)


def _vectors(engine: Engine, partner_id: str) -> dict[str, int]:
    return _totals(engine, partner_id)["vectors"]


async def test_extract_submit_validate_record_vectors_and_nothing_private_is_ever_published(
    tmp_path: Path, shared_dir: Path, broker_url: str, ledger_url: str, engine: Engine, register: Register,
    mishale: aio_pika.abc.AbstractConnection, observer: aio_pika.abc.AbstractQueue,
) -> None:  # fmt: skip
    corpus, output = tmp_path / "corpus", tmp_path / "partner" / "specs"
    labels = build_tier2_corpus(corpus, shared_dir)
    alice = register(tier=2, agreements=[dpa()])
    sentinel_partner = register(tier=1, on_broker=False)
    api_key = alice.key.api_key.get_secret_value()
    env = cli_env(broker_url, tmp_path / "partner" / ".mshale", MSHALE_API_KEY=api_key)

    extracted = await asyncio.to_thread(run_cli, "extract", "--tier", "2", "--corpus", str(corpus), "--output", str(output), env=env)
    assert extracted.returncode == 0, extracted.stderr
    by_source = {record["source"]: record for record in read_manifest(output)["protocols"]}
    assert {source: record["sensitivity"] for source, record in by_source.items()} == labels
    full_ip_hashes = {by_source[s]["content_hash"] for s, label in labels.items() if label == "full-ip"}
    sendable = {s for s, label in labels.items() if label != "full-ip" and by_source[s]["content_hash"] not in full_ip_hashes}
    sendable_hashes = {by_source[s]["content_hash"] for s in sendable}
    assert len(sendable_hashes) == len(sendable) - 1  # wlp-a.txt and its copy are one text

    with (
        worker_process("validate", broker_url, ledger_url, tmp_path / "mishale"),
        worker_process("ledger", broker_url, ledger_url, tmp_path / "mishale"),
    ):
        first = await asyncio.to_thread(run_cli, "submit", "--specs", str(output), "--batch-size", "4", "--timeout", "60", env=env)
        assert first.returncode == 0, (first.stdout, first.stderr)
        batches = {line.split()[1] for line in first.stdout.splitlines() if "accepted" in line and "│" in line}
        assert f"Published {len(sendable_hashes)} vector(s) in {len(batches)} batch(es) as {alice.partner.id}: " \
               f"{len(sendable_hashes)} accepted, 0 rejected" in " ".join(first.stdout.split())  # fmt: skip
        for source in set(labels) - sendable:
            assert source in first.stdout  # in the withheld table, with its reason
        await eventually(lambda: _vectors(engine, alice.partner.id)["items"] == len(sendable_hashes), timeout=60)

        # The same folder again: the same batches (same ids), answered from the validator's inbox.
        second = await asyncio.to_thread(run_cli, "submit", "--specs", str(output), "--batch-size", "4", "--json", env=env)
        assert second.returncode == 0, (second.stdout, second.stderr)
        again = json.loads(second.stdout)
        assert again["summary"] == {"protocols": len(labels), "published": len(sendable), "accepted": len(sendable),
                                    "rejected": 0, "pending": 0, "withheld": len(labels) - len(sendable)}  # fmt: skip
        assert {row["source"] for row in again["receipts"]} == sendable
        assert {row["status"] for row in again["submissions"]} == {"accepted"} and len(again["submissions"]) == len(batches)
        # A later event through the single ledger worker: once it is recorded, the repeated receipts were handled.
        publisher = await Publisher.open(mishale, window=8)
        sentinel = new_event("submission.accepted", SubmissionAccepted(submission_id=uuid.uuid4(), kind="spec", items=1),
                             partner_id=sentinel_partner.partner.id)  # fmt: skip
        await publisher.publish(sentinel)
        await eventually(lambda: _totals(engine, sentinel_partner.partner.id)["spec"]["events"] == 1, timeout=60)
        await publisher.close()
        assert _vectors(engine, alice.partner.id) == {"events": len(batches), "items": len(sendable_hashes)}

    for text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert api_key not in text

    # -- everything that was published --------------------------------------------------------
    messages = await drain(observer)
    events = [parse_event(message.body) for message in messages]
    from_alice = [(m, e) for m, e in zip(messages, events, strict=True) if m.user_id == alice.partner.id]
    assert {event.type for _, event in from_alice} == {"vectors.submitted"}  # no spec left the partner at Tier 2
    submitted = [event for _, event in from_alice]
    assert len(submitted) == 2 * len(batches) and len({event.event_id for event in submitted}) == len(batches)
    sent_hashes = [vector.spec_hash for event in submitted[: len(submitted) // 2] for vector in event.payload.vectors]
    assert sorted(sent_hashes) == sorted(sendable_hashes)
    assert {event.payload.sensitivity.value for event in submitted} == {"published", "internal", "efficiency"}
    spec_of = {record["content_hash"]: output / record["spec"] for record in by_source.values()}
    for event in submitted:
        for vector in event.payload.vectors:
            assert vector == featurize(type(sample_spec()).model_validate_json(spec_of[vector.spec_hash].read_bytes()))

    # Nothing of a full-ip protocol, in any byte: not its hash (nor the hash of its published copy).
    everything = b"\n".join(message_bytes(message) for message in messages)
    for content_hash in full_ip_hashes:
        assert content_hash.encode() not in everything
    # No word of 4+ letters of any protocol's text in any published byte, unless the vocabularies hold it;
    # and everything the partner itself sent is contract words only.
    text_words = set().union(*(words(text) for text in protocol_texts(corpus).values()))
    assert {"kestrelwood", "zanthoxylum", "quillwort", "larchmont", "thistlebrook"} <= text_words
    leaks = {m.routing_key: sorted((published_words(message_bytes(m)) & text_words) - ALLOWED_WORDS) for m in messages}
    assert {key: leaked for key, leaked in leaks.items() if leaked} == {}
    sent_by_partner = b"\n".join(message_bytes(m) for m, _ in from_alice)
    assert published_words(sent_by_partner) and published_words(sent_by_partner) <= ALLOWED_WORDS


# -- Mishale's gate: agreements and bad vectors --------------------------------------------------------


async def receipts_of(queue: aio_pika.abc.AbstractQueue, expected: set[uuid.UUID]) -> dict[uuid.UUID, EventEnvelope[Any]]:
    found: dict[uuid.UUID, EventEnvelope[Any]] = {}

    async def arrived() -> bool:
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            event = parse_event(message.body)
            found[event.payload.submission_id] = event
        return expected <= set(found)

    await eventually(arrived, timeout=30)
    return found


def nan_at(data: dict[str, Any]) -> None:
    first_vector(data)["values"][20] = math.nan


def infinity_at(data: dict[str, Any]) -> None:
    first_vector(data)["values"][20] = math.inf


BAD_BODIES = {
    "vector.length": lambda data: first_vector(data).update(values=first_vector(data)["values"][:222]),
    "vector.non_finite": nan_at,
    "vector.non_finite ": infinity_at,  # the trailing space only keeps the two cases apart
    "vector.out_of_range": lambda data: first_vector(data)["values"].__setitem__(20, 3.5e38 * 10),
    "vector.schema_version": lambda data: first_vector(data).update(feature_schema_version=7),
}


async def test_mishale_rejects_vectors_without_an_active_dpa_and_explains_every_bad_vector(
    tmp_path: Path, shared_dir: Path, vhost: str, broker_url: str, ledger_url: str, engine: Engine, register: Register,
    mishale: aio_pika.abc.AbstractConnection,
) -> None:  # fmt: skip
    corpus = tmp_path / "corpus"
    build_tier2_corpus(corpus, shared_dir)
    extract_corpus(corpus, tmp_path / "out", tier=2)
    plan = plan_transmission(tmp_path / "out")  # the partner's config declares a DPA: the agent sends
    good = register(tier=2, agreements=[dpa()])
    lapsed = register(tier=2, agreements=[dpa(valid_from=date.today() - timedelta(days=400))])
    with engine.begin() as connection:  # a year later: the DPA ended yesterday
        connection.execute(update(agreements).where(agreements.c.partner_id == lapsed.partner.id)
                           .values(valid_until=date.today() - timedelta(days=1)))  # fmt: skip
    no_dpa = register(tier=3, agreements=[training_agreement()])  # Tier 3, but vectors still need a DPA
    channel = await mishale.channel()
    queue = await channel.declare_queue("test.receipts", exclusive=True)
    await queue.bind(EVENTS_EXCHANGE, routing_key=f"{good.partner.id}.submission.*")

    with worker_process("validate", broker_url, ledger_url, tmp_path / "mishale") as worker:
        for registration, code in ((lapsed, "agreement.dpa_inactive"), (no_dpa, "agreement.dpa_missing")):
            result = await submit_plan(plan, registration.key.api_key.get_secret_value(), broker_url=broker_url,
                                       timeout=30, batch_size=4)  # fmt: skip
            assert result.submissions and not result.pending and not result.accepted
            explained = "expired on" if code.endswith("inactive") else "none is on record"
            for receipt in result.rejected:
                assert [reason.code for reason in receipt.reasons] == [code]
                assert explained in receipt.reasons[0].message

        # Published by hand as the good partner (its own broker user, user_id set): the agent's checks bypassed.
        partner = await aio_pika.connect(partner_url(vhost, good))
        publisher = await Publisher.open(partner, window=16)
        vector = featurize(sample_spec(1))
        raw = {code: vectors_event(good.partner.id, [vector]) for code in BAD_BODIES}
        for code, event in raw.items():
            await publisher.publish_raw(raw_body(event, BAD_BODIES[code]), exchange=EVENTS_EXCHANGE, routing_key=event.routing_key,
                                        properties=Basic.Properties(content_type="application/json", user_id=good.partner.id))  # fmt: skip
        off_grid = vectors_event(good.partner.id, [vector.model_copy(update={"values": [*vector.values[:9], 0.3, *vector.values[10:]]})])
        above_one = vectors_event(good.partner.id, [vector.model_copy(update={"values": [*vector.values[:9], 4.0, *vector.values[10:]]})])
        await publisher.publish_raw(b"not json at all", exchange=EVENTS_EXCHANGE, routing_key=f"{good.partner.id}.vectors.submitted",
                                    properties=Basic.Properties(content_type="application/json", user_id=good.partner.id))  # fmt: skip
        await publisher.publish_many([off_grid, above_one])
        found = await receipts_of(queue, {event.event_id for event in raw.values()} | {off_grid.event_id, above_one.event_id})
        assert worker.poll() is None, "the worker must keep running after bad input"

        fine = vectors_event(good.partner.id, [vector, featurize(sample_spec(2))])
        await publisher.publish(fine)
        assert (await receipts_of(queue, {fine.event_id}))[fine.event_id].type == "submission.accepted"
        await partner.close()
        dead = await take(mishale, DEAD_LETTER_QUEUE, expected=len(raw) + 1, timeout=30)

    for code, event in raw.items():
        receipt = found[event.event_id]
        assert receipt.type == "submission.rejected" and receipt.partner_id == good.partner.id
        assert receipt.event_id == receipt_id(event.event_id) and receipt.causation_id == event.event_id
        assert [reason.code for reason in receipt.payload.reasons] == [code.strip()], receipt.payload.reasons
        assert receipt.payload.kind == "vectors"
    assert [r.code for r in found[off_grid.event_id].payload.reasons] == ["vector.off_grid"]
    assert [r.code for r in found[above_one.event_id].payload.reasons] == ["vector.out_of_range"]
    assert found[above_one.event_id].payload.reasons[0].field == "vectors[0].values[9]"
    # The unparseable bodies were dead-lettered with their reason too; the one that is not JSON got no receipt.
    assert len(dead) == len(raw) + 1 and {m.headers["x-mshale-reason"] for m in dead} == {"invalid_event"}
    assert b"not json at all" in {m.body for m in dead}
