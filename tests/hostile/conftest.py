"""Fixtures of the hostile-input suite: the `deep` hypothesis profile, a ledger, partners on the real broker.

`pytest tests/hostile` runs a modest budget; `pytest tests/hostile --hypothesis-profile=deep` runs
every property 25 times longer (see budget.py). The profile is registered here, so name it on a run
that has this folder as a path argument: pytest loads this file before it reads the option.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine

from mshale_fl.config import Settings
from mshale_fl.ledger import BrokerAdmin, open_ledger, register_partner
from mshale_fl.ledger.partners import Registration
from mshale_fl.testing.rabbitmq import MANAGEMENT_URL, management_client

from .budget import SLOW_DATA

# Selected with --hypothesis-profile=deep; budget() reads its name and multiplies every property's examples.
hypothesis_settings.register_profile("deep", deadline=None, suppress_health_check=SLOW_DATA, print_blob=True)


# -- partners on the real broker (as tests/tier1 does it; fixtures do not cross folders) ------------


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = open_ledger(ledger_url)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, broker_url: str, ledger_url: str) -> Settings:
    return Settings(home=tmp_path / ".mshale", broker_url=broker_url, ledger_url=ledger_url)


@pytest.fixture
def broker_users() -> Iterator[list[str]]:
    """Broker users are global to the shared RabbitMQ: every one a test creates is deleted afterwards."""
    created: list[str] = []
    yield created
    with management_client() as client:
        for name in created:
            client.delete(f"/api/users/{name}")


Register = Callable[..., Registration]


@pytest.fixture
def register(engine: Engine, vhost: str, broker_users: list[str]) -> Iterator[Register]:
    """Register a partner the way `partners add` does: ledger rows, API key, its own restricted broker user."""
    with BrokerAdmin(MANAGEMENT_URL, "guest", "guest", vhost) as admin:

        def make(*, tier: int = 1) -> Registration:
            partner_id = f"lab-{uuid.uuid4().int % 10**12:012d}"  # no 4-letter word: cannot look like a leak
            broker_users.append(partner_id)
            return register_partner(engine, partner_id, tier=tier, broker=admin)

        yield make
