"""The registry fed by `model.published` on the bus, and several predict workers sharing one ledger."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import MappingProxyType

import pytest

from mshale_fl.access.client import open_access_client
from mshale_fl.access.policy import AccessPolicy, usage_today
from mshale_fl.access.registry import find_model_version, publication_of
from mshale_fl.broker import DEAD_LETTER_QUEUE, connect
from mshale_fl.broker.consumer import REASON_HEADER
from mshale_fl.ledger.budgets import budget_status
from mshale_fl.testing.broker import eventually, take

from .world import AccessWorld, spec_request

pytestmark = pytest.mark.rabbitmq


async def test_a_published_model_is_registered_once_the_ledger_has_settled_its_spends(world: AccessWorld) -> None:
    alpha, beta = world.register(3), world.register(3)
    sha = world.save_model(1, parent=0)
    world.train(1, [alpha, beta], commit=False)  # the ledger worker has not seen round.completed yet
    async with world.running():
        event = await world.announce(1, sha, parent=0, wait=False)
        await asyncio.sleep(1.5)
        with world.engine.connect() as connection:
            assert find_model_version(connection, 1) is None  # held, not registered without the last spends
        world.commit_all(1, [alpha, beta])
        await eventually(lambda: world._registered(1), timeout=20)
        # The same version announced again with other weights is refused, and kept as it was.
        conflicting = world.published_event(1, "f" * 64, parent=0)
        await world.publish(conflicting)
        mishale = await connect(world.broker_url, name="test dead letters", robust=False)
        try:
            dead = await take(mishale, DEAD_LETTER_QUEUE, 1, timeout=20)
        finally:
            await mishale.close()

    with world.engine.connect() as connection:
        model = find_model_version(connection, 1)
        assert model is not None and model.sha256 == sha and model.parent_version == 0 and model.rounds == 2
        assert model.metrics == {"val_mae": 0.125}
        assert model.published_at == event.occurred_at
        for lab in (alpha, beta):
            committed = budget_status(connection, lab.id, 1).epsilon_committed
            assert model.contributors[lab.id].epsilon == pytest.approx(committed) and committed > 0
        assert set(model.contributors) == {alpha.id, beta.id}
        assert publication_of(connection, 1) == event
    assert dead[0].headers[REASON_HEADER] == "registry.conflicting_version"
    assert dead[0].headers["x-mshale-queue"] == "mshale.predict"


@pytest.mark.postgres
async def test_two_predict_workers_share_one_quota(postgres_world: AccessWorld) -> None:
    world = postgres_world
    policy = AccessPolicy(daily_items=MappingProxyType({1: 5, 2: 50, 3: 50}))
    lab = world.register(1)
    world.contribute(lab)
    sha = world.save_model(1)
    async with world.running(policy=policy, predict_workers=2) as processors:
        await world.announce(1, sha)
        async with open_access_client(lab.api_key, world.broker_url) as client:
            outcomes = await client.predict([spec_request(lab, seed=n) for n in range(12)], timeout=60, window=12)
    kinds = [outcome.answer.type for outcome in outcomes]
    assert kinds.count("prediction.ready") == 5 and kinds.count("access.denied") == 7
    assert all(
        [reason.code for reason in outcome.answer.payload.reasons] == ["quota.exhausted"]
        for outcome in outcomes
        if outcome.answer.type == "access.denied"
    )
    assert all(processor.transactions > 0 for processor in processors)  # both took deliveries
    with world.engine.connect() as connection:
        assert usage_today(connection, lab.id, datetime.now(UTC).date()) == 5


async def test_a_model_published_by_a_partner_is_dead_lettered_and_registers_nothing(world: AccessWorld) -> None:
    from mshale_fl.broker import Publisher
    from mshale_fl.cli.train_cmd import partner_broker_url
    from mshale_fl.schemas.events import new_event
    from mshale_fl.schemas.payloads import ModelPublished

    lab = world.register(3)
    sha = world.save_model(1, parent=0)
    # A partner may publish under its own prefix, so `<lab>.model.published` reaches the predict queue.
    forged = new_event(
        "model.published",
        ModelPublished(model_version=1, parent_version=0, sha256=sha, rounds=2, metrics={}),
        partner_id=lab.id,
    )
    async with world.running():
        partner = await connect(partner_broker_url(world.broker_url, lab.id, lab.api_key, None), name="forger", robust=False)
        try:
            publisher = await Publisher.open(partner, window=8, user_id=lab.id)
            await publisher.publish_many([forged])
            await publisher.close()
        finally:
            await partner.close()
        mishale = await connect(world.broker_url, name="test dead letters", robust=False)
        try:
            dead = await take(mishale, DEAD_LETTER_QUEUE, 1, timeout=20)
        finally:
            await mishale.close()
    assert dead[0].headers[REASON_HEADER] == "registry.forged_sender"
    with world.engine.connect() as connection:
        assert find_model_version(connection, 1) is None
