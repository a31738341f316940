"""AmqpGrid <-> PartnerNode over the real RabbitMQ: round trips, presence, dropouts, forged replies."""

from __future__ import annotations

import time

import aio_pika
import numpy as np
import pytest
from flwr.common.constant import ErrorCode
from flwr.supercore.run import Run

from mshale_fl.federation import AmqpGrid, PartnerNode, node_id_for, wire
from mshale_fl.federation.nodes import HEARTBEAT_MISSES
from mshale_fl.ledger import Decision

from .support import echo_app, running_nodes, train_message

pytestmark = pytest.mark.rabbitmq

HEARTBEAT = 0.3


def _node(broker_url: str, partner_id: str) -> PartnerNode:
    return PartnerNode(broker_url, partner_id, echo_app(partner_id), heartbeat_seconds=HEARTBEAT)


@pytest.fixture
def grid(broker_url: str):
    with AmqpGrid(broker_url) as grid:
        grid.set_run(Run.create_empty(42))
        yield grid


def test_instructions_reach_each_partner_and_replies_come_back(grid: AmqpGrid, broker_url: str) -> None:
    with running_nodes([_node(broker_url, "lab-a"), _node(broker_url, "lab-b")]):
        assert set(grid.wait_for_partners(2, timeout=10)) == {"lab-a", "lab-b"}
        assert sorted(grid.get_node_ids()) == sorted([node_id_for("lab-a"), node_id_for("lab-b")])
        messages = [train_message(node_id_for(p), [1.0, 2.0 + i]) for i, p in enumerate(["lab-a", "lab-b"])]
        replies = grid.send_and_receive(messages, timeout=20)
    assert len(replies) == 2
    by_node = {reply.metadata.src_node_id: reply for reply in replies}
    for index, partner in enumerate(["lab-a", "lab-b"]):
        reply = by_node[node_id_for(partner)]
        assert not reply.has_error()
        (array,) = reply.content["arrays"].to_numpy_ndarrays()
        np.testing.assert_array_equal(array, np.asarray([2.0, 2 * (2.0 + index)], dtype=np.float32))
        assert reply.metadata.reply_to_message_id == messages[index].metadata.message_id
        assert reply.metadata.run_id == 42


def test_a_clientapp_exception_becomes_an_error_reply(grid: AmqpGrid, broker_url: str) -> None:
    from flwr.app import ConfigRecord, Message, RecordDict

    with running_nodes([_node(broker_url, "lab-a")]):
        grid.wait_for_partners(1, timeout=10)
        query = Message(RecordDict({"config": ConfigRecord({})}), node_id_for("lab-a"), "query")
        (reply,) = grid.send_and_receive([query], timeout=20)
    assert reply.has_error()
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert "lab-a refuses queries" in reply.error.reason


def test_instruction_to_an_absent_node_is_answered_at_once_with_an_error(grid: AmqpGrid) -> None:
    started = time.monotonic()
    (reply,) = grid.send_and_receive([train_message(node_id_for("lab-nobody"), [1.0])], timeout=30)
    assert time.monotonic() - started < 5
    assert reply.has_error() and reply.error.code == ErrorCode.NODE_UNAVAILABLE


def test_a_partner_that_vanishes_mid_instruction_is_a_dropout_after_missed_heartbeats(
    grid: AmqpGrid, broker_url: str
) -> None:
    slow = PartnerNode(broker_url, "lab-slow", _slow_app(seconds=60), heartbeat_seconds=HEARTBEAT)
    with running_nodes([_node(broker_url, "lab-a"), slow]) as (_fast, slow_running):
        grid.wait_for_partners(2, timeout=10)
        messages = [train_message(node_id_for(p), [1.0]) for p in ("lab-a", "lab-slow")]
        ids = grid.push_messages(messages)
        time.sleep(1.0)  # the slow partner is training now
        slow_running.crash()
        started = time.monotonic()
        with grid._lock:  # wait for both answers (the dropout is an answer too)
            while not all(i in grid._replies for i in ids):
                assert grid._lock.wait(30)
        elapsed = time.monotonic() - started
        replies = grid.pull_messages(ids)
    assert elapsed < HEARTBEAT * HEARTBEAT_MISSES + 3
    by_node = {reply.metadata.src_node_id: reply for reply in replies}
    assert not by_node[node_id_for("lab-a")].has_error()
    dropped = by_node[node_id_for("lab-slow")]
    assert dropped.has_error() and dropped.error.code == ErrorCode.NODE_UNAVAILABLE
    assert node_id_for("lab-slow") not in grid.get_node_ids()


def test_get_node_ids_lists_only_eligible_partners(broker_url: str) -> None:
    def eligibility(partner_id: str) -> Decision:
        return Decision(partner_id != "lab-b", "budget.paused" if partner_id == "lab-b" else "ok", "")

    with (
        AmqpGrid(broker_url, eligibility=eligibility) as grid,
        running_nodes([_node(broker_url, "lab-a"), _node(broker_url, "lab-b")]),
    ):
        grid.wait_for_partners(1, timeout=10)
        time.sleep(HEARTBEAT * 2)
        assert grid.get_node_ids() == [node_id_for("lab-a")]
        assert {n.partner_id for n in grid.directory.present()} == {"lab-a", "lab-b"}


async def _publish_forged_reply(broker_url: str, routing_key: str, body: bytes) -> None:
    connection = await aio_pika.connect(broker_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(wire.GRID_EXCHANGE)
        await exchange.publish(aio_pika.Message(body, user_id="guest"), routing_key=routing_key)
    finally:
        await connection.close()


def test_a_reply_answering_another_partners_instruction_is_dropped(grid: AmqpGrid, broker_url: str) -> None:
    import asyncio

    from flwr.app import Message, MetricRecord, RecordDict

    message = train_message(node_id_for("lab-a"), [1.0])
    grid.node_ids.add("lab-a")
    # lab-a is "present" (a hello by hand) but runs no node: only the forged reply can answer.
    from datetime import UTC, datetime

    grid.directory.hello(
        wire.NodeHello(
            partner_id="lab-a",
            node_id=node_id_for("lab-a"),
            sent_at=datetime.now(UTC),
            heartbeat_seconds=60,
            flwr_version="x",
        )
    )
    asyncio.run(_declare_partner_queue(broker_url, "lab-a"))
    (message_id,) = grid.push_messages([message])
    forged = Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=message)
    forged.metadata.__dict__["_message_id"] = "forged"
    # Published under lab-b's prefix: the reply does not come from the node the instruction went to.
    asyncio.run(_publish_forged_reply(broker_url, wire.reply_key("lab-b"), wire.encode_message(forged)))
    deadline = time.monotonic() + 5
    while grid.rejected_replies == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert grid.rejected_replies == 1
    assert grid.pull_messages([message_id]) == []


async def _declare_partner_queue(broker_url: str, partner_id: str) -> None:
    connection = await aio_pika.connect(broker_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            wire.partner_queue(partner_id), durable=True, arguments=wire.PARTNER_QUEUE_ARGUMENTS
        )
        await queue.bind(wire.GRID_EXCHANGE, routing_key=wire.instruction_key(partner_id))
    finally:
        await connection.close()


def _slow_app(seconds: float):
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        time.sleep(seconds)
        raise AssertionError("never answers in time")

    return app


def test_grid_and_nodes_recover_when_the_broker_drops_every_connection(
    grid: AmqpGrid, broker_url: str, vhost: str
) -> None:
    import asyncio

    from mshale_fl.testing.broker import close_vhost_connections

    with running_nodes([_node(broker_url, "lab-a"), _node(broker_url, "lab-b")]):
        grid.wait_for_partners(2, timeout=10)
        asyncio.run(close_vhost_connections(vhost))  # what a broker restart does to every client
        time.sleep(HEARTBEAT * HEARTBEAT_MISSES + 1)  # both partners look gone meanwhile, then come back
        assert set(grid.wait_for_partners(2, timeout=30)) == {"lab-a", "lab-b"}
        replies = grid.send_and_receive([train_message(node_id_for(p), [1.0]) for p in ("lab-a", "lab-b")], timeout=30)
    assert len(replies) == 2 and not any(reply.has_error() for reply in replies)
