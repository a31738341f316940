"""A whole federation in one test: ledger (SQLite), ledger worker, server on an AmqpGrid, partner nodes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from mshale_fl.agents.mishale.server_app import (
    AmqpParticipants,
    FederatedTraining,
    GridEvents,
    LedgerBudgets,
    RunOutcome,
    ServeConfig,
)
from mshale_fl.agents.mishale.identities import LedgerIdentities
from mshale_fl.broker import replay
from mshale_fl.schemas.events import EventEnvelope
from sqlalchemy import Engine

from mshale_fl.config import Settings
from mshale_fl.federation import AmqpGrid, LedgerEligibility, PartnerNode
from mshale_fl.federation.loop import LoopThread
from mshale_fl.ledger import AgreementKind, AgreementTerms, open_ledger, register_partner
from mshale_fl.training.model import ModelMetadata, initial_model, save_model

from .corpora import write_corpus

HEARTBEAT = 0.3


def training_agreement() -> AgreementTerms:
    from datetime import date, timedelta

    return AgreementTerms(
        AgreementKind.TRAINING,
        valid_until=date.today() + timedelta(days=365),
        valid_from=date.today() - timedelta(days=1),
    )


def write_base_model(path: Path) -> Path:
    save_model(path, initial_model(seed=0), ModelMetadata(version=0))
    return path


@dataclass
class Federation:
    broker_url: str
    root: Path
    engine: Engine = field(init=False)

    def __post_init__(self) -> None:
        self.server_home = self.root / "server"
        self.ledger_url = f"sqlite:///{self.root / 'ledger.sqlite3'}"
        self.engine = open_ledger(self.ledger_url)
        self.model_path = write_base_model(self.root / "models" / "mshale1_v0.pt")

    def register(self, partner_id: str, *, epsilon: float = 8.0, agreement: bool = True) -> None:
        register_partner(
            self.engine,
            partner_id,
            tier=3 if agreement else 1,
            broker=None,
            agreements=[training_agreement()] if agreement else [],
            epsilon_per_model_version=epsilon,
        )

    def partner_home(self, partner_id: str) -> Path:
        return self.root / "partners" / partner_id

    def corpus(self, partner_id: str, protocols: int = 24) -> Path:
        """The partner's Tier 3 corpus (written once; its content depends only on the partner id)."""
        folder = self.root / "corpora" / partner_id
        if not folder.exists():
            write_corpus(folder, protocols, seed=int.from_bytes(partner_id.encode(), "big") % 2**32)
        return folder

    def node(self, partner_id: str, *, dp_epsilon: float) -> PartnerNode:
        from mshale_fl.agents.partner.client_app import app

        return PartnerNode(
            self.broker_url,
            partner_id,
            app,
            node_config={
                "partner-id": partner_id,
                "corpus": str(self.corpus(partner_id)),
                "dp-epsilon": dp_epsilon,
                "home": str(self.partner_home(partner_id)),
            },
            heartbeat_seconds=HEARTBEAT,
        )

    def config(self, **overrides: Any) -> ServeConfig:
        values: dict[str, Any] = dict(
            model_path=self.model_path,
            rounds=3,
            min_clients=3,
            dp_epsilon=1.0,
            home=self.server_home,
            mu=0.01,
            round_timeout=60,
            plan_timeout=20,
            local_epochs=1,
            batch_size=8,
            lr=0.05,
            retry_seconds=1.0,
        )
        values.update(overrides)
        return ServeConfig(**values)

    @contextmanager
    def grid(self, model_version: int = 1) -> Iterator[AmqpGrid]:
        with AmqpGrid(self.broker_url, eligibility=LedgerEligibility(self.engine, model_version)) as grid:
            yield grid

    def training(self, grid: AmqpGrid, config: ServeConfig, stop: threading.Event | None = None) -> FederatedTraining:
        return FederatedTraining(
            grid,
            config,
            participants=AmqpParticipants(grid),
            budgets=LedgerBudgets(self.engine),
            events=GridEvents(grid),
            identities=LedgerIdentities(self.engine),
            stop=stop,
        )

    def serve(self, **overrides: Any) -> RunOutcome:
        with self.grid() as grid:
            return self.training(grid, self.config(**overrides)).run()

    @contextmanager
    def ledger_worker(self) -> Iterator[None]:
        """The real ledger worker (run_worker + the ledger processor) on a loop thread of this process."""
        from mshale_fl.agents.mishale.ledger_worker import ledger_processor
        from mshale_fl.broker import run_worker

        settings = Settings(home=self.root / "worker", broker_url=self.broker_url, ledger_url=self.ledger_url)
        loop = LoopThread("ledger worker").start()
        stop_holder: dict[str, asyncio.Event] = {}

        async def main() -> None:
            stop_holder["stop"] = asyncio.Event()
            await run_worker(
                "ledger", ledger_processor(settings), settings, stop=stop_holder["stop"], install_signal_handlers=False
            )

        future = loop.submit(main())
        try:
            yield
        finally:
            loop.loop.call_soon_threadsafe(stop_holder["stop"].set)
            future.result(30)
            loop.stop()


async def stream_events(broker_url: str) -> list[EventEnvelope[Any]]:
    connection = await aio_pika.connect(broker_url)
    try:
        return [event async for _offset, event in replay(connection, "first")]
    finally:
        await connection.close()


def events_of(broker_url: str) -> list[EventEnvelope[Any]]:
    return asyncio.run(stream_events(broker_url))
