"""A load generator: N simulated partner agents submitting specs and vectors to real Mishale workers.

Reusable by benchmarks (`benchmarks/load_scale.py`), the load test (`tests/load/`) and fault
suites that kill workers or the broker while it runs (`MishaleWorkers.processes` holds each
replica's process; `check_load` says what was lost or duplicated). Four parts, each usable alone:

- **Partners** (`provision_partners`): each simulated partner is registered the way `partners add`
  does it (ledger row, API key, its own RabbitMQ user with the partner permissions), Tier 1 or
  Tier 2 with a DPA, alternating.
- **Workload** (`build_workload`): the `spec.submitted` / `vectors.submitted` events each partner
  sends, built as `submit` builds them (content-derived event ids from `submission_event_id` and
  `batch_event_id`, layout vectors from the featurizer, encoded once before the clock starts). A
  share of submissions can be made to be rejected (a spec labelled `internal`), so the ledger check
  has something to leave out.
- **Generator** (`LoadGenerator`): one connection per partner, authenticated as the partner's broker
  user, publishing with confirms through a window and collecting receipts on the partner's own reply
  queue, as `submit` does. Open loop at a given rate, or as fast as the windows allow.
- **Observation** (`MishaleWorkers`, `QueueDepthSampler`, `AuditLogWatcher`, `ledger_view`,
  `check_load`, `stage_times`): worker replicas as real `mshale-fl worker ROLE` processes, queue
  backlogs while a run goes on, and what happened to each event, read from the stores afterwards:
  when the validator committed it (its inbox row), when the ledger recorded the contribution
  (`recorded_at`), when the audit log covered it (the modification time of the first signed
  checkpoint whose tree holds it). No timing hook in the product: every time comes
  from what the workers write anyway, on the same machine clock as the generator's `time.time()`.

Times are wall-clock seconds (`time.time()`), because they are compared with file times and
database timestamps written by other processes.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from sqlalchemy import Engine, select

from mshale_fl.agents.mishale.validate import receipt_id
from mshale_fl.agents.partner.batches import batch_event_id
from mshale_fl.agents.partner.featurize import featurize
from mshale_fl.agents.partner.submit import (
    partner_broker_url,
    receipt_binding_key,
    reply_queue_name,
)
from mshale_fl.agents.partner.transmission import submission_event_id
from mshale_fl.audit.log import CHECKPOINTS, TransparencyLog, position_key
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.broker import EVENTS_EXCHANGE, Publisher, connect, declare_topology
from mshale_fl.broker.publisher import encode_event, event_properties
from mshale_fl.demo.processes import ProcessGroup, WorkerProcess
from mshale_fl.ledger import BrokerAdmin, register_partner
from mshale_fl.ledger.agreements import AgreementKind, AgreementTerms
from mshale_fl.ledger.broker_identity import vhost_from_amqp_url
from mshale_fl.ledger.tables import contributions
from mshale_fl.schemas.events import new_event
from mshale_fl.schemas.payloads import SpecSubmitted, VectorsSubmitted
from mshale_fl.schemas.protocol_spec import ProtocolSpec
from mshale_fl.schemas.vocabulary import Sensitivity
from mshale_fl.store.schema import inbox
from mshale_fl.testing.postgres import (
    temporary_postgres_database as _temporary_postgres_database,
)
from mshale_fl.testing.rabbitmq import MANAGEMENT_URL, management_client
from mshale_fl.testing.samples import digest, sample_spec

WORKER_ROLES = ("validate", "ledger", "audit")


# -- partners --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedPartner:
    partner_id: str
    tier: int
    api_key: str = field(repr=False)


def provision_partners(engine: Engine, vhost: str, count: int, *, tag: str | None = None) -> list[SimulatedPartner]:
    """Register `count` partners in the ledger and on the broker (own user each); Tier 1 and Tier 2 alternate.

    Broker users are global to RabbitMQ: remove them with `remove_partner_users` afterwards.
    """
    tag = tag or uuid.uuid4().hex[:8]
    today = date.today()
    dpa = AgreementTerms(
        AgreementKind.DPA, valid_from=today - timedelta(days=1), valid_until=today + timedelta(days=365), attorney_reviewed=True
    )
    partners: list[SimulatedPartner] = []
    with BrokerAdmin(MANAGEMENT_URL, "guest", "guest", vhost) as admin:
        try:
            for index in range(count):
                tier = 1 if index % 2 == 0 else 2
                partner_id = f"load-{tag}-{index:03d}"
                registration = register_partner(
                    engine, partner_id, tier=tier, broker=admin, agreements=[dpa] if tier == 2 else []
                )
                partners.append(SimulatedPartner(partner_id, tier, registration.key.api_key.get_secret_value()))
        except BaseException:
            remove_partner_users(partner.partner_id for partner in partners)
            raise
    return partners


def remove_partner_users(partner_ids: Iterable[str]) -> None:
    """Delete the partners' broker users (global to RabbitMQ, so they outlive a throw-away vhost)."""
    with management_client() as client:
        for partner_id in partner_ids:
            client.delete(f"/api/users/{quote(partner_id, safe='')}")


# -- the workload ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadProfile:
    """What each simulated partner sends."""

    submissions_per_partner: int = 50
    vector_share: float = 0.5
    """Of a Tier 2 partner's submissions, the share that are `vectors.submitted` batches (the rest specs)."""
    vectors_per_batch: int = 16
    rejected_share: float = 0.0
    """Share of submissions the validator must reject (a spec labelled `internal`: may leave as vectors at most)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.submissions_per_partner < 1:
            raise ValueError("each partner sends at least one submission")
        if not (0 <= self.vector_share <= 1 and 0 <= self.rejected_share <= 1):
            raise ValueError("vector_share and rejected_share are fractions in [0, 1]")
        if not 1 <= self.vectors_per_batch <= 1000:
            raise ValueError("a batch holds 1-1000 vectors (the contract)")


@dataclass(frozen=True)
class PlannedSubmission:
    """One event a partner will publish, encoded once, and what Mishale should answer."""

    event_id: uuid.UUID
    partner_id: str
    type: str
    routing_key: str
    body: bytes = field(repr=False)
    items: int
    expect_accepted: bool
    properties: Any = field(repr=False)

    @property
    def receipt_id(self) -> uuid.UUID:
        return receipt_id(self.event_id)


def _spec(seed_text: str, seed: int) -> ProtocolSpec:
    spec = sample_spec(seed % 1000)
    return spec.model_copy(update={"content_hash": digest(("load", seed_text))})


def build_workload(partners: Sequence[SimulatedPartner], profile: LoadProfile) -> dict[str, list[PlannedSubmission]]:
    """Every partner's submissions, in sending order (deterministic for a profile's seed)."""
    rng = random.Random(profile.seed)
    workload: dict[str, list[PlannedSubmission]] = {}
    for partner in partners:
        planned = []
        for number in range(profile.submissions_per_partner):
            key = f"{partner.partner_id}/{profile.seed}/{number}"
            reject = rng.random() < profile.rejected_share
            vectors = partner.tier >= 2 and not reject and rng.random() < profile.vector_share
            if vectors:
                batch = [featurize(_spec(f"{key}/{i}", number + i)) for i in range(profile.vectors_per_batch)]
                payload: Any = VectorsSubmitted(sensitivity=Sensitivity.INTERNAL, vectors=batch)
                event = new_event("vectors.submitted", payload, partner_id=partner.partner_id,
                                  event_id=batch_event_id(partner.partner_id, payload))  # fmt: skip
                items = len(batch)
            else:
                spec = _spec(key, number)
                label = Sensitivity.INTERNAL if reject else Sensitivity.PUBLISHED
                event = new_event("spec.submitted", SpecSubmitted(sensitivity=label, spec=spec), partner_id=partner.partner_id,
                                  event_id=submission_event_id(partner.partner_id, spec.content_hash, 1))  # fmt: skip
                items = 1
            planned.append(
                PlannedSubmission(
                    event_id=event.event_id,
                    partner_id=partner.partner_id,
                    type=event.type,
                    routing_key=event.routing_key,
                    body=encode_event(event),
                    items=items,
                    expect_accepted=not reject,
                    properties=event_properties(event, user_id=partner.partner_id),
                )
            )
        workload[partner.partner_id] = planned
    return workload


# -- the generator ---------------------------------------------------------------------------------


@dataclass
class SentSubmission:
    planned: PlannedSubmission
    scheduled_at: float | None = None
    published_at: float | None = None
    """The first publish (a resubmission keeps it, so latencies count from the first attempt)."""
    confirmed_at: float | None = None
    receipt_at: float | None = None
    accepted: bool | None = None
    error: str | None = None
    """The last publish failure, if the last attempt failed."""
    attempts: int = 0


@dataclass
class LoadRun:
    """What the generator did: one `SentSubmission` per planned event, and when it ran."""

    sent: list[SentSubmission]
    started_at: float
    published_by: float
    finished_at: float
    rate: float | None
    resubmitted: int = 0
    """Publishes repeated by resubmission passes (a partner running `submit` again)."""

    @property
    def confirmed(self) -> list[SentSubmission]:
        return [item for item in self.sent if item.confirmed_at is not None]

    @property
    def missing_receipts(self) -> list[SentSubmission]:
        return [item for item in self.confirmed if item.receipt_at is None]

    @property
    def max_schedule_lag(self) -> float:
        """How far publishing fell behind the open-loop schedule (s); large means the generator saturated."""
        lags = [item.published_at - item.scheduled_at for item in self.sent if item.published_at and item.scheduled_at]
        return max(lags, default=0.0)


class LoadGenerator:
    """Publishes a workload as its partners, each on its own connection; collects the receipts.

    `rate` (submissions/s over all partners) paces an open loop: submission j of partner k is due at
    start + (j * partners + k) / rate, published then even if earlier ones are unconfirmed (a late
    one is published at once and its lag recorded). Without a rate every partner publishes as fast
    as its `window` of unconfirmed publishes allows. The clock starts after every partner has
    connected and bound its reply queue, so connecting is not measured.

    Connections are not robust, like `submit`'s: a publish that fails (connection closed by a
    fault) is recorded, not retried in place. With `resubmit_passes`, partners left with
    submissions lacking a receipt after `receipt_timeout` reconnect and publish those again, as a
    partner runs `submit` again (same event ids, so Mishale applies each once); up to that many
    passes, each waiting `receipt_timeout` again.
    """

    def __init__(
        self,
        broker_url: str,
        partners: Sequence[SimulatedPartner],
        workload: Mapping[str, Sequence[PlannedSubmission]],
        *,
        rate: float | None = None,
        window: int = 64,
        receipt_timeout: float = 300.0,
        resubmit_passes: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("the rate must be positive (or None for as fast as possible)")
        self.broker_url = broker_url
        self.partners = list(partners)
        self.workload = workload
        self.rate = rate
        self.window = window
        self.receipt_timeout = receipt_timeout
        self.resubmit_passes = resubmit_passes
        self.progress = progress
        self.sent: dict[uuid.UUID, SentSubmission] = {}
        self._receipts_done = asyncio.Event()
        self._receipts = 0
        self._expected = 0

    async def run(self) -> LoadRun:
        self.sent = {item.event_id: SentSubmission(item) for items in self.workload.values() for item in items}
        self._expected = len(self.sent)
        connections: list[AbstractConnection] = []
        try:
            publishers = {}
            for partner in self.partners:
                publishers[partner.partner_id] = await self._connect(partner, connections)
            started = time.time()
            await asyncio.gather(
                *(
                    self._send_all(publishers[partner.partner_id], self.workload.get(partner.partner_id, ()), index, started)
                    for index, partner in enumerate(self.partners)
                )
            )
            published_by = time.time()
            await self._wait_for_receipts()
            resubmitted = 0
            for _ in range(self.resubmit_passes):
                resubmitted += await self._resubmit(connections)
            return LoadRun(list(self.sent.values()), started, published_by, time.time(), self.rate, resubmitted)
        finally:
            for connection in connections:
                try:
                    await connection.close()
                except Exception:  # the broker closed it first (a fault suite's doing): nothing to release
                    pass

    async def _connect(self, partner: SimulatedPartner, connections: list[AbstractConnection]) -> Publisher:
        url = partner_broker_url(self.broker_url, partner.partner_id, partner.api_key)
        connection = await connect(url, name=f"mshale-fl load {partner.partner_id}", robust=False)
        connections.append(connection)
        await self._listen_for_receipts(connection, partner.partner_id)
        # The publisher's own window never binds: ours (per partner) does, so that the publish
        # time is taken when a message really leaves, not when it starts waiting for a slot.
        return await Publisher.open(connection, window=self.window + 1, user_id=partner.partner_id)

    async def _wait_for_receipts(self) -> None:
        try:
            await asyncio.wait_for(self._receipts_done.wait(), timeout=self.receipt_timeout)
        except TimeoutError:
            pass

    async def _resubmit(self, connections: list[AbstractConnection]) -> int:
        """Publish again, as a fresh `submit` run, every submission still without a receipt; how many."""
        pending: dict[str, list[PlannedSubmission]] = {}
        for record in self.sent.values():
            if record.receipt_at is None:
                pending.setdefault(record.planned.partner_id, []).append(record.planned)
        if not pending:
            return 0
        sends = []
        for index, partner in enumerate(self.partners):
            if partner.partner_id in pending:
                try:
                    publisher = await self._connect(partner, connections)
                except Exception as error:  # the broker is still away: the next pass tries again
                    for planned in pending[partner.partner_id]:
                        self.sent[planned.event_id].error = f"reconnect: {type(error).__name__}: {error}"[:300]
                    continue
                sends.append(self._send_all(publisher, pending[partner.partner_id], index, None))
        await asyncio.gather(*sends)
        await self._wait_for_receipts()
        return sum(len(items) for items in pending.values())

    async def _send_all(
        self, publisher: Publisher, items: Sequence[PlannedSubmission], index: int, started: float | None
    ) -> None:
        """Publish `items` through the window, paced by `rate` from `started` (None: not paced)."""
        window = asyncio.Semaphore(self.window)
        tasks = []
        for number, planned in enumerate(items):
            record = self.sent[planned.event_id]
            if self.rate is not None and started is not None:
                record.scheduled_at = started + (number * len(self.partners) + index) / self.rate
                delay = record.scheduled_at - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await window.acquire()
            tasks.append(asyncio.ensure_future(self._publish(publisher, planned, record, window)))
        await asyncio.gather(*tasks)

    async def _publish(
        self, publisher: Publisher, planned: PlannedSubmission, record: SentSubmission, window: asyncio.Semaphore
    ) -> None:
        try:
            if record.published_at is None:
                record.published_at = time.time()
            record.attempts += 1
            await publisher.publish_raw(
                planned.body, exchange=EVENTS_EXCHANGE, routing_key=planned.routing_key, properties=planned.properties
            )
            record.confirmed_at = record.confirmed_at or time.time()
            record.error = None
        except Exception as error:  # recorded, not raised: a fault suite wants every outcome
            record.error = f"{type(error).__name__}: {error}"[:300]
        finally:
            window.release()

    async def _listen_for_receipts(self, connection: AbstractConnection, partner_id: str) -> None:
        # As `submit` does: the partner's own exclusive reply queue, bound to its receipts only,
        # declared before anything is published so no receipt can be missed.
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue(
            reply_queue_name(partner_id), exclusive=True, auto_delete=True, arguments={"x-queue-type": "classic"}
        )
        await queue.bind(EVENTS_EXCHANGE, routing_key=receipt_binding_key(partner_id))
        await queue.consume(self._on_receipt, no_ack=True, exclusive=True)

    async def _on_receipt(self, message: AbstractIncomingMessage) -> None:
        arrived = time.time()
        try:
            body = json.loads(message.body)
            submission_id = uuid.UUID(body["payload"]["submission_id"])
            accepted = body["type"] == "submission.accepted"
        except (ValueError, KeyError, TypeError):
            return
        record = self.sent.get(submission_id)
        if record is None or record.receipt_at is not None:
            return
        record.receipt_at = arrived
        record.accepted = accepted
        self._receipts += 1
        if self.progress is not None:
            self.progress(self._receipts, self._expected)
        if self._receipts >= self._expected:
            self._receipts_done.set()


# -- worker replicas -------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WorkersFailed(RuntimeError):
    """A worker process exited, or the replicas did not all start consuming in time."""


class MishaleWorkers:
    """`replicas` real `mshale-fl worker ROLE` processes per role, sharing one ledger and one audit log.

    Each process gets its own `MSHALE_HOME` (the audit index is per process, README of audit/) and
    the shared `MSHALE_LEDGER_URL`, `MSHALE_AUDIT_LOCAL_DIR` and signing key. The audit queue is
    single-active-consumer, so audit replicas beyond the first are hot standbys.
    """

    def __init__(
        self,
        broker_url: str,
        ledger_url: str,
        state_dir: Path,
        *,
        replicas: int | Mapping[str, int] = 1,
        origin: str = "load.mshale.local/audit",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.broker_url = broker_url
        self.ledger_url = ledger_url
        self.state_dir = Path(state_dir)
        self.replicas = {role: replicas for role in WORKER_ROLES} if isinstance(replicas, int) else dict(replicas)
        self.origin = origin
        self.audit_log_dir = self.state_dir / "audit-log"
        self.key_file = self.state_dir / "audit-signing.key"
        self.group = ProcessGroup(
            {
                "MSHALE_BROKER_URL": broker_url,
                "MSHALE_LEDGER_URL": ledger_url,
                "MSHALE_AUDIT_ORIGIN": origin,
                "MSHALE_AUDIT_LOCAL_DIR": str(self.audit_log_dir),
                "MSHALE_AUDIT_KEY_FILE": str(self.key_file),
                "MSHALE_LOG_LEVEL": "INFO",
                **(env or {}),
            },
            self.state_dir / "logs",
        )
        self.processes: dict[str, list[WorkerProcess]] = {role: [] for role in self.replicas}

    async def start(self, *, timeout: float = 300.0) -> None:
        """Start every replica and return once each role's queue has all its consumers."""
        from mshale_fl.audit.keys import create_signing_key

        if not self.key_file.exists():
            create_signing_key(self.key_file, self.origin)
        for role, count in self.replicas.items():
            for index in range(count):
                self.start_replica(role, index)
        await self.wait_consuming(timeout=timeout)

    def start_replica(self, role: str, index: int) -> WorkerProcess:
        home = self.state_dir / f"{role}-{index}"
        child = self.group.start(f"{role}-{index}", "worker", role, env={"MSHALE_HOME": str(home)})
        self.processes.setdefault(role, []).append(child)
        return child

    async def wait_consuming(self, *, timeout: float = 300.0) -> None:
        """Wait until each role's queue lists all its replicas as consumers.

        Asked of the management API: a single-active-consumer queue reports only its active
        consumer in `queue.declare-ok`, while the consumer list shows the waiting standbys too.
        """
        path = f"/api/consumers/{quote(vhost_from_amqp_url(self.broker_url), safe='')}"
        deadline = time.monotonic() + timeout
        with management_client() as client:
            while True:
                self.raise_if_failed()
                listed = client.get(path)
                names = [item["queue"]["name"] for item in listed.json()] if listed.status_code == 200 else []
                counts = {role: names.count(f"mshale.{role}") for role in self.replicas}
                if all(counts[role] >= count for role, count in self.replicas.items()):
                    return
                if time.monotonic() > deadline:
                    raise WorkersFailed(f"workers not all consuming after {timeout:.0f} s: consumers {counts}")
                await asyncio.sleep(0.5)

    def raise_if_failed(self) -> None:
        for child in self.group.failed():
            raise WorkersFailed(f"{child.name} exited with {child.process.returncode}; its log:\n{child.tail(30)}")

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each role's processes together."""
        return {
            role: sum(process_cpu_seconds(child.process.pid) for child in children)
            for role, children in self.processes.items()
        }

    def stop(self) -> dict[str, int]:
        return self.group.stop()

    async def __aenter__(self) -> MishaleWorkers:
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()


async def declare_mishale_topology(broker_url: str) -> None:
    """Declare the topology (partners bind their reply queues to `mshale.events`, so it must exist first)."""
    from mshale_fl.config import Settings

    connection = await aio_pika.connect(broker_url)
    try:
        await declare_topology(connection, delivery_limit=Settings().delivery_limit)
    finally:
        await connection.close()


class QueueDepthSampler:
    """Samples the ready messages of queues every `interval` s while a run goes on (where work piles up).

        async with QueueDepthSampler(broker_url, ["mshale.validate", "mshale.audit"]) as depths:
            ...
        depths.samples  # [(time.time(), {"mshale.validate": 120, ...}), ...]
    """

    def __init__(self, broker_url: str, queues: Sequence[str], *, interval: float = 0.25) -> None:
        self.broker_url = broker_url
        self.queues = list(queues)
        self.interval = interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._task: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self._stopping = asyncio.Event()

    async def __aenter__(self) -> QueueDepthSampler:
        self._connection = await aio_pika.connect(self.broker_url)
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Let a sample in progress finish (cancelling a declare mid-call closes its channel noisily).
        self._stopping.set()
        if self._task is not None:
            await self._task
        if self._connection is not None:
            await self._connection.close()

    async def _sample(self) -> None:
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=False)
        while not self._stopping.is_set():
            depths = {}
            for name in self.queues:
                declared = await channel.declare_queue(name, passive=True)
                depths[name] = int(declared.declaration_result.message_count or 0)
            self.samples.append((time.time(), depths))
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)
            except TimeoutError:
                pass

    def peak(self, queue: str) -> int:
        return max((depths.get(queue, 0) for _, depths in self.samples), default=0)


# -- what happened to each event -------------------------------------------------------------------


class AuditLogWatcher:
    """Reads a local-directory audit log as it grows: where each event is, and when it was appended.

    An entry counts as appended when the first signed checkpoint covering it was written (the
    checkpoint object's modification time): that is when the audit worker's `append_batch`
    returned, after which it acknowledges the events.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.log = TransparencyLog(LocalStore(self.log_dir))
        self.positions: dict[uuid.UUID, list[int]] = {}
        self.types: list[str] = []
        self._checkpoint_sizes: list[int] = []
        self._checkpoint_times: dict[int, float] = {}

    @property
    def size(self) -> int:
        return len(self.types)

    def poll(self) -> int:
        """Read entries appended since the last poll; returns the number of entries read so far."""
        if not (self.log_dir / "entries").exists():
            return 0
        starts = self.log.bundle_starts()
        for start, records in self.log.iter_bundles(starts, from_index=self.size):
            for offset, record in enumerate(records):
                position = start + offset
                if position < self.size:
                    continue
                data = json.loads(record)
                self.positions.setdefault(uuid.UUID(data["event_id"]), []).append(position)
                self.types.append(data["event_type"])
        return self.size

    def covered_size(self) -> int:
        """Entries covered by a signed checkpoint."""
        self._refresh_checkpoints()
        return self._checkpoint_sizes[-1] if self._checkpoint_sizes else 0

    def appended_at(self, position: int) -> float | None:
        """When the entry at `position` was covered by a signed checkpoint (None: not yet)."""
        index = bisect.bisect_right(self._checkpoint_sizes, position)
        if index == len(self._checkpoint_sizes):
            self._refresh_checkpoints()
            index = bisect.bisect_right(self._checkpoint_sizes, position)
            if index == len(self._checkpoint_sizes):
                return None
        size = self._checkpoint_sizes[index]
        if size not in self._checkpoint_times:
            self._checkpoint_times[size] = (self.log_dir / position_key(CHECKPOINTS, size)).stat().st_mtime
        return self._checkpoint_times[size]

    def event_appended_at(self, event_id: uuid.UUID) -> float | None:
        positions = self.positions.get(event_id)
        return self.appended_at(positions[0]) if positions else None

    def batch_sizes(self) -> list[int]:
        """Entries per append (checkpoint to checkpoint): how much group commit the audit worker got."""
        self._refresh_checkpoints()
        sizes = [size for size in self._checkpoint_sizes if size > 0]
        return [b - a for a, b in zip([0, *sizes], sizes, strict=False)]

    def _refresh_checkpoints(self) -> None:
        if (self.log_dir / "checkpoints").exists():
            self._checkpoint_sizes = self.log.checkpoint_sizes()


@dataclass(frozen=True)
class LedgerView:
    """The ledger's side of a run, for the partners of the run."""

    contributions: dict[str, dict[str, Any]]
    """Keyed by the receipt (event) id: partner_id, kind, items, submission_id, recorded_at (epoch s)."""
    validated_at: dict[str, float]
    """Submission event id -> when the validator's inbox transaction committed (epoch s)."""
    ledger_inbox: int
    """Receipts of the run's partners the ledger worker applied (inbox rows of consumer `ledger`)."""


def _epoch(value: datetime) -> float:
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value).timestamp()


def ledger_view(engine: Engine, run: LoadRun) -> LedgerView:
    partner_ids = sorted({item.planned.partner_id for item in run.sent})
    submission_ids = [str(item.planned.event_id) for item in run.sent]
    receipt_ids = [str(item.planned.receipt_id) for item in run.sent]
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                contributions.c.event_id, contributions.c.partner_id, contributions.c.kind, contributions.c.item_count,
                contributions.c.submission_id, contributions.c.recorded_at,
            ).where(contributions.c.partner_id.in_(partner_ids))
        ).all()  # fmt: skip
        validated: dict[str, float] = {}
        ledger_inbox = 0
        for chunk in _chunks(submission_ids, 500):
            for event_id, applied_at in connection.execute(
                select(inbox.c.event_id, inbox.c.applied_at).where(inbox.c.consumer == "validate", inbox.c.event_id.in_(chunk))
            ):
                validated[event_id] = _epoch(applied_at)
        for chunk in _chunks(receipt_ids, 500):
            ledger_inbox += len(
                connection.execute(
                    select(inbox.c.event_id).where(inbox.c.consumer == "ledger", inbox.c.event_id.in_(chunk))
                ).all()
            )
    return LedgerView(
        contributions={
            row.event_id: {
                "partner_id": row.partner_id, "kind": row.kind, "items": row.item_count,
                "submission_id": row.submission_id, "recorded_at": _epoch(row.recorded_at),
            }
            for row in rows
        },  # fmt: skip
        validated_at=validated,
        ledger_inbox=ledger_inbox,
    )


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def wait_until_settled(
    run: LoadRun, watcher: AuditLogWatcher, engine: Engine, *, timeout: float = 300.0, interval: float = 0.5
) -> bool:
    """Wait until every confirmed submission and its receipt are in the audit log, covered by a
    checkpoint, and every accepted one has its contribution; True if that happened within `timeout`."""
    wanted = {item.planned.event_id for item in run.confirmed} | {
        item.planned.receipt_id for item in run.confirmed if item.receipt_at is not None
    }
    accepted = {str(item.planned.receipt_id) for item in run.confirmed if item.accepted}
    deadline = time.monotonic() + timeout
    while True:
        watcher.poll()
        logged = all(event_id in watcher.positions for event_id in wanted)
        if logged and watcher.covered_size() >= max((watcher.positions[e][-1] + 1 for e in wanted), default=0):
            with engine.connect() as connection:
                recorded = {
                    row[0]
                    for chunk in _chunks(sorted(accepted), 500)
                    for row in connection.execute(select(contributions.c.event_id).where(contributions.c.event_id.in_(chunk)))
                }
            if accepted <= recorded:
                return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)


# -- checking and summarising --------------------------------------------------------------------


@dataclass
class LoadCheck:
    """Did every event arrive exactly once everywhere it should? `problems` lists each way it did not."""

    submissions: int
    accepted: int
    rejected: int
    log_entries: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_load(run: LoadRun, watcher: AuditLogWatcher, ledger: LedgerView, *, log_is_the_runs: bool = True) -> LoadCheck:
    """Compare what the generator published with the audit log and the ledger.

    Every published submission and its receipt must be in the log exactly once; the receipt must say
    what the workload expected; every accepted submission must have exactly one contribution with its
    item count and no rejected one any; the ledger worker must have applied each receipt once. With
    `log_is_the_runs` (a log that only this run wrote), any other entry is a problem too.
    """
    watcher.poll()
    sent = run.sent
    check = LoadCheck(
        submissions=len(sent),
        accepted=sum(1 for item in sent if item.accepted),
        rejected=sum(1 for item in sent if item.accepted is False),
        log_entries=watcher.size,
    )

    def problem(kind: str, items: Sequence[Any]) -> None:
        if items:
            check.problems.append(f"{kind}: {len(items)} (first: {items[0]})")

    problem("publish errors", [f"{item.planned.event_id} {item.error}" for item in sent if item.error])
    problem("unconfirmed publishes", [item.planned.event_id for item in sent if item.confirmed_at is None])
    problem("missing receipts", [item.planned.event_id for item in run.missing_receipts])
    problem("unexpected verdicts", [item.planned.event_id for item in sent
                                    if item.accepted is not None and item.accepted != item.planned.expect_accepted])  # fmt: skip
    expected_ids = {item.planned.event_id for item in sent} | {item.planned.receipt_id for item in sent}
    problem("submissions missing from the audit log", [i.planned.event_id for i in sent if i.planned.event_id not in watcher.positions])
    problem("receipts missing from the audit log",
            [i.planned.receipt_id for i in sent if i.receipt_at is not None and i.planned.receipt_id not in watcher.positions])  # fmt: skip
    problem("events in the audit log more than once", [event_id for event_id, at in watcher.positions.items() if len(at) > 1])
    if log_is_the_runs:
        problem("log entries from outside the run", [event_id for event_id in watcher.positions if event_id not in expected_ids])
    by_submission: Counter[str] = Counter(row["submission_id"] for row in ledger.contributions.values())
    for item in sent:
        key = str(item.planned.event_id)
        row = ledger.contributions.get(str(item.planned.receipt_id))
        if item.accepted and (row is None or by_submission[key] != 1):
            check.problems.append(f"accepted submission {key} has {by_submission[key]} contributions")
        elif item.accepted and row is not None and row["items"] != item.planned.items:
            check.problems.append(f"submission {key}: ledger counts {row['items']} items, {item.planned.items} were sent")
        elif item.accepted is False and by_submission[key]:
            check.problems.append(f"rejected submission {key} has a contribution")
    if len(ledger.validated_at) != len(sent):
        check.problems.append(f"validator inbox holds {len(ledger.validated_at)} of {len(sent)} submissions")
    receipts = sum(1 for item in sent if item.receipt_at is not None)
    if ledger.ledger_inbox != receipts:
        check.problems.append(f"ledger inbox holds {ledger.ledger_inbox} receipts, {receipts} were sent")
    return check


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class StageTimes:
    """Seconds from each submission's publish to each stage it reached (lists over submissions)."""

    confirmed: list[float]
    validated: list[float]
    receipt: list[float]
    ledger: list[float]
    audited: list[float]
    receipt_audited: list[float]
    done: list[float]
    """Until everything of the submission was done: itself and its receipt audited, its contribution recorded."""
    first_publish: float
    last_done: float | None
    """None unless every published submission was done."""

    def rate(self) -> float:
        """Submissions per second from the first publish until the last one was completely done."""
        if self.last_done is None or not self.done:
            return float("nan")
        return len(self.done) / (self.last_done - self.first_publish)


def stage_times(run: LoadRun, watcher: AuditLogWatcher, ledger: LedgerView) -> StageTimes:
    stages: dict[str, list[float]] = {name: [] for name in
                                      ("confirmed", "validated", "receipt", "ledger", "audited", "receipt_audited", "done")}  # fmt: skip
    published = [item for item in run.sent if item.published_at is not None]
    done_at: list[float] = []
    for item in published:
        start = item.published_at
        assert start is not None
        row = ledger.contributions.get(str(item.planned.receipt_id))
        at = {
            "confirmed": item.confirmed_at,
            "validated": ledger.validated_at.get(str(item.planned.event_id)),
            "receipt": item.receipt_at,
            "ledger": row["recorded_at"] if row else None,
            "audited": watcher.event_appended_at(item.planned.event_id),
            "receipt_audited": watcher.event_appended_at(item.planned.receipt_id),
        }
        for name, moment in at.items():
            if moment is not None:
                stages[name].append(moment - start)
        ends = [at["audited"], at["receipt_audited"]] + ([at["ledger"]] if item.accepted else [])
        if all(end is not None for end in ends):
            end = max(end for end in ends if end is not None)
            stages["done"].append(end - start)
            done_at.append(end)
    first = min((item.published_at for item in published if item.published_at is not None), default=float("nan"))
    complete = bool(published) and len(done_at) == len(published)
    return StageTimes(**stages, first_publish=first, last_done=max(done_at) if complete else None)


# -- a PostgreSQL ledger of one's own --------------------------------------------------------------



def temporary_postgres_database(prefix: str = "mshale_load") -> AbstractContextManager[str]:
    """A throw-away ledger database for a load run (mshale_fl.testing.postgres)."""
    return _temporary_postgres_database(prefix)
