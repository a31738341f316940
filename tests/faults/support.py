"""What the fault scenarios share: crashing worker replicas, partners that resubmit, broker faults, rest.

- `FaultWorkers`: real `mshale-fl worker ROLE` processes (the load generator's `MishaleWorkers`),
  each role's replica started with the next crash point of its plan (`MSHALE_TEST_CRASH_AT`,
  mshale_fl/crashpoints.py) and restarted by `supervise()` each time it dies there, as systemd would.
  A replica that exits any other way fails the scenario.
- `submit_all`: the load generator's simulated partners, resubmitting what got no receipt (as a
  partner re-runs `submit`; event ids are content-derived, so a resubmission is the same event).
- `AuditStore`: the audit log in a local directory or in an S3 bucket (moto_server).
- Broker faults: `close_connections`, `broker_outage` (stop_app/start_app), `memory_alarm`.
- `wait_at_rest`: until the role queues are empty and nothing is written any more.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from aiormq.exceptions import AMQPError
from sqlalchemy import Engine, func, select

from mshale_fl.audit.log import TransparencyLog
from mshale_fl.audit.stores.base import ObjectStore
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.stores.s3 import S3Store
from mshale_fl.broker import BrokerError
from mshale_fl.crashpoints import CRASH_AT_ENV
from mshale_fl.demo.processes import WorkerProcess
from mshale_fl.store.schema import inbox
from mshale_fl.testing.load import (
    WORKER_ROLES,
    LoadGenerator,
    MishaleWorkers,
    PlannedSubmission,
    SimulatedPartner,
    WorkersFailed,
)
from mshale_fl.testing.rabbitmq import management_client

CRASH_LINE = re.compile(r"mshale-fl crash point (\S+) \(hit (\d+)\): SIGKILL")
S3_REGION = "eu-west-1"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


# -- the audit store ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditStore:
    """Where the workers' audit log lives: a local directory (`MishaleWorkers`' default) or S3."""

    kind: str = "local"
    s3_endpoint: str | None = None
    bucket: str = field(default_factory=lambda: f"mshale-faults-{uuid.uuid4().hex[:12]}")

    @classmethod
    def s3(cls, endpoint: str) -> AuditStore:
        return cls("s3", endpoint)

    def worker_env(self) -> dict[str, str]:
        if self.kind == "local":
            return {}
        assert self.s3_endpoint is not None
        return {
            "MSHALE_AUDIT_STORE": "s3",
            "MSHALE_AUDIT_S3_BUCKET": self.bucket,
            "MSHALE_AUDIT_S3_REGION": S3_REGION,
            "MSHALE_AUDIT_S3_ENDPOINT_URL": self.s3_endpoint,
            "MSHALE_AUDIT_RETENTION_DAYS": "1",
            **S3_CREDENTIALS,
        }

    def open(self, workers: MishaleWorkers) -> ObjectStore:
        if self.kind == "local":
            return LocalStore(workers.audit_log_dir)
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        return S3Store(self.bucket, region=S3_REGION, prefix="log/", retention_days=1, client=client)


# -- workers that crash where told, and come back ---------------------------------------------------


@dataclass(frozen=True)
class Crash:
    role: str
    point: str
    hit: int
    at: float


class FaultWorkers(MishaleWorkers):
    """One replica per role; replica lives follow `crash_plans[role]` (one crash point per life).

    `supervise()` (run it as a task) restarts a replica that died at its crash point with the next
    point of the plan, or with none when the plan is used up; `crashes` records each death.
    """

    def __init__(
        self,
        broker_url: str,
        ledger_url: str,
        state_dir: Path,
        *,
        roles: Sequence[str] = WORKER_ROLES,
        crash_plans: Mapping[str, Sequence[str]] | None = None,
        store: AuditStore | None = None,
    ) -> None:
        self.store = store or AuditStore()
        super().__init__(
            broker_url, ledger_url, state_dir, replicas={role: 1 for role in roles}, env=self.store.worker_env()
        )
        self.plans = {role: list(plan) for role, plan in (crash_plans or {}).items()}
        self.crashes: list[Crash] = []
        self.lives: dict[str, int] = {}

    def start_replica(self, role: str, index: int) -> WorkerProcess:
        life = self.lives[role] = self.lives.get(role, 0) + 1
        env = {"MSHALE_HOME": str(self.state_dir / f"{role}-{index}")}
        plan = self.plans.get(role)
        if plan:
            env[CRASH_AT_ENV] = plan.pop(0)
        child = self.group.start(f"{role}-{index}-life{life}", "worker", role, env=env)
        self.processes.setdefault(role, []).append(child)
        return child

    def reap(self) -> list[Crash]:
        """Restart every replica that died at its crash point; raise `WorkersFailed` for any other exit."""
        reaped = []
        for role, children in self.processes.items():
            for child in list(children):
                code = child.process.poll()
                if code is None:
                    continue
                found = CRASH_LINE.search(child.tail(5))
                if code != -signal.SIGKILL or found is None:
                    raise WorkersFailed(f"{child.name} exited with {code}, not at a crash point:\n{child.tail(30)}")
                crash = Crash(role, found.group(1), int(found.group(2)), time.time())
                children.remove(child)
                self.group.children.remove(child)
                child.log_file.close()
                self.crashes.append(crash)
                reaped.append(crash)
                self.start_replica(role, 0)
        return reaped

    async def supervise(self, interval: float = 0.1) -> None:
        while True:
            self.reap()
            await asyncio.sleep(interval)

    @property
    def planned_crashes_left(self) -> dict[str, int]:
        return {role: len(plan) for role, plan in self.plans.items() if plan}


@asynccontextmanager
async def supervised(workers: FaultWorkers) -> AsyncIterator[FaultWorkers]:
    """Start the workers and their supervisor; stop both afterwards (the supervisor first)."""
    await workers.start()
    task = asyncio.create_task(workers.supervise())
    try:
        yield workers
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except WorkersFailed:
            raise
        finally:
            workers.stop()


async def wait_for_crashes(workers: FaultWorkers, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(workers.crashes) < count:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(workers.crashes)} of {count} planned crashes happened within {timeout:.0f} s: {workers.crashes}; "
                f"left in the plans: {workers.planned_crashes_left}"
            )
        await asyncio.sleep(0.1)


# -- partners that resubmit ------------------------------------------------------------------------


class _Generator(LoadGenerator):
    """Stops waiting for receipts once a partner's connection is lost: its exclusive reply queue went
    with it, so the receipts it waits for can no longer arrive (the partner submits again instead)."""

    async def _listen_for_receipts(self, connection: Any, partner_id: str) -> None:
        await super()._listen_for_receipts(connection, partner_id)
        connection.close_callbacks.add(lambda *_: self._receipts_done.set())


@dataclass
class Submitted:
    """Every submission's fate over all attempts."""

    planned: dict[uuid.UUID, PlannedSubmission]
    verdicts: dict[uuid.UUID, bool] = field(default_factory=dict)
    """Submission id -> accepted (True) / rejected (False), from the receipt the partner received."""
    attempts: int = 0
    publish_errors: int = 0

    @property
    def unanswered(self) -> list[uuid.UUID]:
        return [event_id for event_id in self.planned if event_id not in self.verdicts]

    @property
    def wrong_verdicts(self) -> list[uuid.UUID]:
        return [event_id for event_id, accepted in self.verdicts.items() if accepted != self.planned[event_id].expect_accepted]


async def submit_all(
    broker_url: str,
    partners: Sequence[SimulatedPartner],
    workload: Mapping[str, Sequence[PlannedSubmission]],
    *,
    rate: float | None = None,
    window: int = 8,
    first_receipt_timeout: float = 30.0,
    receipt_timeout: float = 60.0,
    attempts: int = 6,
    retry_delay: float = 1.0,
    broker_down_for: float = 120.0,
    progress: Callable[[int, int], None] | None = None,
) -> Submitted:
    """Publish the workload; then, like a partner re-running `submit`, publish again whatever got no
    receipt (a failed publish, a receipt lost with a closed connection) until everything is answered.

    An attempt that cannot even connect (the broker is down) is not counted; after `broker_down_for`
    seconds of that, the partners give up.
    """
    submitted = Submitted({item.event_id: item for items in workload.values() for item in items})
    pending = {partner: list(items) for partner, items in workload.items()}
    down_since: float | None = None
    while any(pending.values()) and submitted.attempts < attempts:
        submitted.attempts += 1
        first = submitted.attempts == 1
        generator = _Generator(
            broker_url,
            [partner for partner in partners if pending.get(partner.partner_id)],
            pending,
            rate=rate if first else None,
            window=window,
            receipt_timeout=first_receipt_timeout if first else receipt_timeout,
            progress=progress if first else None,
        )
        try:
            run = await generator.run()
        except (BrokerError, AMQPError, ConnectionError, OSError):  # the broker is down (a scenario's doing): again shortly
            submitted.attempts -= 1
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > broker_down_for:
                raise
            await asyncio.sleep(retry_delay)
            continue
        down_since = None
        for item in run.sent:
            if item.error:
                submitted.publish_errors += 1
            if item.receipt_at is not None and item.accepted is not None:
                submitted.verdicts.setdefault(item.planned.event_id, item.accepted)
        pending = {
            partner: [item for item in items if item.event_id not in submitted.verdicts] for partner, items in pending.items()
        }
        if any(pending.values()):
            await asyncio.sleep(retry_delay)
    return submitted


# -- broker faults ---------------------------------------------------------------------------------


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


async def close_connections(vhost: str, reason: str = "fault suite") -> None:
    """What an operator (or a network partition) does to one vhost: drop every connection in it."""
    await asyncio.to_thread(rabbitmqctl, "close_all_connections", "--vhost", vhost, reason)


def wait_for_broker(timeout: float = 60.0) -> None:
    """Until the management API says AMQP listens and every vhost is running again."""
    deadline = time.monotonic() + timeout
    checks = ("/api/health/checks/port-listener/5672", "/api/health/checks/virtual-hosts")
    while True:
        try:
            with management_client() as client:
                if all(client.get(check).status_code == 200 for check in checks):
                    return
        except Exception:  # the management plugin is starting too
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"RabbitMQ did not come back within {timeout:.0f} s")
        time.sleep(0.25)


@contextmanager
def broker_outage() -> Iterator[None]:
    """The whole broker down (`rabbitmqctl stop_app`) for the duration of the block; always restarted.

    Global: every vhost of the shared broker goes down with it. Keep the block to seconds.
    """
    rabbitmqctl("stop_app")
    try:
        yield
    finally:
        rabbitmqctl("start_app")
        wait_for_broker()


def memory_watermark() -> tuple[str, ...]:
    """The current vm_memory_high_watermark, as the arguments that set it back."""
    text = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").strip()
    absolute = re.fullmatch(r"\{absolute,\s*(\d+)\}", text)
    if absolute:
        return ("absolute", absolute.group(1))
    float(text)  # a relative fraction such as 0.4; anything else is a surprise to stop on
    return (text,)


@contextmanager
def memory_alarm() -> Iterator[None]:
    """A memory alarm on the whole broker for the duration of the block: publishers are blocked.

    Global: every publisher of the shared broker blocks meanwhile. The previous watermark is put
    back in any case.
    """
    previous = memory_watermark()
    rabbitmqctl("set_vm_memory_high_watermark", "0.0001")
    try:
        yield
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", *previous)


def memory_alarm_active() -> bool:
    with management_client() as client:
        nodes = client.get("/api/nodes").json()
    return any(node.get("mem_alarm") for node in nodes)


# -- at rest ---------------------------------------------------------------------------------------


async def wait_at_rest(
    broker_url: str,
    store: ObjectStore,
    engine: Engine,
    *,
    queues: Sequence[str] = tuple(f"mshale.{role}" for role in WORKER_ROLES),
    quiet: float = 2.0,
    timeout: float = 120.0,
    raise_if_failed: Callable[[], None] | None = None,
) -> None:
    """Until the role queues have nothing ready and neither the log nor the inboxes changed for `quiet` s."""
    deadline = time.monotonic() + timeout
    connection = await aio_pika.connect(broker_url)
    try:
        channel = await connection.channel()
        last: tuple[Any, ...] | None = None
        since = time.monotonic()
        while True:
            if raise_if_failed is not None:
                raise_if_failed()
            ready = 0
            for name in queues:
                declared = await channel.declare_queue(name, passive=True)
                ready += int(declared.declaration_result.message_count or 0)
            log = TransparencyLog(store)
            sizes = log.checkpoint_sizes()
            starts = log.bundle_starts()
            entries = starts[-1] + len(log.read_bundle(starts[-1])) if starts else 0
            with engine.connect() as db:
                applied = db.execute(select(func.count()).select_from(inbox)).scalar_one()
            state = (ready, entries, sizes[-1] if sizes else 0, applied)
            now = time.monotonic()
            if state != last or ready or state[1] != state[2]:
                last, since = state, now
            elif now - since >= quiet:
                return
            if now > deadline:
                raise AssertionError(f"not at rest after {timeout:.0f} s: ready {ready}, log {entries}, signed {state[2]}, inbox {applied}")
            await asyncio.sleep(0.25)
    finally:
        await connection.close()
