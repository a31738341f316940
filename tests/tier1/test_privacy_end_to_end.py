"""Extract -> submit -> validate -> receipts -> ledger, with real worker processes, watching every published byte.

The corpus holds protocols of every label (own texts with made-up proper names, and real WLP
protocols). A queue bound to `#` on `mshale.events`, declared before anything is sent, sees every
event anyone publishes; the partner can publish nowhere else (its write permission names only
that exchange). From what it saw we prove:

- nothing derived from a `full-ip` protocol was published: no byte holds its content hash, no spec
  of it was sent;
- `internal` and `efficiency` protocols sent nothing at Tier 1;
- no word of four letters or more of any protocol's text appears in any published byte unless the
  contract's closed vocabularies hold it;

and that the receipts come back and are printed, the ledger records one contribution per
published spec, and submitting the same specs again records nothing new.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aio_pika
import pytest
from sqlalchemy import Engine

from mshale_fl.agents.partner.extract import extract_corpus, read_manifest
from mshale_fl.broker import Publisher
from mshale_fl.ledger.contributions import contribution_totals
from mshale_fl.schemas.events import new_event, parse_event
from mshale_fl.schemas.payloads import SubmissionAccepted
from mshale_fl.testing.broker import eventually

from .conftest import Register, drain
from .support import (
    ALLOWED_WORDS,
    build_corpus,
    cli_env,
    message_bytes,
    protocol_texts,
    published_words,
    run_cli,
    words,
    worker_process,
)

pytestmark = pytest.mark.rabbitmq


def _contributions(engine: Engine, partner_id: str) -> dict[str, int]:
    with engine.connect() as db:
        return contribution_totals(db, partner_id)["spec"]


async def test_extract_submit_validate_record_and_nothing_private_is_ever_published(
    tmp_path: Path, shared_dir: Path, broker_url: str, ledger_url: str, engine: Engine, register: Register,
    mishale: aio_pika.abc.AbstractConnection, observer: aio_pika.abc.AbstractQueue,
) -> None:  # fmt: skip
    corpus, output = tmp_path / "corpus", tmp_path / "partner" / "specs"
    labels = build_corpus(corpus, shared_dir)
    extract_corpus(corpus, output)
    manifest = read_manifest(output)
    by_source = {record["source"]: record for record in manifest["protocols"]}
    assert {source: record["sensitivity"] for source, record in by_source.items()} == labels, manifest["unreadable"]
    hashes = {label: {by_source[s]["content_hash"] for s, l in labels.items() if l == label} for label in set(labels.values())}
    published_sources = sorted(s for s, label in labels.items() if label == "published")

    alice = register(tier=1)
    sentinel_partner = register(tier=1, on_broker=False)
    api_key = alice.key.api_key.get_secret_value()
    env = cli_env(broker_url, tmp_path / "partner" / ".mshale", MSHALE_API_KEY=api_key)

    with (
        worker_process("validate", broker_url, ledger_url, tmp_path / "mishale"),
        worker_process("ledger", broker_url, ledger_url, tmp_path / "mishale"),
    ):
        first = await asyncio.to_thread(run_cli, "submit", "--specs", str(output), "--timeout", "60", env=env)
        assert first.returncode == 0, (first.stdout, first.stderr)
        # The receipts table: every published protocol accepted, every other one withheld, nothing pending.
        lines = first.stdout.splitlines()
        for source in published_sources:
            assert any(source in line and "accepted" in line for line in lines), first.stdout
        for source in set(labels) - set(published_sources):
            assert any(source in line and "withheld" in line for line in lines), first.stdout
        assert f"Published {len(published_sources)} spec(s) as {alice.partner.id}: {len(published_sources)} accepted, 0 rejected" in first.stdout

        await eventually(lambda: _contributions(engine, alice.partner.id)["events"] == len(published_sources), timeout=60)

        # The same specs again: same event ids, the validator's inbox answers with the same receipts.
        second = await asyncio.to_thread(run_cli, "submit", "--specs", str(output), "--json", env=env)
        assert second.returncode == 0, (second.stdout, second.stderr)
        again = json.loads(second.stdout)
        assert again["summary"] == {"protocols": len(labels), "published": len(published_sources),
                                    "accepted": len(published_sources), "rejected": 0, "pending": 0,
                                    "withheld": len(labels) - len(published_sources)}  # fmt: skip
        # A later event through the single ledger worker: once it is recorded, the repeated receipts were handled.
        channel_publisher = await Publisher.open(mishale, window=8)
        sentinel = new_event("submission.accepted", SubmissionAccepted(submission_id=uuid.uuid4(), kind="spec", items=1),
                             partner_id=sentinel_partner.partner.id)  # fmt: skip
        await channel_publisher.publish(sentinel)
        await eventually(lambda: _contributions(engine, sentinel_partner.partner.id)["events"] == 1, timeout=60)
        assert _contributions(engine, alice.partner.id) == {"events": len(published_sources), "items": len(published_sources)}
        await channel_publisher.close()

    for output_text in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert api_key not in output_text

    # -- everything that was published --------------------------------------------------------
    messages = await drain(observer)
    events = [parse_event(message.body) for message in messages]
    submitted = [event for event in events if event.type == "spec.submitted"]
    receipts = [event for event in events if event.type.startswith("submission.")]
    assert {m.user_id for m, e in zip(messages, events, strict=True) if e.type == "spec.submitted"} == {alice.partner.id}
    # Two runs: each published spec twice, with the same event id; the receipts repeat with the same ids.
    assert len(submitted) == 2 * len(published_sources)
    assert len({event.event_id for event in submitted}) == len(published_sources)
    assert {event.payload.spec.content_hash for event in submitted} == hashes["published"]
    assert {event.payload.sensitivity.value for event in submitted} == {"published"}
    alice_receipts = [event for event in receipts if event.partner_id == alice.partner.id]
    assert {event.type for event in alice_receipts} == {"submission.accepted"}
    assert len({event.event_id for event in alice_receipts}) == len(published_sources)

    # Nothing from full-ip, internal or efficiency protocols: not their hash, not a spec, in any byte.
    everything = b"\n".join(message_bytes(message) for message in messages)
    for label in ("full-ip", "internal", "efficiency"):
        for content_hash in hashes[label]:
            assert content_hash.encode() not in everything, label

    # No word of 4+ letters of any protocol's text in any published byte, unless the vocabularies hold it.
    text_words = set().union(*(words(text) for text in protocol_texts(corpus).values()))
    assert {"kestrelwood", "zanthoxylum", "quillwort", "larchmont", "thistlebrook"} <= text_words
    leaks = {}
    for message in messages:
        leaked = (published_words(message_bytes(message)) & text_words) - ALLOWED_WORDS
        if leaked:
            leaks[message.routing_key] = sorted(leaked)
    assert leaks == {}
    # Stronger still for what the partner itself sent: every word in it, from any source, is the contract's
    # ("lab" is the 3-letter prefix of the partner id, too short to count as a word, kept for clarity).
    sent_by_partner = b"\n".join(message_bytes(m) for m in messages if m.user_id == alice.partner.id)
    assert published_words(sent_by_partner)  # not vacuous: specs do carry words
    assert published_words(sent_by_partner) <= ALLOWED_WORDS


def test_the_word_check_would_catch_a_leak() -> None:
    body = b'{"spec": {"steps": [{"operation": "centrifuge"}]}, "note": "Kestrelwood buffer"}'
    assert (published_words(body) & {"kestrelwood", "centrifuge", "buffer"}) - ALLOWED_WORDS == {"kestrelwood"}
