"""Running partner nodes in threads of the test process, and small ClientApps for transport tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from mshale_fl.federation import PartnerNode
from mshale_fl.federation.loop import LoopThread


def echo_app(name: str = "echo") -> ClientApp:
    """Replies to `train` with the arrays doubled and a metric naming the node; `query` raises."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        arrays = message.content["arrays"].to_numpy_ndarrays()
        doubled = ArrayRecord([array * 2 for array in arrays])
        metrics = MetricRecord({"num-examples": 1, "node": float(context.node_id % 1000)})
        return Message(RecordDict({"arrays": doubled, "metrics": metrics}), reply_to=message)

    @app.query()
    def query(message: Message, context: Context) -> Message:
        raise RuntimeError(f"{name} refuses queries")

    return app


class RunningNode:
    """A PartnerNode on a loop thread of its own: `stop()` leaves cleanly, `crash()` vanishes without a bye."""

    def __init__(self, node: PartnerNode) -> None:
        self.node = node
        self.loop = LoopThread(f"node {node.partner_id}").start()
        self._stop: asyncio.Event | None = None
        self.future = self.loop.submit(self._main())
        self._ready = threading.Event()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        task = asyncio.create_task(self.node.run(self._stop))
        ready = asyncio.create_task(self.node.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        self._ready.set()
        await task

    def wait_ready(self, timeout: float = 20) -> None:
        assert self._ready.wait(timeout), "node did not start"
        if self.future.done():
            self.future.result()

    def stop(self, timeout: float = 30) -> None:
        if self._stop is not None:
            self.loop.loop.call_soon_threadsafe(self._stop.set)
        self.future.result(timeout)
        self.loop.stop()

    def crash(self) -> None:
        """Cancel the node: its connection closes without a bye, as when the process is killed."""
        self.future.cancel()
        self.loop.stop()


@contextmanager
def running_nodes(nodes: list[PartnerNode]) -> Iterator[list[RunningNode]]:
    running = [RunningNode(node) for node in nodes]
    try:
        for item in running:
            item.wait_ready()
        yield running
    finally:
        for item in running:
            if item.loop.alive:
                try:
                    item.stop()
                except Exception:
                    item.crash()


def train_message(node_id: int, values: list[float], *, group: str = "1", ttl: float | None = None) -> Message:
    from flwr.app import ConfigRecord

    content = RecordDict(
        {"arrays": ArrayRecord([np.asarray(values, dtype=np.float32)]), "config": ConfigRecord({"server-round": 1})}
    )
    return Message(content, node_id, "train", group_id=group, ttl=ttl)


class GatedApp:
    """A ClientApp wrapper that blocks `train` from round `from_round` on, until `release` is set.

    `entered` is set when a gated train begins: the moment to kill the node "mid-round".
    """

    def __init__(self, inner: ClientApp, *, from_round: int) -> None:
        self.inner = inner
        self.from_round = from_round
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, message: Message, context: Context) -> Message:
        if (
            message.metadata.message_type == "train"
            and int(message.content["config"]["server-round"]) >= self.from_round
        ):
            self.entered.set()
            self.release.wait(120)
        return self.inner(message, context)
