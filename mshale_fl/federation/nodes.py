"""Partners as Flower nodes: a stable node id per partner id, who is present, who may train.

Flower addresses nodes by integer id; we address partners by their id string (also their broker
user). `node_id_for` maps one to the other with a hash, so the same partner is the same node
across reconnects, server restarts and machines, and the server never has to hand out ids.

Presence is pushed, never polled: a partner says hello when it joins and every
`heartbeat_seconds` after that, and bye when it stops. A partner is *present* while its last
hello is younger than `HEARTBEAT_MISSES` heartbeats. The server reacts to a partner that goes
quiet (killed, network gone) by failing what it was waiting for from it (grid.py).

Eligibility is the ledger's word (`may_train`: Tier 3 agreement active, partner active, budget for
this model version not paused), asked at the moment the strategy asks for nodes, never cached.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Engine

from mshale_fl.federation.wire import NodeHello
from mshale_fl.ledger import Decision, may_train
from mshale_fl.logging import get_logger

log = get_logger(__name__)

HEARTBEAT_MISSES = 3
"""A partner whose last `HEARTBEAT_MISSES` heartbeats did not arrive is considered gone."""

_RESERVED_NODE_IDS = 2
"""Flower uses 0 for "no node" and 1 for the SuperLink itself (`SUPERLINK_NODE_ID`)."""


def node_id_for(partner_id: str) -> int:
    """The partner's Flower node id: 63 bits of SHA-256 of the id, never 0 or 1."""
    digest = hashlib.sha256(b"mshale-fl/node-id\x00" + partner_id.encode()).digest()
    value = int.from_bytes(digest[:8], "big") & (2**63 - 1)
    return value if value >= _RESERVED_NODE_IDS else value + _RESERVED_NODE_IDS


@dataclass(frozen=True)
class PresentNode:
    partner_id: str
    node_id: int
    last_seen: float
    """time.monotonic() of the last hello."""
    heartbeat_seconds: float

    def fresh(self, now: float) -> bool:
        return now - self.last_seen <= self.heartbeat_seconds * HEARTBEAT_MISSES


Eligibility = Callable[[str], Decision]
"""eligibility(partner_id) -> Decision: may this partner train now?"""


def always_eligible(_partner_id: str) -> Decision:
    return Decision(True, "ok", "")


class LedgerEligibility:
    """`may_train` for one model version, against the ledger at `engine`."""

    def __init__(self, engine: Engine, model_version: int) -> None:
        self.engine = engine
        self.model_version = model_version

    def __call__(self, partner_id: str) -> Decision:
        with self.engine.connect() as connection:
            return may_train(connection, partner_id, self.model_version)


class NodeDirectory:
    """Who is present, updated from hellos and byes; thread-safe, with waiters woken on every change.

    `on_gone(partner_id)` is called (from the thread that noticed) when a present partner says bye
    or misses its heartbeats, so the grid can fail the instructions it still waits on.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._nodes: dict[str, PresentNode] = {}
        self._changed = threading.Condition()
        self.on_gone: Callable[[str], None] | None = None

    def hello(self, hello: NodeHello) -> bool:
        """Record a hello (or bye); returns True if the partner was not present before."""
        expected = node_id_for(hello.partner_id)
        if hello.node_id != expected:
            log.warning(
                "grid.hello_wrong_node_id", partner_id=hello.partner_id, node_id=hello.node_id, expected=expected
            )
            return False
        if hello.kind == "bye":
            self.forget(hello.partner_id, reason="bye")
            return False
        with self._changed:
            previous = self._nodes.get(hello.partner_id)
            now = self._clock()
            new = previous is None or not previous.fresh(now)
            self._nodes[hello.partner_id] = PresentNode(hello.partner_id, hello.node_id, now, hello.heartbeat_seconds)
            self._changed.notify_all()
        if new:
            log.info("grid.partner_present", partner_id=hello.partner_id, node_id=hello.node_id)
        return new

    def forget(self, partner_id: str, *, reason: str) -> None:
        with self._changed:
            removed = self._nodes.pop(partner_id, None)
            self._changed.notify_all()
        if removed is not None:
            log.info("grid.partner_gone", partner_id=partner_id, reason=reason)
            if self.on_gone is not None:
                self.on_gone(partner_id)

    def expire(self) -> list[str]:
        """Forget partners that missed their heartbeats; returns their ids."""
        now = self._clock()
        with self._changed:
            stale = [node.partner_id for node in self._nodes.values() if not node.fresh(now)]
        for partner_id in stale:
            self.forget(partner_id, reason="heartbeat_missed")
        return stale

    def present(self) -> list[PresentNode]:
        now = self._clock()
        with self._changed:
            return sorted((n for n in self._nodes.values() if n.fresh(now)), key=lambda n: n.partner_id)

    def is_present(self, partner_id: str) -> bool:
        now = self._clock()
        with self._changed:
            node = self._nodes.get(partner_id)
            return node is not None and node.fresh(now)

    def wake(self) -> None:
        """Wake every `wait_for_change` (shutdown)."""
        with self._changed:
            self._changed.notify_all()

    def wait_for_change(self, timeout: float) -> None:
        """Block until a hello, bye or expiry changes the directory, or `timeout` seconds pass."""
        with self._changed:
            self._changed.wait(timeout)


class NodeIds:
    """Partner id <-> node id for a known set of partners (the inverse of a hash needs a table)."""

    def __init__(self, partner_ids: Iterable[str] = ()) -> None:
        self._by_node: dict[int, str] = {}
        self._lock = threading.Lock()
        for partner_id in partner_ids:
            self.add(partner_id)

    def add(self, partner_id: str) -> int:
        node_id = node_id_for(partner_id)
        with self._lock:
            other = self._by_node.setdefault(node_id, partner_id)
        if other != partner_id:  # 2^-63: a collision would silently merge two partners, so refuse
            raise ValueError(f"partners {other!r} and {partner_id!r} map to the same node id {node_id}")
        return node_id

    def partner_of(self, node_id: int) -> str | None:
        with self._lock:
            return self._by_node.get(node_id)


__all__ = [
    "HEARTBEAT_MISSES",
    "Eligibility",
    "LedgerEligibility",
    "NodeDirectory",
    "NodeIds",
    "PresentNode",
    "always_eligible",
    "node_id_for",
]
