"""Queue inspection and polling for tests and benchmarks that run against the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractConnection, AbstractIncomingMessage


async def ready_count(connection: AbstractConnection, queue: str) -> int:
    """Messages ready in a queue (not counting unacked ones)."""
    channel = await connection.channel(publisher_confirms=False)
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def take(connection: AbstractConnection, queue: str, expected: int, timeout: float = 10.0) -> list[AbstractIncomingMessage]:
    """Get (and ack) `expected` messages from a queue with basic.get, waiting up to `timeout`."""
    channel = await connection.channel(publisher_confirms=False)
    messages: list[AbstractIncomingMessage] = []
    deadline = time.monotonic() + timeout
    try:
        q = await channel.get_queue(queue)
        while len(messages) < expected and time.monotonic() < deadline:
            message = await q.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            messages.append(message)
    finally:
        await channel.close()
    return messages


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def close_vhost_connections(vhost: str) -> None:
    """What an operator (or a broker restart) does to us: drop every connection of the vhost."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "close_all_connections", "--vhost", vhost, "test",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
