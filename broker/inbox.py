"""`InboxProcessor`: runs SQL handlers so that each event has its effect exactly once, in batches.

The inbox row (consumer, event_id, outputs) and the handler's writes commit in one transaction,
the contract of `mshale_fl.store.inbox.SqlInbox`. A redelivered event finds its row and gets the
outputs recorded the first time (same event ids), without running the handler again.

Group commit: deliveries that arrive while a transaction is running wait, and then go together in
the next one (one SELECT for their ids, the handlers in delivery order, one INSERT of their inbox
rows, one COMMIT). Exactly-once is kept because nothing is acked before its transaction commits
and a batch commits whole or not at all. Under light load a batch is one event, so latency does not
grow; under load, the per-transaction cost (a thread hop, BEGIN IMMEDIATE, COMMIT) is shared.

When a handler raises in a batch, the transaction is rolled back, that event gets the exception
(permanent or transient: the runtime decides), and the other events are applied again without it.
A concurrent worker that applied one of the events first makes the INSERT conflict: the batch is
rolled back and its events go one by one through `SqlInbox.apply_once`, which resolves that race.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from mshale_fl.crashpoints import crash_point
from mshale_fl.logging import get_logger
from mshale_fl.schemas.events import EventEnvelope, parse_event
from mshale_fl.store.inbox import SqlInbox
from mshale_fl.store.schema import inbox as inbox_table

log = get_logger(__name__)

MAX_BATCH = 256

# Built once: constructing statements per batch costs more than running them.
_RECORDED = select(inbox_table.c.event_id, inbox_table.c.outputs).where(
    inbox_table.c.consumer == bindparam("consumer"), inbox_table.c.event_id.in_(bindparam("event_ids", expanding=True))
)
_RECORD = insert(inbox_table)

Outcome = tuple[bool, list[EventEnvelope[Any]]] | BaseException


class SqlHandler(Protocol):
    """The contract for SQL-backed handlers (validate, ledger, ...).

    `handle` is synchronous and runs in a worker thread inside the inbox transaction: what it
    writes through `connection` commits together with the inbox row, or not at all. It must have
    no other side effect (it may run again if its batch is rolled back). Raise
    `PermanentError(reason_code, message)` to refuse an event for good (it is dead-lettered).
    """

    consumer_name: str

    def handle(self, event: EventEnvelope[Any], connection: Connection) -> Sequence[EventEnvelope[Any]]: ...


class _HandlerFailed(Exception):
    def __init__(self, index: int, error: BaseException) -> None:
        self.index = index
        self.error = error


class InboxProcessor:
    """A `Processor` applying a `SqlHandler` exactly once per event (see the module docstring).

    One transaction at a time per processor, on one dedicated thread, so effects are applied in
    delivery order (what a single-active-consumer queue such as the audit log relies on).
    """

    def __init__(self, handler: SqlHandler, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        self.handler = handler
        self.consumer_name = handler.consumer_name
        self.engine = engine
        self.inbox = SqlInbox(engine, handler.consumer_name)
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"inbox-{self.consumer_name}")
        self._waiting: list[tuple[EventEnvelope[Any], asyncio.Future[Outcome], contextvars.Context]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.replayed = 0
        """Deliveries whose event had already been applied (their recorded outputs were returned)."""
        self.transactions = 0

    async def process(self, event: EventEnvelope[Any]) -> Sequence[EventEnvelope[Any]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        # The caller's context (current_delivery()) travels with the event into the thread.
        self._waiting.append((event, future, contextvars.copy_context()))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        outcome = await future
        assert not isinstance(outcome, BaseException)
        applied_now, outputs = outcome
        if not applied_now:
            self.replayed += 1
            log.info("inbox.already_applied", consumer=self.consumer_name, event_id=str(event.event_id))
        return outputs

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    # -- batching (event loop side) ------------------------------------------------------------

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # let the deliveries that arrived in this loop turn join the batch
        while self._waiting:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            items = [(event, context) for event, _, context in batch]
            try:
                outcomes = await loop.run_in_executor(self._executor, self._apply, items)
            except BaseException as error:  # the executor itself failed (shut down): fail the batch
                outcomes = [error] * len(batch)
            for (_, future, _), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # the delivery was given up (shutdown); the inbox keeps the result
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    # -- transactions (worker thread side) -----------------------------------------------------

    def _apply(self, items: list[tuple[EventEnvelope[Any], contextvars.Context]]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(items)
        pending = list(range(len(items)))
        while pending:
            try:
                results = self._apply_batch([items[i] for i in pending])
            except _HandlerFailed as failed:
                position = pending.pop(failed.index)
                outcomes[position] = failed.error
                continue
            except IntegrityError:
                for position in pending:
                    outcomes[position] = self._apply_alone(*items[position])
                break
            except Exception as error:  # the database itself failed: every event is retried
                for position in pending:
                    outcomes[position] = error
                break
            for position, result in zip(pending, results, strict=True):
                outcomes[position] = result
            break
        return [outcome for outcome in outcomes if outcome is not None]

    def _apply_batch(self, items: list[tuple[EventEnvelope[Any], contextvars.Context]]) -> list[Outcome]:
        keys = [str(event.event_id) for event, _ in items]
        results: list[Outcome] = []
        fresh: dict[str, list[EventEnvelope[Any]]] = {}
        rows: list[dict[str, Any]] = []
        self.transactions += 1
        with self.engine.begin() as connection:
            found = connection.execute(_RECORDED, {"consumer": self.consumer_name, "event_ids": sorted(set(keys))})
            recorded = {event_id: outputs for event_id, outputs in found}
            now = datetime.now(UTC)
            for index, ((event, context), key) in enumerate(zip(items, keys, strict=True)):
                if key in recorded:
                    results.append((False, _decode(recorded[key])))
                    continue
                if key in fresh:  # the same event twice in one batch (a duplicate publish)
                    results.append((False, fresh[key]))
                    continue
                try:
                    outputs = list(context.run(self.handler.handle, event, connection))
                except Exception as error:
                    raise _HandlerFailed(index, error) from error
                fresh[key] = outputs
                rows.append(
                    {
                        "consumer": self.consumer_name,
                        "event_id": key,
                        "applied_at": now,
                        "outputs": json.dumps([item.model_dump(mode="json") for item in outputs]),
                    }
                )
                results.append((True, outputs))
            if rows:
                connection.execute(_RECORD, rows)
                crash_point("inbox.before_commit")
        return results

    def _apply_alone(self, event: EventEnvelope[Any], context: contextvars.Context) -> Outcome:
        try:
            return self.inbox.apply_once(event.event_id, lambda connection: context.run(self.handler.handle, event, connection))
        except Exception as error:
            return error


def _decode(recorded: str) -> list[EventEnvelope[Any]]:
    # Same encoding as SqlInbox: a JSON list of events in their JSON form.
    return [parse_event(json.dumps(item)) for item in json.loads(recorded)]
