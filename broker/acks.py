"""Coalesced acknowledgements: one `basic.ack multiple=true` for a run of finished deliveries.

Acking every delivery on its own costs a frame, a syscall and, on a quorum queue, a Raft command
each. Deliveries that finish in the same event-loop turn and are *consecutive* from the lowest
unsettled delivery tag are acked together with `multiple=true`; any others are acked one by one
at once, so a slow delivery never holds back the acks of the ones after it.

Safety: a multiple ack settles every unacked tag up to the one given. It is only sent for the
run `floor+1 .. top`, where every tag <= floor is already settled and every tag in the run is
either finished here or already settled individually (a nack, written before). A delivery whose
callback has not started yet is never in `ready`, so the run stops before it: nothing is acked
that was not processed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiormq.abc import AbstractChannel


class AckBatcher:
    """Tracks the delivery tags of one AMQP channel (tags are 1, 2, 3... per channel)."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self.floor = 0
        """Every tag <= floor is settled."""
        self._ready: set[int] = set()
        self._settled: set[int] = set()
        self._flush: asyncio.Future[None] | None = None
        """The send that will still pick up new acks (it has not run yet)."""
        self._sending: set[asyncio.Future[None]] = set()
        self.frames = 0
        self.on_lost: Callable[[BaseException], None] | None = None
        """Called when acks could not be written: the channel is gone and the broker requeued
        those deliveries (the inbox makes their redelivery harmless)."""

    def ack(self, tag: int) -> None:
        """Ack `tag` soon, possibly together with others finishing in the same loop turn."""
        self._ready.add(tag)
        if self._flush is None:
            self._flush = asyncio.ensure_future(self._send())
            self._sending.add(self._flush)
            self._flush.add_done_callback(self._sent)

    async def wait_sent(self) -> None:
        """Wait until every ack requested so far is written (or failed with its channel)."""
        while self._sending:
            await asyncio.wait(set(self._sending))

    def _sent(self, flush: asyncio.Future[None]) -> None:
        self._sending.discard(flush)
        if flush.cancelled():
            return
        error = flush.exception()
        if error is not None and self.on_lost is not None:
            self.on_lost(error)

    def settled_elsewhere(self, tag: int) -> None:
        """`tag` was nacked (or rejected) and that frame is written."""
        self._settled.add(tag)
        self._advance()

    def _advance(self) -> None:
        while self.floor + 1 in self._settled:
            self._settled.remove(self.floor + 1)
            self.floor += 1

    async def _send(self) -> None:
        await asyncio.sleep(0)  # let every delivery finishing in this turn join
        self._flush = None
        ready, self._ready = self._ready, set()
        top = None
        while True:
            following = self.floor + 1
            if following in ready:
                ready.remove(following)
                top = following
            elif following in self._settled:
                self._settled.remove(following)
            else:
                break
            self.floor = following
        if top is not None:
            self.frames += 1
            await self.channel.basic_ack(top, multiple=True)
        for tag in sorted(ready):
            self.frames += 1
            await self.channel.basic_ack(tag)
            self._settled.add(tag)
        self._advance()
