"""The audit worker: every event on the bus into the transparency log, once each, in queue order.

`AuditProcessor` is the consumer runtime's `Processor` for the `audit` role. The role's queue is
single-active-consumer, so deliveries arrive in queue order; `process()` queues each one and
returns only when its batch is durably appended (bundle, index, signed checkpoint), so the
runtime acknowledges nothing that is not in the log.

Group commit: while one `append_batch` runs on the appender's thread, arriving deliveries wait,
and then go together in the next call. Under light load a batch is one event; under load the
per-append cost (a bundle object, a signature, a checkpoint object) is shared by up to `prefetch`
events (MSHALE_PREFETCH bounds how many deliveries can be waiting).

After each batch the new checkpoint is announced as an `audit.checkpoint` event (partner
"mishale"), returned as the output of the batch's last delivery: the runtime publishes it with
confirms before acknowledging that delivery. Its event id is derived from (origin, size, root),
so announcing the same checkpoint again is recognisable as the same event. The announcement
comes back to this queue (the role binds every type) and is skipped: checkpoints are not logged,
and a batch that logs nothing announces nothing new, so there is no loop.

Restarts: the appender adopts a bundle written before a crash and skips redelivered events by
event id, so a SIGKILL at any point leaves no gap and no duplicate. Append failures other than an
unrecordable event (store unreachable, a write race lost too often, a damaged log) are retried
with back-off *while holding the deliveries*: requeueing them would count towards the queue's
delivery limit, and an event dead-lettered for an outage would be a gap in the log.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mshale_fl.audit.appender import NOT_LOGGED_TYPES, AuditAppender
from mshale_fl.audit.checkpoint import Checkpoint
from mshale_fl.audit.receipt_rpc import ReceiptResponder, answer_receipt_request
from mshale_fl.audit.records import RecordError, record_for_event
from mshale_fl.broker import (
    ConsumerStats,
    PermanentError,
    connect,
    current_delivery,
    declare_topology,
    run_worker,
)
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.rpc import ReceiptReply

from mshale_fl.config import Settings
from mshale_fl.errors import UserFacingError
from mshale_fl.logging import configure_logging, get_logger

log = get_logger(__name__)

__all__ = [
    "CHECKPOINT_EVENT_NAMESPACE",
    "AuditProcessor",
    "audit_processor",
    "checkpoint_event",
    "run_audit_worker",
    "serve_audit",
]

SYSTEM_PARTNER = "mishale"
CHECKPOINT_EVENT_NAMESPACE = uuid.UUID("6f0c3a52-55b1-4d55-9b0e-6d2f1c4a7e21")
"""uuid5 namespace of `audit.checkpoint` event ids: one id per (origin, size, root)."""
MAX_BATCH = 4096
RETRY_DELAY = 0.5
RETRY_DELAY_MAX = 30.0


def checkpoint_event(checkpoint: Checkpoint) -> EventEnvelope[Any]:
    """The `audit.checkpoint` event announcing `checkpoint` (same checkpoint, same event id)."""
    event_id = uuid.uuid5(CHECKPOINT_EVENT_NAMESPACE, f"{checkpoint.origin}\n{checkpoint.size}\n{checkpoint.root_hex}")
    return new_event(
        "audit.checkpoint", checkpoint.to_payload(), partner_id=SYSTEM_PARTNER, event_id=event_id, correlation_id=event_id
    )


@dataclass
class _Waiting:
    event: EventEnvelope[Any]
    future: asyncio.Future[list[EventEnvelope[Any]]]
    redelivered: bool


@dataclass(frozen=True)
class _BatchResult:
    checkpoint: Checkpoint
    appended: int
    unrecordable: dict[int, str]


class AuditProcessor:
    """Appends events to the log in batches (see the module docstring); also answers receipt requests.

    The appender is opened on, and only ever used from, one dedicated thread: its SQLite index
    belongs to the thread that opened it, and appends and receipt lookups must not interleave.
    """

    consumer_name = "audit"

    def __init__(
        self,
        open_appender: Callable[[], AuditAppender],
        *,
        max_batch: int = MAX_BATCH,
        retry_delay: float = RETRY_DELAY,
        retry_delay_max: float = RETRY_DELAY_MAX,
    ) -> None:
        self.max_batch = max_batch
        self.retry_delay = retry_delay
        self.retry_delay_max = retry_delay_max
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-appender")
        try:
            self.appender = self._executor.submit(open_appender).result()
        except BaseException:
            self._executor.shutdown(wait=True)
            raise
        self._waiting: list[_Waiting] = []
        self._drainer: asyncio.Task[None] | None = None
        self._announced: int | None = None
        self._closed = False
        self.batches = 0
        self.appended = 0
        """Entries this process added to the log (redelivered events already logged are not counted)."""

    # -- the Processor protocol ----------------------------------------------------------------

    async def process(self, event: EventEnvelope[Any]) -> Sequence[EventEnvelope[Any]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[EventEnvelope[Any]]] = loop.create_future()
        delivery = current_delivery()
        self._waiting.append(_Waiting(event, future, redelivered=bool(delivery and delivery.redelivered)))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await future

    async def answer_receipt(self, requester: str | None, body: bytes) -> ReceiptReply:
        """Answer one receipt request on the appender's thread (see `audit.receipt_rpc`)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, answer_receipt_request, self.appender, requester, body)

    def close(self) -> None:
        """Wait for a running append, then close the appender (on its own thread)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._executor.submit(self.appender.close).result()
        finally:
            self._executor.shutdown(wait=True)

    # -- batching (event loop side) --------------------------------------------------------------

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # deliveries of this loop turn join the first batch
        while self._waiting and not self._closed:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            result = await self._append_until_done([item.event for item in batch])
            if result is None:  # closed while the store was failing: the runtime requeues
                for item in batch:
                    if not item.future.done():
                        item.future.cancel()
                return
            self._settle(batch, result)

    async def _append_until_done(self, events: list[EventEnvelope[Any]]) -> _BatchResult | None:
        loop = asyncio.get_running_loop()
        delay = self.retry_delay
        attempt = 0
        while not self._closed:
            attempt += 1
            try:
                return await loop.run_in_executor(self._executor, self._append, events)
            except Exception as error:
                log.error(
                    "audit.append_failed_holding_deliveries",
                    events=len(events),
                    attempt=attempt,
                    error=f"{type(error).__name__}: {error}"[:500],
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_delay_max)
        return None

    def _settle(self, batch: list[_Waiting], result: _BatchResult) -> None:
        self.batches += 1
        self.appended += result.appended
        announce_on = self._announcement_carrier(batch, result)
        for index, item in enumerate(batch):
            if item.future.done():  # given up by the runtime (shutdown); the entry is logged anyway
                continue
            if index in result.unrecordable:
                item.future.set_exception(PermanentError("audit.unrecordable", result.unrecordable[index]))
            elif index == announce_on:
                item.future.set_result([checkpoint_event(result.checkpoint)])
                self._announced = result.checkpoint.size
            else:
                item.future.set_result([])

    def _announcement_carrier(self, batch: list[_Waiting], result: _BatchResult) -> int | None:
        """Which delivery of the batch carries the checkpoint announcement (None: no announcement).

        Announce when the log grew past what was announced, on the first batch of this process
        (the last announcement before a crash may not have been published), and when an event is
        redelivered (its first delivery may have carried an announcement that was never
        published). Announcements themselves coming back never trigger one.
        """
        grew = self._announced is None or result.checkpoint.size > self._announced
        retried = any(item.redelivered and item.event.type not in NOT_LOGGED_TYPES for item in batch)
        if not (grew or retried):
            return None
        for index in range(len(batch) - 1, -1, -1):
            if not batch[index].future.done() and index not in result.unrecordable:
                return index
        return None

    # -- appending (appender thread) -----------------------------------------------------------

    def _append(self, events: list[EventEnvelope[Any]]) -> _BatchResult:
        size_before = self.appender.size
        try:
            checkpoint = self.appender.append_batch(events)
            return _BatchResult(checkpoint, self.appender.size - size_before, {})
        except RecordError:
            pass
        # Rare: an event that parses but cannot be recorded. Find it, log the others.
        unrecordable: dict[int, str] = {}
        for index, event in enumerate(events):
            if event.type in self.appender.not_logged_types:
                continue
            try:
                record_for_event(event)
            except RecordError as error:
                unrecordable[index] = str(error)
        kept = [event for index, event in enumerate(events) if index not in unrecordable]
        checkpoint = self.appender.append_batch(kept)
        for index, reason in unrecordable.items():
            log.error("audit.unrecordable_event", event_id=str(events[index].event_id), reason=reason)
        return _BatchResult(checkpoint, self.appender.size - size_before, unrecordable)


def audit_processor(settings: Settings | None = None) -> AuditProcessor:
    """The processor `mshale-fl worker audit` runs: the appender configured by MSHALE_AUDIT_*.

    Raises `UserFacingError` when the log cannot be opened (no signing key, key and origin
    disagree, store unreachable, log contradicting its checkpoints).
    """
    from mshale_fl.audit.appender import LogIntegrityError
    from mshale_fl.audit.config import open_appender
    from mshale_fl.audit.keys import KeyFileError
    from mshale_fl.audit.stores.base import StoreError

    try:
        return AuditProcessor(open_appender)
    except KeyFileError as error:
        raise UserFacingError(str(error)) from None
    except StoreError as error:
        raise UserFacingError(f"cannot open the audit store: {error}") from None
    except LogIntegrityError as error:
        raise UserFacingError(f"the audit log is damaged, run `mshale-fl audit verify`: {error}") from None


def run_audit_worker(settings: Settings) -> ConsumerStats:
    """`mshale-fl worker audit`: serve until SIGTERM/SIGINT, then close the appender."""
    configure_logging(settings.log_level)
    processor = audit_processor(settings)
    try:
        stats = asyncio.run(serve_audit(processor, settings))
        log.info("worker.stopped", role="audit", appended=processor.appended, batches=processor.batches, **vars(stats))
        return stats
    finally:
        processor.close()


async def serve_audit(
    processor: AuditProcessor,
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
    shutdown_grace: float = 10.0,
) -> ConsumerStats:
    """Run the audit role (`run_worker`) and, beside it, the receipt responder; stop on a signal or `stop`."""
    connection = await connect(settings.broker_url, name="mshale-fl worker audit receipts")
    try:
        await declare_topology(connection, delivery_limit=settings.delivery_limit)
        responder = ReceiptResponder(connection, processor.answer_receipt)
        await responder.start()
        try:
            return await run_worker(
                "audit",
                processor,
                settings,
                stop=stop,
                install_signal_handlers=install_signal_handlers,
                shutdown_grace=shutdown_grace,
                declare=False,
            )
        finally:
            await responder.stop()
    finally:
        await connection.close()
