"""`AmqpGrid`: Flower's `Grid` over RabbitMQ, for a ServerApp running in-process.

A strategy sees an ordinary `flwr.serverapp.Grid`. Underneath:

* `push_messages` publishes each instruction to `mshale.grid` with routing key
  `<partner>.grid.instruction`, confirmed and mandatory (wire.py). An instruction for a node that
  is not present, or whose queue does not exist, is answered at once by a synthesised error reply
  (`NODE_UNAVAILABLE`), so nobody waits for a reply that cannot come.
* Replies are pushed to us by the broker (a consumer on `mshale.grid.replies`); nothing polls.
  `send_and_receive` sleeps on a condition variable until every instruction is answered, the
  timeout passes, or the partner it waits on goes away (bye, or missed heartbeats: nodes.py),
  which also counts as an answer (an error reply), so a partner killed mid-round costs the round
  a few heartbeats, not the whole round timeout.
* A reply is accepted only if it answers an instruction we are waiting for, comes from that
  instruction's node, was published under that partner's routing-key prefix, and its `user_id`
  (checked by RabbitMQ against the login) is that partner, or one of `trusted_users` (the
  server's own broker user, for single-operator setups and tests where everything runs as one
  user). Anything else is logged and dropped.
* `get_node_ids` lists partners that said hello recently and that `eligibility` admits
  (the ledger's `may_train`); `CohortGrid` narrows that to the cohort a round reserved budget for.

`set_run` also sets Flower's process-wide `TaskIdentity` (run id, node id 1 = the SuperLink's
own, task id 1), which `Message(...)` reads when a strategy builds an instruction: Flower's own
runtime does the same before it calls a ServerApp.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from flwr.app import Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from mshale_fl.broker import Publisher, UnroutableError, broker_user, connect, declare_topology
from mshale_fl.broker.errors import BrokerError
from mshale_fl.federation import wire
from mshale_fl.federation.loop import LoopThread
from mshale_fl.federation.nodes import Eligibility, NodeDirectory, NodeIds, always_eligible, node_id_for
from mshale_fl.logging import get_logger
from mshale_fl.schemas.events import EventEnvelope

log = get_logger(__name__)

EXPIRY_TICK_SECONDS = 0.25
"""How often the grid checks for partners whose heartbeats stopped (a local timer, not a broker poll)."""


class AmqpGrid(Grid):
    """A Flower Grid whose nodes are partners connected to RabbitMQ; `start()` before use, `close()` after."""

    def __init__(
        self,
        broker_url: str,
        *,
        eligibility: Eligibility = always_eligible,
        trusted_users: Iterable[str] | None = None,
        delivery_limit: int = 5,
        publish_window: int = 64,
        name: str = "mshale-fl serve",
    ) -> None:
        self.broker_url = broker_url
        self.eligibility = eligibility
        self.own_user = broker_user(broker_url)
        self.trusted_users = frozenset(trusted_users if trusted_users is not None else (self.own_user,))
        self.delivery_limit = delivery_limit
        self.publish_window = publish_window
        self.name = name
        self.directory = NodeDirectory()
        self.directory.on_gone = self._on_partner_gone
        self.node_ids = NodeIds()
        self._run: Run | None = None
        self._lock = threading.Condition()
        self._pending: dict[str, Message] = {}
        """Instructions sent and not yet answered, by message id."""
        self._replies: dict[str, Message] = {}
        """Answers not yet pulled, by the id of the instruction they answer."""
        self._loop = LoopThread(f"{name} broker")
        self._connection: AbstractConnection | None = None
        self._publisher: Publisher | None = None
        self._channel: AbstractChannel | None = None
        self._queues: list[AbstractQueue] = []
        self._expiry: asyncio.Task[None] | None = None
        self._ineligible_logged: dict[str, str] = {}
        self._interrupted = False
        self.rejected_replies = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> AmqpGrid:
        """Connect, declare the topology (events and grid), start consuming presence and replies."""
        self._loop.start()
        try:
            self._loop.run(self._start())
        except BaseException:
            self._loop.stop()
            raise
        return self

    async def _start(self) -> None:
        self._connection = await connect(self.broker_url, name=self.name)
        await declare_topology(self._connection, delivery_limit=self.delivery_limit)
        await wire.declare_server_queues(self._connection)
        self._publisher = await Publisher.open(self._connection, window=self.publish_window)
        # Keep strong references: a robust connection restores only channels and queues still alive.
        self._channel = await self._connection.channel(publisher_confirms=False)
        await self._channel.set_qos(prefetch_count=256)
        presence = await self._channel.get_queue(wire.PRESENCE_QUEUE)
        replies = await self._channel.get_queue(wire.REPLY_QUEUE)
        await presence.consume(self._on_presence, no_ack=False)
        await replies.consume(self._on_reply, no_ack=False)
        self._queues = [presence, replies]
        self._expiry = asyncio.get_running_loop().create_task(self._expire_forever())
        log.info("grid.started", exchange=wire.GRID_EXCHANGE, user=self.own_user)

    def close(self) -> None:
        if not self._loop.alive:
            return
        try:
            self._loop.run(self._close(), timeout=15)
        except Exception as error:  # closing must not hide the error that made us close
            log.warning("grid.close_failed", error=repr(error))
        self._loop.stop()

    async def _close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._publisher is not None:
            try:
                await asyncio.wait_for(self._publisher.wait_idle(), timeout=10)
            except TimeoutError:
                log.warning("grid.unconfirmed_at_close")
        if self._connection is not None:
            await self._connection.close()

    def __enter__(self) -> AmqpGrid:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- Grid API ----------------------------------------------------------------------------------

    def set_run(self, run: Run) -> None:
        if not isinstance(run, Run):
            raise TypeError(f"`run` must be an instance of Run, got {type(run).__name__}")
        self._run = run
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run.run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    @property
    def run(self) -> Run:
        if self._run is None:
            raise RuntimeError("set_run() was not called on this grid")
        return Run(**vars(self._run))

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        """Nodes of partners present now and admitted by `eligibility`, in partner id order."""
        return [node_id_for(partner_id) for partner_id in self.eligible_partners()]

    def get_nodes(self) -> list[NodeInfo]:
        return [NodeInfo(node_id=node_id) for node_id in self.get_node_ids()]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        messages = list(messages)
        for message in messages:
            self._check_instruction(message)
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        with self._lock:
            for message in messages:
                self._pending[message.metadata.message_id] = message
        for message, outcome in zip(messages, self._loop.run(self._publish_all(messages)), strict=True):
            if outcome is not None:
                self._answer_with_error(message, ErrorCode.NODE_UNAVAILABLE, outcome)
        return [message.metadata.message_id for message in messages]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        with self._lock:
            return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        ids = self.push_messages(messages)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not all(i in self._replies for i in ids) and not self._interrupted:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._lock.wait(remaining)
            unanswered = [i for i in ids if i not in self._replies]
            for message_id in unanswered:
                # A reply arriving later answers nobody: it is logged and dropped.
                self._pending.pop(message_id, None)
        if unanswered:
            log.warning("grid.replies_timed_out", unanswered=len(unanswered), timeout=timeout)
        return self.pull_messages(ids)

    # -- beyond the Grid API ----------------------------------------------------------------------

    def partner_of(self, node_id: int) -> str | None:
        return self.node_ids.partner_of(node_id)

    def interrupt(self) -> None:
        """Make every current and future `send_and_receive` / `wait_for_partners` return at once (shutdown)."""
        with self._lock:
            self._interrupted = True
            self._lock.notify_all()
        self.directory.wake()

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def eligible_partners(self) -> list[str]:
        eligible = []
        for node in self.directory.present():
            decision = self.eligibility(node.partner_id)
            if decision.allowed:
                self._ineligible_logged.pop(node.partner_id, None)
                eligible.append(node.partner_id)
            elif self._ineligible_logged.get(node.partner_id) != decision.code:
                self._ineligible_logged[node.partner_id] = decision.code
                log.info("grid.partner_not_eligible", partner_id=node.partner_id, reason=decision.code)
        return eligible

    def wait_for_partners(
        self, count: int, *, timeout: float | None = None, stop: threading.Event | None = None
    ) -> list[str]:
        """Block until at least `count` partners are eligible (returns them), or timeout / `stop`.

        Wakes on every hello, bye and expiry, so it reacts as soon as the partner set changes; the
        ledger side (an operator adding an agreement) is re-read at least every few seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_report = 0.0
        while True:
            eligible = self.eligible_partners()
            if len(eligible) >= count or self._interrupted or (stop is not None and stop.is_set()):
                return eligible
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return eligible
            if now - last_report > 30:
                last_report = now
                log.info("grid.waiting_for_partners", eligible=eligible, needed=count)
            wait = 2.0 if deadline is None else min(2.0, deadline - now)
            self.directory.wait_for_change(max(wait, 0.0))

    def publish_events(self, events: Sequence[EventEnvelope[Any]]) -> None:
        """Publish events to `mshale.events` on this grid's connection; returns once all are confirmed."""
        if events:
            self._loop.run(self._publish_events(list(events)))

    async def _publish_events(self, events: list[EventEnvelope[Any]]) -> None:
        assert self._publisher is not None
        await self._publisher.publish_many(events)

    # -- internals ---------------------------------------------------------------------------------

    def _check_instruction(self, message: Message) -> None:
        metadata = message.metadata
        if metadata.reply_to_message_id or metadata.ttl <= 0 or metadata.message_id:
            raise ValueError(f"not a fresh instruction message: {metadata}")
        if self._run is not None and metadata.run_id != self._run.run_id:
            raise ValueError(f"instruction for run {metadata.run_id}, the grid runs {self._run.run_id}")

    async def _publish_all(self, messages: list[Message]) -> list[str | None]:
        return list(await asyncio.gather(*(self._publish_instruction(m) for m in messages)))

    async def _publish_instruction(self, message: Message) -> str | None:
        """Publish one instruction; returns why it could not be delivered, or None."""
        assert self._publisher is not None
        partner_id = self.partner_of(message.metadata.dst_node_id)
        if partner_id is None or not self.directory.is_present(partner_id):
            return f"node {message.metadata.dst_node_id} is not connected"
        try:
            await self._publisher.publish_raw(
                await asyncio.to_thread(wire.encode_message, message),
                exchange=wire.GRID_EXCHANGE,
                routing_key=wire.instruction_key(partner_id),
                properties=wire.message_properties(message, user_id=self._publisher.user_id),
            )
        except UnroutableError:
            return f"partner {partner_id} has no instruction queue on the broker"
        except BrokerError as error:
            return f"instruction to {partner_id} not accepted by the broker: {error}"
        log.debug("grid.instruction_sent", partner_id=partner_id, message_id=message.metadata.message_id)
        return None

    def _answer_with_error(self, instruction: Message, code: int, reason: str) -> None:
        reply = Message(Error(code=code, reason=reason), reply_to=instruction)
        reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        self._store_reply(instruction, reply)

    def _store_reply(self, instruction: Message, reply: Message) -> bool:
        with self._lock:
            if self._pending.pop(instruction.metadata.message_id, None) is None:
                return False
            self._replies[instruction.metadata.message_id] = reply
            self._lock.notify_all()
            return True

    def _on_partner_gone(self, partner_id: str) -> None:
        node_id = node_id_for(partner_id)
        with self._lock:
            orphans = [m for m in self._pending.values() if m.metadata.dst_node_id == node_id]
        for instruction in orphans:
            self._answer_with_error(instruction, ErrorCode.NODE_UNAVAILABLE, f"partner {partner_id} went away")
        if orphans:
            log.warning("grid.partner_dropped_out", partner_id=partner_id, unanswered=len(orphans))

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_TICK_SECONDS)
            try:
                self.directory.expire()
            except Exception as error:  # a bug here must not stop expiry for good
                log.exception("grid.expiry_failed", error=repr(error))

    async def _on_presence(self, delivery: AbstractIncomingMessage) -> None:
        async with delivery.process(ignore_processed=True):
            try:
                hello = wire.decode_hello(delivery.body)
            except wire.WireFormatError as error:
                log.warning("grid.bad_hello", error=str(error)[:200], user_id=delivery.user_id)
                return
            if not self._sender_ok(delivery, hello.partner_id):
                return
            self.node_ids.add(hello.partner_id)
            self.directory.hello(hello)

    async def _on_reply(self, delivery: AbstractIncomingMessage) -> None:
        async with delivery.process(ignore_processed=True):
            partner_id = wire.partner_of_routing_key(delivery.routing_key or "")
            if partner_id is None or not self._sender_ok(delivery, partner_id):
                self.rejected_replies += 1
                return
            try:
                reply = await asyncio.to_thread(wire.decode_message, delivery.body)
            except wire.WireFormatError as error:
                self.rejected_replies += 1
                log.warning("grid.bad_reply", partner_id=partner_id, error=str(error)[:200])
                return
            self._accept_reply(partner_id, reply)

    def _accept_reply(self, partner_id: str, reply: Message) -> None:
        metadata = reply.metadata
        with self._lock:
            instruction = self._pending.get(metadata.reply_to_message_id)
        if instruction is None:
            log.info("grid.reply_unexpected", partner_id=partner_id, reply_to=metadata.reply_to_message_id)
            return
        expected_node = instruction.metadata.dst_node_id
        if node_id_for(partner_id) != expected_node or metadata.src_node_id != expected_node:
            self.rejected_replies += 1
            log.warning(
                "grid.reply_from_wrong_node",
                partner_id=partner_id,
                src_node_id=metadata.src_node_id,
                expected_node_id=expected_node,
            )
            return
        if metadata.run_id != instruction.metadata.run_id:
            self.rejected_replies += 1
            log.warning("grid.reply_wrong_run", partner_id=partner_id, run_id=metadata.run_id)
            return
        if self._store_reply(instruction, reply):
            log.debug("grid.reply_received", partner_id=partner_id, error=reply.has_error())

    def _sender_ok(self, delivery: AbstractIncomingMessage, partner_id: str) -> bool:
        """The broker-checked sender must be the partner itself (or a trusted operator user)."""
        user = delivery.user_id
        if user == partner_id or (user is not None and user in self.trusted_users):
            return True
        log.warning("grid.sender_mismatch", partner_id=partner_id, user_id=user, routing_key=delivery.routing_key)
        return False


class CohortGrid(Grid):
    """Another grid seen through a fixed set of node ids: what a strategy samples from in one round.

    The server reserves privacy budget for a cohort before any training instruction goes out;
    handing the strategy this view makes sure it samples exactly the reserved partners.
    """

    def __init__(self, grid: Grid, node_ids: Sequence[int]) -> None:
        self.inner = grid
        self.node_ids = list(node_ids)

    def set_run(self, run: Run) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Run:
        return self.inner.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self.inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.inner.send_and_receive(messages, timeout=timeout)


__all__ = ["AmqpGrid", "CohortGrid"]
