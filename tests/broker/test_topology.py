"""Topology declaration: complete, idempotent, safe to run concurrently, explicit on mismatch."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from mshale_fl.broker import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    EVENT_LOG_STREAM,
    EVENTS_EXCHANGE,
    ROLES,
    UNROUTABLE_EXCHANGE,
    UNROUTABLE_QUEUE,
    TopologyMismatchError,
    connect,
    declare_topology,
    get_role,
)
from mshale_fl.broker.topology import RPC_QUEUES, Role
from mshale_fl.schemas import EVENT_TYPES
from mshale_fl.testing.rabbitmq import management_client

pytestmark = pytest.mark.rabbitmq


def _api(vhost: str, path: str) -> object:
    with management_client() as client:
        response = client.get(f"/api/{path.format(vhost=quote(vhost, safe=''))}")
        response.raise_for_status()
        return response.json()


def _bindings_to(vhost: str, queue: str) -> set[str]:
    bindings = _api(vhost, f"queues/{{vhost}}/{quote(queue, safe='')}/bindings")
    return {b["routing_key"] for b in bindings if b["source"] == EVENTS_EXCHANGE}  # type: ignore[index,union-attr]


async def test_declaring_twice_gives_the_same_complete_topology(connection, vhost, settings) -> None:
    first = await declare_topology(connection, delivery_limit=settings.delivery_limit)
    second = await declare_topology(connection, delivery_limit=settings.delivery_limit)
    assert first == second

    exchanges = {e["name"]: e for e in _api(vhost, "exchanges/{vhost}")}  # type: ignore[union-attr]
    assert exchanges[EVENTS_EXCHANGE]["type"] == "topic"
    assert exchanges[EVENTS_EXCHANGE]["durable"] is True
    assert exchanges[EVENTS_EXCHANGE]["arguments"] == {"alternate-exchange": UNROUTABLE_EXCHANGE}
    assert exchanges[UNROUTABLE_EXCHANGE]["type"] == "fanout"
    assert exchanges[DEAD_LETTER_EXCHANGE]["type"] == "fanout"

    queues = {q["name"]: q for q in _api(vhost, "queues/{vhost}")}  # type: ignore[union-attr]
    rpc_queues = {rpc.name for rpc in RPC_QUEUES}
    assert set(queues) == {UNROUTABLE_QUEUE, DEAD_LETTER_QUEUE, EVENT_LOG_STREAM, *(r.queue for r in ROLES), *rpc_queues}
    for role in ROLES:
        arguments = queues[role.queue]["arguments"]
        assert queues[role.queue]["durable"] is True
        assert arguments["x-queue-type"] == "quorum"
        assert arguments["x-delivery-limit"] == settings.delivery_limit
        assert arguments["x-dead-letter-exchange"] == DEAD_LETTER_EXCHANGE
        assert arguments["x-dead-letter-strategy"] == "at-least-once"
        assert arguments.get("x-single-active-consumer", False) is (role.name == "audit")
        assert _bindings_to(vhost, role.queue) == {f"*.{t}" for t in role.event_types}
    assert queues[EVENT_LOG_STREAM]["arguments"]["x-queue-type"] == "stream"
    assert "x-max-age" in queues[EVENT_LOG_STREAM]["arguments"]
    assert queues[UNROUTABLE_QUEUE]["arguments"]["x-queue-type"] == "quorum"
    assert queues[DEAD_LETTER_QUEUE]["arguments"]["x-queue-type"] == "quorum"
    # Explicit keys for known types only: never a catch-all that would hide unknown types.
    assert _bindings_to(vhost, EVENT_LOG_STREAM) == {f"*.{t}" for t in EVENT_TYPES}
    assert _bindings_to(vhost, get_role("audit").queue) == {f"*.{t}" for t in EVENT_TYPES}
    # RPC requests use four-word keys, so no event binding (three words) can catch them.
    for rpc in RPC_QUEUES:
        assert _bindings_to(vhost, rpc.name) == {rpc.binding_key}
        assert rpc.binding_key.count(".") == 3
        assert queues[rpc.name]["arguments"]["x-message-ttl"] == rpc.message_ttl_ms


async def test_concurrent_declarations_from_separate_connections_all_succeed(broker_url, settings) -> None:
    connections = [await connect(broker_url, robust=False) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(declare_topology(c, delivery_limit=settings.delivery_limit) for c in connections)
        )
    finally:
        for c in connections:
            await c.close()
    assert len({r.queues for r in results}) == 1


async def test_a_changed_delivery_limit_is_reported_as_a_mismatch_naming_the_queue(connection, topology, settings) -> None:
    with pytest.raises(TopologyMismatchError, match="mshale.validate") as caught:
        await declare_topology(connection, delivery_limit=settings.delivery_limit + 1)
    assert "x-delivery-limit" in str(caught.value)


def test_roles_are_data_and_reject_unknown_event_types() -> None:
    assert [r.name for r in ROLES] == ["validate", "ledger", "audit", "predict"]
    assert get_role("predict").binding_keys == ("*.prediction.requested", "*.model.published")
    assert set(get_role("ledger").event_types) == {
        "submission.accepted", "submission.rejected", "update.masked", "round.started", "round.completed",
        "budget.low", "partner.paused", "model.published",
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown event types"):
        Role("typo", ("spec.submited",))
    with pytest.raises(ValueError, match="known roles: validate, ledger, audit, predict"):
        get_role("nope")
