"""A small Mishale for the access tests: ledger, real broker (throw-away vhost), audit log, predict workers.

Workers run in the test's event loop (`serve_predict`, `serve_audit`), partners connect as their own
restricted broker users through `open_access_client`, exactly as `mshale-fl predict` does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiormq
from sqlalchemy import Engine

from mshale_fl.access.downloads import DownloadService
from mshale_fl.access.model_files import ModelFiles, model_file_name
from mshale_fl.access.policy import DEFAULT_POLICY, AccessPolicy
from mshale_fl.access.proofs import PublicationProofs
from mshale_fl.access.registry import find_model_version
from mshale_fl.agents.mishale.audit_worker import AuditProcessor, serve_audit
from mshale_fl.agents.mishale.predict_worker import PredictProcessor, serve_predict
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.log import TransparencyLog
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.records import AuditRecord, parse_record
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.broker import Publisher, connect, declare_topology
from mshale_fl.config import Settings
from mshale_fl.ledger import BrokerAdmin, register_partner
from mshale_fl.ledger import budgets as ledger_budgets
from mshale_fl.ledger.accounting import Mechanism
from mshale_fl.ledger.agreements import AgreementKind, AgreementTerms
from mshale_fl.ledger.contributions import record_contribution
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.payloads import ModelPublished, PredictionRequested
from mshale_fl.testing.broker import eventually
from mshale_fl.testing.samples import sample_spec, sample_vector

ORIGIN = "mshale.test/access"
MECHANISM = Mechanism(noise_multiplier=1.1, sample_rate=0.01, steps=100)


def day(offset: int) -> Any:
    return (datetime.now(UTC) + timedelta(days=offset)).date()


def agreements_for(tier: int) -> list[AgreementTerms]:
    dpa = AgreementTerms(AgreementKind.DPA, valid_until=day(365), valid_from=day(-1), attorney_reviewed=True)
    training = AgreementTerms(AgreementKind.TRAINING, valid_until=day(365), valid_from=day(-1))
    return {1: [], 2: [dpa], 3: [dpa, training]}[tier]


@dataclass(frozen=True)
class Lab:
    id: str
    tier: int
    api_key: str


def spec_request(lab: Lab, count: int = 1, seed: int = 0) -> EventEnvelope[Any]:
    payload = PredictionRequested(specs=[sample_spec(seed + n) for n in range(count)])
    return new_event("prediction.requested", payload, partner_id=lab.id)


def vector_request(lab: Lab, count: int = 1, seed: int = 0) -> EventEnvelope[Any]:
    payload = PredictionRequested(vectors=[sample_vector(seed + n) for n in range(count)])
    return new_event("prediction.requested", payload, partner_id=lab.id)


class AccessWorld:
    def __init__(
        self, root: Path, *, vhost: str, broker_url: str, ledger_url: str, admin: BrokerAdmin, engine: Engine,
        broker_users: list[str],
    ) -> None:  # fmt: skip
        self.root = root
        self.vhost = vhost
        self.broker_url = broker_url
        self.admin = admin
        self.engine = engine
        self.broker_users = broker_users
        self.home = root / "home"
        self.models_dir = self.home / "models"
        self.log_dir = root / "audit-log"
        self.signer = NoteSigner.generate(ORIGIN)
        self.settings = Settings(home=self.home, broker_url=broker_url, ledger_url=ledger_url, prefetch=64)
        self.processors: list[PredictProcessor] = []

    # -- the ledger -------------------------------------------------------------------------------

    def register(self, tier: int, *, agreements: Sequence[AgreementTerms] | None = None) -> Lab:
        partner_id = f"lab-{uuid.uuid4().int % 10**12:012d}"
        self.broker_users.append(partner_id)
        registration = register_partner(
            self.engine, partner_id, tier=tier, agreements=agreements_for(tier) if agreements is None else agreements,
            broker=self.admin,
        )  # fmt: skip
        return Lab(partner_id, tier, registration.key.api_key.get_secret_value())

    def contribute(self, lab: Lab, kind: str | None = None, *, at: datetime | None = None) -> None:
        kind = kind or {1: "spec", 2: "vectors", 3: "update"}[lab.tier]
        with self.engine.begin() as connection:
            record_contribution(
                connection, event_id=uuid.uuid4(), partner_id=lab.id, kind=kind, items=1,
                occurred_at=at or datetime.now(UTC) - timedelta(hours=1), model_version=1 if kind == "update" else None,
            )  # fmt: skip

    def train(self, version: int, trainers: Sequence[Lab], *, rounds: int = 2, commit: bool = True) -> None:
        """Reserve (and commit) DP spends of `rounds` rounds of `version` for each trainer, as a run would."""
        with self.engine.begin() as connection:
            for number in range(1, rounds + 1):
                for lab in trainers:
                    round_id = f"run-v{version}/{number}"
                    ledger_budgets.reserve(
                        connection, partner_id=lab.id, model_version=version, round_id=round_id, mechanism=MECHANISM
                    )
                    if commit:
                        ledger_budgets.commit(connection, partner_id=lab.id, round_id=round_id)

    def commit_all(self, version: int, trainers: Sequence[Lab], *, rounds: int = 2) -> None:
        with self.engine.begin() as connection:
            for number in range(1, rounds + 1):
                for lab in trainers:
                    ledger_budgets.commit(connection, partner_id=lab.id, round_id=f"run-v{version}/{number}")

    def save_model(self, version: int, *, parent: int | None = None, seed: int | None = None) -> str:
        from mshale_fl.training.model import ModelMetadata, initial_model, save_model

        model = initial_model(version if seed is None else seed)
        return save_model(
            self.models_dir / model_file_name(version), model, ModelMetadata(version=version, parent=parent, rounds=2)
        )

    def published_event(self, version: int, sha256: str, *, parent: int | None = None) -> EventEnvelope[Any]:
        payload = ModelPublished(
            model_version=version, parent_version=parent, sha256=sha256, rounds=2, metrics={"val_mae": 0.125}
        )
        return new_event("model.published", payload, partner_id="mishale")

    async def publish(self, *events: EventEnvelope[Any]) -> None:
        connection = await connect(self.broker_url, name="test mishale", robust=False)
        try:
            await declare_topology(connection, delivery_limit=5)
            publisher = await Publisher.open(connection, window=64)
            await publisher.publish_many(list(events))
            await publisher.close()
        finally:
            await connection.close()

    async def announce(
        self, version: int, sha256: str, *, parent: int | None = None, wait: bool = True
    ) -> EventEnvelope[Any]:
        """Publish `model.published` as the training server does and wait until the registry has it."""
        event = self.published_event(version, sha256, parent=parent)
        await self.publish(event)
        if wait:
            await eventually(lambda: self._registered(version), timeout=30)
            await eventually(lambda: event.event_id in self.logged_event_ids(), timeout=30)
        return event

    def _registered(self, version: int) -> bool:
        with self.engine.connect() as connection:
            return find_model_version(connection, version) is not None

    # -- the audit log ------------------------------------------------------------------------------

    def logged_event_ids(self) -> set[uuid.UUID]:
        log = TransparencyLog(LocalStore(self.log_dir))
        return {parse_record(data).event_uuid for _, records in log.iter_bundles() for data in records}

    def logged_records(self) -> list[AuditRecord]:
        log = TransparencyLog(LocalStore(self.log_dir))
        return [parse_record(data) for _, records in log.iter_bundles() for data in records]

    def logged_types(self) -> dict[uuid.UUID, str]:
        log = TransparencyLog(LocalStore(self.log_dir))
        return {
            record.event_uuid: record.event_type
            for record in (parse_record(data) for _, records in log.iter_bundles() for data in records)
        }

    # -- workers --------------------------------------------------------------------------------------

    @asynccontextmanager
    async def running(
        self, *, policy: AccessPolicy = DEFAULT_POLICY, predict_workers: int = 1, max_request_age: float = 120.0,
        settle_wait_s: float = 30.0,
    ) -> AsyncIterator[list[PredictProcessor]]:  # fmt: skip
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        audit = AuditProcessor(
            lambda: AuditAppender(LocalStore(self.log_dir), self.signer, index_path=self.root / "index.sqlite3")
        )
        processors = []
        try:
            tasks.append(
                asyncio.create_task(
                    serve_audit(audit, self.settings, stop=stop, install_signal_handlers=False, shutdown_grace=2)
                )
            )
            for _ in range(predict_workers):
                models = ModelFiles(self.models_dir)
                processor = PredictProcessor(
                    self.engine, models, policy=policy, max_request_age=timedelta(seconds=max_request_age),
                    settle_wait_s=settle_wait_s,
                )  # fmt: skip
                proofs = PublicationProofs(lambda: LocalStore(self.log_dir), self.signer.verifier)
                downloads = DownloadService(self.engine, models, proofs, policy=policy, chunk_bytes=16 * 1024)
                processors.append(processor)
                tasks.append(
                    asyncio.create_task(
                        serve_predict(
                            processor,
                            downloads,
                            self.settings,
                            stop=stop,
                            install_signal_handlers=False,
                            shutdown_grace=2,
                        )
                    )
                )
            watcher = await connect(self.broker_url, name="test watcher", robust=False)
            try:
                for queue, count in (
                    ("mshale.audit", 1),
                    ("mshale.predict", predict_workers),
                    ("mshale.rpc.model", predict_workers),
                ):
                    await eventually(
                        lambda queue=queue, count=count: _consumers(watcher, queue, count, tasks), timeout=30
                    )
            finally:
                await watcher.close()
            self.processors = processors
            yield processors
        finally:
            stop.set()
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=60)
            for processor in processors:
                processor.close()
            audit.close()
            failures = [result for result in results if isinstance(result, BaseException)]
            if failures:
                raise failures[0]


async def _consumers(connection: Any, queue: str, count: int, tasks: list[asyncio.Task[Any]]) -> bool:
    for task in tasks:
        if task.done():
            task.result()  # a worker that died at start: raise its error now
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.consumer_count or 0) >= count
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()


WorldFactory = Callable[..., AccessWorld]
