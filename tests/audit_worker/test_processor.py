"""`AuditProcessor` driven as the consumer runtime drives it (concurrent `process` calls), no broker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mshale_fl.agents.mishale.audit_worker import AuditProcessor, checkpoint_event
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.checkpoint import open_checkpoint
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.stores.base import StoreError
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.verify import verify_log
from mshale_fl.broker import PermanentError
from mshale_fl.schemas.events import EventEnvelope

from mshale_fl.testing.samples import sample_event

from .conftest import ORIGIN, logged_ids


def events(count: int, seed: int = 0) -> list[EventEnvelope[Any]]:
    kinds = ("spec.submitted", "submission.accepted", "update.masked", "round.started", "model.published")
    return [sample_event(kinds[(seed + n) % len(kinds)], seed=seed + n) for n in range(count)]


class SlowStore(LocalStore):
    """A local store whose writes take a while, or fail the next `failures` times (of keys under `failing`)."""

    def __init__(self, root: Path, *, delay: float = 0.0, failures: int = 0, failing: str = "") -> None:
        super().__init__(root)
        self.delay = delay
        self.failures = failures
        self.failing = failing
        self.writing = threading.Event()

    def put_immutable(self, key: str, data: bytes) -> None:
        self.writing.set()
        if self.failures > 0 and key.startswith(self.failing):
            self.failures -= 1
            raise StoreError("the store is unreachable (simulated outage)")
        time.sleep(self.delay)
        super().put_immutable(key, data)


@pytest.fixture
def processor(open_appender: Callable[[], AuditAppender]) -> Any:
    processor = AuditProcessor(open_appender)
    yield processor
    processor.close()


async def test_concurrent_deliveries_are_one_append_and_only_the_last_carries_the_checkpoint(
    processor: AuditProcessor, log_dir: Path, signer: NoteSigner
) -> None:
    batch = events(40)
    outputs = await asyncio.gather(*(processor.process(event) for event in batch))

    assert processor.batches == 1 and processor.appended == 40
    assert logged_ids(log_dir) == [str(event.event_id) for event in batch]
    assert all(output == [] for output in outputs[:-1])
    (announcement,) = outputs[-1]
    assert (announcement.type, announcement.partner_id) == ("audit.checkpoint", "mishale")
    checkpoint = open_checkpoint(announcement.payload.note, signer.verifier)
    assert checkpoint.size == announcement.payload.tree_size == 40
    assert announcement.payload.root_hash == checkpoint.root.hex()
    # Announcing the same checkpoint again is the same event (downstream inboxes deduplicate it).
    assert checkpoint_event(checkpoint).event_id == announcement.event_id


async def test_deliveries_arriving_during_an_append_go_together_into_the_next(
    signer: NoteSigner, tmp_path: Path
) -> None:
    store = SlowStore(tmp_path / "log", delay=0.3)
    processor = AuditProcessor(lambda: AuditAppender(store, signer, index_path=None))
    store.writing.clear()  # opening the log wrote its size-0 checkpoint
    try:
        first = asyncio.ensure_future(processor.process(events(1)[0]))
        await asyncio.to_thread(store.writing.wait, 5)  # the first append is running now
        later = events(25, seed=1)
        results = await asyncio.gather(first, *(processor.process(event) for event in later))
        assert processor.batches == 2
        assert processor.appender.size == 26
        assert [len(output) for output in results] == [1] + [0] * 24 + [1]  # one announcement per batch
        assert [output[0].payload.tree_size for output in results if output] == [1, 26]
    finally:
        processor.close()


async def test_redelivered_and_checkpoint_events_add_nothing_and_announce_nothing_new(
    processor: AuditProcessor, log_dir: Path
) -> None:
    batch = events(5)
    await asyncio.gather(*(processor.process(event) for event in batch))
    announcement = checkpoint_event(processor.appender.checkpoint)

    again = await asyncio.gather(*(processor.process(event) for event in [*batch[:3], announcement]))

    assert again == [[], [], [], []]  # no growth, no loop of announcements
    assert logged_ids(log_dir) == [str(event.event_id) for event in batch]
    assert processor.appended == 5


async def test_a_restarted_processor_reannounces_the_checkpoint_once(
    open_appender: Callable[[], AuditAppender], log_dir: Path
) -> None:
    batch = events(3)
    first = AuditProcessor(open_appender)
    try:
        await asyncio.gather(*(first.process(event) for event in batch))
    finally:
        first.close()
    # Killed before its announcement was published: after the restart the redelivered events add
    # nothing, but the checkpoint is announced again (same event id), then not any more.
    second = AuditProcessor(open_appender)
    try:
        outputs = await asyncio.gather(*(second.process(event) for event in batch))
        assert outputs[:2] == [[], []] and outputs[2][0].payload.tree_size == 3
        assert await second.process(batch[0]) == []
        assert second.appended == 0
    finally:
        second.close()
    assert len(logged_ids(log_dir)) == 3


async def test_an_event_that_cannot_be_recorded_is_refused_alone(processor: AuditProcessor, log_dir: Path) -> None:
    good = events(3)
    # An event whose time lost its zone (model_copy does not validate): records refuse it.
    bad = good[1].model_copy(update={"occurred_at": good[1].occurred_at.replace(tzinfo=None)})
    bad = bad.model_copy(update={"event_id": events(1, seed=9)[0].event_id})
    results = await asyncio.gather(*(processor.process(event) for event in [good[0], bad, good[2]]), return_exceptions=True)

    assert isinstance(results[1], PermanentError) and results[1].reason_code == "audit.unrecordable"
    assert "timezone" in results[1].message
    assert logged_ids(log_dir) == [str(good[0].event_id), str(good[2].event_id)]
    assert results[2] and results[2][0].payload.tree_size == 2


@pytest.mark.parametrize("failing", ["entries/", "checkpoints/"])
async def test_a_store_outage_holds_the_deliveries_until_the_append_succeeds(
    signer: NoteSigner, tmp_path: Path, failing: str
) -> None:
    store = SlowStore(tmp_path / "log", failing=failing)
    processor = AuditProcessor(lambda: AuditAppender(store, signer, index_path=None), retry_delay=0.01)
    store.failures = 3  # from now on: the next three writes of bundles (or of checkpoints) fail
    try:
        batch = events(4)
        outputs = await asyncio.wait_for(asyncio.gather(*(processor.process(event) for event in batch)), timeout=10)
    finally:
        processor.close()
    assert store.failures == 0
    assert outputs[-1][0].payload.tree_size == 4
    assert logged_ids(tmp_path / "log") == [str(event.event_id) for event in batch]
    assert verify_log(LocalStore(tmp_path / "log"), signer.verifier, origin=ORIGIN).ok
