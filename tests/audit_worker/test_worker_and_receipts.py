"""The audit worker in-process on the real broker: the log, the announced checkpoints, and receipts
fetched by a partner connected as its own restricted broker user."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest
from mshale_fl.agents.mishale.audit_worker import AuditProcessor, serve_audit
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.checkpoint import open_checkpoint
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.receipt_rpc import (
    DIRECT_REPLY_TO,
    ReceiptClient,
    ReceiptUnavailable,
    fetch_receipt,
)
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.witness import CheckpointWitness, ForkError
from mshale_fl.broker import EVENTS_EXCHANGE, Publisher, connect
from mshale_fl.broker.replay import replay
from mshale_fl.schemas.rpc import (
    RECEIPT_QUEUE,
    ReceiptReply,
    receipt_routing_key,
)

from mshale_fl.config import Settings
from mshale_fl.ledger.broker_identity import BrokerAdmin
from mshale_fl.testing.broker import eventually
from mshale_fl.testing.rabbitmq import MANAGEMENT_URL, amqp_url
from mshale_fl.testing.samples import sample_event

from .conftest import logged_ids

pytestmark = pytest.mark.rabbitmq


@asynccontextmanager
async def running_worker(processor: AuditProcessor, broker_url: str, home: Path) -> AsyncIterator[asyncio.Task[Any]]:
    stop = asyncio.Event()
    settings = Settings(home=home, broker_url=broker_url, prefetch=64)
    task = asyncio.create_task(serve_audit(processor, settings, stop=stop, install_signal_handlers=False, shutdown_grace=2))
    watcher = await connect(broker_url, name="test watcher")
    try:
        for queue in (RECEIPT_QUEUE, "mshale.audit"):
            await eventually(lambda queue=queue: _consumers(watcher, queue), timeout=15)
    finally:
        await watcher.close()
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def _consumers(connection: Any, queue: str) -> bool:
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return bool(declared.declaration_result.consumer_count)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()


@pytest.fixture
def partner(vhost: str) -> Iterator[tuple[str, str]]:
    """A partner's broker user with exactly the permissions `partners add` gives it (users are global: unique id)."""
    partner_id = f"lab-{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    admin = BrokerAdmin(MANAGEMENT_URL, "guest", "guest", vhost)
    admin.provision_partner(partner_id, password)
    try:
        yield partner_id, amqp_url(vhost, partner_id, password)
    finally:
        admin.delete_partner(partner_id)
        admin.close()


async def test_every_event_is_logged_in_order_and_each_batch_announces_its_checkpoint(
    open_appender: Callable[[], AuditAppender], publisher: Publisher, connection: Any,
    broker_url: str, tmp_path: Path, signer: NoteSigner, log_dir: Path,
) -> None:  # fmt: skip
    processor = AuditProcessor(open_appender)
    try:
        async with running_worker(processor, broker_url, tmp_path):
            sent = [sample_event(("spec.submitted", "update.masked", "model.published")[n % 3], seed=n) for n in range(300)]
            await publisher.publish_many(sent)
            await publisher.publish(sent[7])  # a repeated publish: logged once
            await eventually(lambda: processor.appender.size == 300, timeout=30)
            assert processor.batches < 300  # deliveries were grouped
        announced = [
            event async for _, event in replay(connection, "first", idle_timeout=1) if event.type == "audit.checkpoint"
        ]
    finally:
        processor.close()
    assert logged_ids(log_dir) == [str(event.event_id) for event in sent]
    assert announced and all(event.partner_id == "mishale" for event in announced)
    sizes = [open_checkpoint(event.payload.note, signer.verifier).size for event in announced]
    assert sizes == sorted(sizes) and sizes[-1] == 300


async def test_a_partner_fetches_verified_receipts_and_its_witness_follows_the_log(
    open_appender: Callable[[], AuditAppender], publisher: Publisher, broker_url: str,
    tmp_path: Path, signer: NoteSigner, partner: tuple[str, str],
) -> None:  # fmt: skip
    partner_id, partner_url = partner
    processor = AuditProcessor(open_appender)
    partner_connection = await connect(partner_url, name="partner")
    witness = CheckpointWitness(tmp_path / "witness.note", signer.verifier)
    client = ReceiptClient(partner_connection, partner_id=partner_id, witness=witness, timeout=5)
    try:
        async with running_worker(processor, broker_url, tmp_path):
            # The partner publishes its own submission as its restricted broker user.
            partner_publisher = await Publisher.open(partner_connection, window=8)
            mine = sample_event("spec.submitted", seed=1, partner_id=partner_id)
            await partner_publisher.publish(mine)
            first = await client.fetch_receipt(mine.event_id, event=mine)
            assert first.record.event_id == str(mine.event_id) and first.receipt.index == 0
            assert witness.latest is not None and witness.latest.size == first.checkpoint.size

            # Later events: the next receipt comes with a consistency proof from the size it saw.
            await publisher.publish_many([sample_event("model.published", seed=n) for n in range(20)])
            about_me = sample_event("submission.accepted", seed=2, partner_id=partner_id)
            await publisher.publish(about_me)
            second = await client.fetch_receipt(about_me.event_id, event=about_me)
            assert second.receipt.index == 21 and witness.latest.size == 22 > first.checkpoint.size

            # Someone else's event is not handed out (indistinguishable from an unknown one).
            other = sample_event("spec.submitted", seed=3, partner_id="lab-other")
            await publisher.publish(other)
            await eventually(lambda: processor.appender.size == 23, timeout=10)
            with pytest.raises(ReceiptUnavailable, match="not_found"):
                await client.fetch_receipt(other.event_id, wait=0.3)
            await partner_publisher.close()
    finally:
        await client.close()
        await partner_connection.close()
        processor.close()


async def test_a_partner_witness_refuses_a_rewritten_log(
    publisher: Publisher, broker_url: str, tmp_path: Path, signer: NoteSigner, partner: tuple[str, str]
) -> None:
    partner_id, partner_url = partner
    mine = sample_event("spec.submitted", seed=1, partner_id=partner_id)
    partner_connection = await connect(partner_url, name="partner")
    witness = CheckpointWitness(tmp_path / "witness.note", signer.verifier)
    client = ReceiptClient(partner_connection, partner_id=partner_id, witness=witness, timeout=5)
    try:
        honest = AuditProcessor(lambda: AuditAppender(LocalStore(tmp_path / "honest"), signer, index_path=None))
        try:
            async with running_worker(honest, broker_url, tmp_path):
                await publisher.publish_many([sample_event("model.published", seed=n) for n in range(3)])
                await publisher.publish(mine)
                seen = await client.fetch_receipt(mine.event_id, event=mine)
        finally:
            honest.close()
        # The operator, holding the signing key, serves a log rewritten from scratch: same key,
        # the partner's event still in it, but the history before it is different.
        forged_log = AuditAppender(LocalStore(tmp_path / "forged"), signer, index_path=None)
        forged_log.append_batch([sample_event("model.published", seed=50 + n) for n in range(5)] + [mine])
        forged_log.close()
        forged = AuditProcessor(lambda: AuditAppender(LocalStore(tmp_path / "forged"), signer, index_path=None))
        try:
            async with running_worker(forged, broker_url, tmp_path):
                with pytest.raises(ForkError):
                    await fetch_receipt(partner_connection, mine.event_id, partner_id=partner_id, witness=witness, event=mine)
        finally:
            forged.close()
        assert witness.latest == seen.checkpoint  # the witness kept what it had
    finally:
        await client.close()
        await partner_connection.close()


async def test_requests_without_a_broker_checked_user_are_refused(
    open_appender: Callable[[], AuditAppender], publisher: Publisher, connection: Any, broker_url: str, tmp_path: Path
) -> None:
    processor = AuditProcessor(open_appender)
    try:
        async with running_worker(processor, broker_url, tmp_path):
            channel = await connection.channel()
            replies: asyncio.Queue[bytes] = asyncio.Queue()
            queue = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)

            async def on_reply(message: Any) -> None:
                await replies.put(message.body)

            await queue.consume(on_reply, no_ack=True)
            exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
            for body, user_id in ((b'{"v": 1, "event_id": "%s"}' % str(uuid.uuid4()).encode(), None), (b"not json", "guest")):
                await exchange.publish(
                    aio_pika.Message(body, reply_to=DIRECT_REPLY_TO, correlation_id="c", user_id=user_id),
                    routing_key=receipt_routing_key("lab-a"),
                )
            statuses = [ReceiptReply.model_validate_json(await asyncio.wait_for(replies.get(), 10)).status for _ in range(2)]
            assert statuses == ["refused", "bad_request"]
            await channel.close()
    finally:
        processor.close()
