"""Broker throughput: the framework's publisher and inbox consumer against raw aio-pika, same run.

    .venv/bin/python benchmarks/broker_throughput.py [--events 20000] [--no-write]

Both sides run against the same broker, each in a fresh virtual host holding the full mshale
topology, and publish the same events to `mshale.events` with the same routing keys (so the
broker does the same work for both: ledger + audit quorum queues and the stream), then consume
the ledger queue with the same prefetch.

- framework: `Publisher.publish_many` (confirms, `publish_window` in flight, events serialised
  from their models) and `ConsumerRuntime` + `InboxProcessor` on a SQLite file (parse, one inbox
  transaction per event, no-op handler, ack).
- raw: aio-pika `exchange.publish` of pre-encoded bodies with confirms and the same window
  (a semaphore), and a consumer that only acks.

Prints a table and appends a section to BENCHMARKS.md with the machine, date, rates and the
framework/raw ratios (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aio_pika
from sqlalchemy import Connection

from mshale_fl.broker import ConsumerRuntime, InboxProcessor, Publisher, connect, declare_topology
from mshale_fl.broker.topology import EVENTS_EXCHANGE
from mshale_fl.config import Settings
from mshale_fl.logging import configure_logging
from mshale_fl.schemas.events import EventEnvelope
from mshale_fl.store import create_store_engine, migrate
from mshale_fl.testing.rabbitmq import amqp_url, management_client, temporary_vhost
from mshale_fl.testing.samples import sample_event

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "mshale.ledger"
EVENT_TYPE = "budget.low"


@dataclass
class Rates:
    publish_s: float
    consume_s: float
    events: int
    publish_cpu_s: float = 0.0
    consume_cpu_s: float = 0.0

    @property
    def publish_rate(self) -> float:
        return self.events / self.publish_s

    @property
    def consume_rate(self) -> float:
        return self.events / self.consume_s

    @property
    def end_to_end_rate(self) -> float:
        return self.events / (self.publish_s + self.consume_s)

    @property
    def publish_cpu_us(self) -> float:
        return self.publish_cpu_s / self.events * 1e6

    @property
    def consume_cpu_us(self) -> float:
        return self.consume_cpu_s / self.events * 1e6


class Clock:
    """Wall time and this process's CPU time (all threads) since start."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


class NoOpHandler:
    """The cheapest possible effect: the inbox row alone is what the framework adds."""

    consumer_name = "benchmark"

    def handle(self, event: EventEnvelope[Any], connection: Connection) -> Sequence[EventEnvelope[Any]]:
        return []


async def framework(url: str, events: list[EventEnvelope[Any]], settings: Settings, database: Path) -> Rates:
    connection = await connect(url, name="benchmark framework")
    try:
        await declare_topology(connection, delivery_limit=settings.delivery_limit)
        publisher = await Publisher.open(connection, window=settings.publish_window)
        clock = Clock()
        await publisher.publish_many(events)
        publish_s, publish_cpu = clock.read()

        engine = create_store_engine(f"sqlite:///{database}")
        migrate(engine)
        processor = InboxProcessor(NoOpHandler(), engine)
        runtime = ConsumerRuntime(connection, QUEUE, processor, publisher=publisher, prefetch=settings.prefetch)
        clock = Clock()
        await runtime.start()
        while runtime.stats.acked < len(events):
            await asyncio.sleep(0.005)
        consume_s, consume_cpu = clock.read()
        await runtime.stop(grace=5)
        processor.close()
        assert processor.inbox.applied_count() == len(events)
        await publisher.close()
    finally:
        await connection.close()
    return Rates(publish_s, consume_s, len(events), publish_cpu, consume_cpu)


async def raw(url: str, events: list[EventEnvelope[Any]], settings: Settings) -> Rates:
    bodies = [(event.routing_key, event.model_dump_json().encode(), str(event.event_id)) for event in events]
    connection = await connect(url, name="benchmark raw")
    try:
        await declare_topology(connection, delivery_limit=settings.delivery_limit)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        window = asyncio.Semaphore(settings.publish_window)

        async def send(routing_key: str, body: bytes, message_id: str) -> None:
            try:
                message = aio_pika.Message(
                    body, message_id=message_id, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                )
                await exchange.publish(message, routing_key=routing_key, mandatory=True)
            finally:
                window.release()

        clock = Clock()
        tasks = []
        for routing_key, body, message_id in bodies:
            await window.acquire()
            tasks.append(asyncio.ensure_future(send(routing_key, body, message_id)))
        await asyncio.gather(*tasks)
        publish_s, publish_cpu = clock.read()

        consume_channel = await connection.channel(publisher_confirms=False)
        await consume_channel.set_qos(prefetch_count=settings.prefetch)
        queue = await consume_channel.get_queue(QUEUE)
        acked = 0
        done = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal acked
            await message.ack()
            acked += 1
            if acked == len(bodies):
                done.set()

        clock = Clock()
        await queue.consume(on_message)
        await done.wait()
        consume_s, consume_cpu = clock.read()
    finally:
        await connection.close()
    return Rates(publish_s, consume_s, len(events), publish_cpu, consume_cpu)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    try:
        with management_client() as client:
            rabbitmq = client.get("/api/overview").json().get("rabbitmq_version", "unknown")
    except Exception:
        rabbitmq = "unknown"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": ram,
        "python": platform.python_version(),
        "aio-pika": version("aio-pika"),
        "rabbitmq": rabbitmq,
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(n: int, settings: Settings, fw: list[Rates], rw: list[Rates], info: dict[str, str], load: tuple[str, str]) -> str:
    # Each round runs the two sides back to back, so a round's ratio compares runs made under the
    # same background load; the headline is the median of those per-round ratios.
    def rate_row(name: str, metric: str) -> str:
        f = [getattr(r, metric) for r in fw]
        r = [getattr(x, metric) for x in rw]
        ratios = [a / b for a, b in zip(f, r, strict=True)]
        return (
            f"| {name} | {median(f):,.0f} | {median(r):,.0f} | **{median(ratios):.2f}** "
            f"| {min(ratios):.2f}–{max(ratios):.2f} |"
        )

    def cpu_row(name: str, metric: str) -> str:
        f = [getattr(r, metric) for r in fw]
        r = [getattr(x, metric) for x in rw]
        ratios = [a / b for a, b in zip(f, r, strict=True)]
        return f"| {name} | {median(f):,.0f} | {median(r):,.0f} | {median(ratios):.2f} | {min(ratios):.2f}–{max(ratios):.2f} |"

    return "\n".join(
        [
            f"## Broker throughput — {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
            "",
            f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM; RabbitMQ {info['rabbitmq']} on the same "
            f"machine; Python {info['python']}, aio-pika {info['aio-pika']}. Load average before/after: {load[0]} / {load[1]} "
            "(the broker and the CPUs are shared with other work, so single runs vary: rounds alternate the two sides).",
            f"{n:,} `{EVENT_TYPE}` events per round, {len(fw)} rounds per side, framework and raw alternating; events go to "
            f"`mshale.events` (routed to 2 quorum queues and the stream), publish window {settings.publish_window}, "
            f"prefetch {settings.prefetch}; consumer on `{QUEUE}`; framework inbox on a SQLite file (WAL), no-op handler.",
            "",
            "| median | framework | raw aio-pika | framework/raw (median of rounds) | range over rounds |",
            "|---|---:|---:|---:|---:|",
            rate_row("publish, events/s (confirmed)", "publish_rate"),
            rate_row("consume, events/s (fw: parse + inbox txn + ack; raw: ack)", "consume_rate"),
            rate_row("end to end, events/s (publish then consume)", "end_to_end_rate"),
            cpu_row("client CPU per event publishing, µs", "publish_cpu_us"),
            cpu_row("client CPU per event consuming, µs", "consume_cpu_us"),
            "",
            f"Command: `.venv/bin/python benchmarks/broker_throughput.py --events {n} --rounds {len(fw)}`",
            "",
        ]
    )


def append_atomically(path: Path, section: str) -> None:
    existing = path.read_text() if path.exists() else "# Benchmarks\n\nResults appended by the scripts in `benchmarks/`.\n"
    content = existing.rstrip("\n") + "\n\n" + section
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=".benchmarks-", suffix=".tmp") as handle:
        handle.write(content)
        temporary = Path(handle.name)
    os.replace(temporary, path)


async def run(n: int, rounds: int, settings: Settings, workdir: Path) -> tuple[list[Rates], list[Rates]]:
    events = [sample_event(EVENT_TYPE, seed=i) for i in range(n)]
    framework_rates: list[Rates] = []
    raw_rates: list[Rates] = []
    for round_number in range(rounds):
        order = ("raw", "framework") if round_number % 2 == 0 else ("framework", "raw")
        for side in order:
            with temporary_vhost("mshale-bench") as vhost:
                if side == "raw":
                    raw_rates.append(await raw(amqp_url(vhost), events, settings))
                else:
                    database = workdir / f"ledger-{round_number}.sqlite3"
                    framework_rates.append(await framework(amqp_url(vhost), events, settings, database))
            latest = raw_rates[-1] if side == "raw" else framework_rates[-1]
            print(
                f"round {round_number + 1} {side:9}: "
                f"publish {latest.publish_rate:8,.0f}/s  consume {latest.consume_rate:8,.0f}/s",
                file=sys.stderr,
            )
    return framework_rates, raw_rates


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side, interleaved (median reported)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    settings = Settings()
    load_before = load_average()
    with tempfile.TemporaryDirectory() as workdir:
        fw, rw = asyncio.run(run(args.events, args.rounds, settings, Path(workdir)))
    section = report(args.events, settings, fw, rw, machine(), (load_before, load_average()))
    print(section)
    if not args.no_write:
        append_atomically(ROOT / "BENCHMARKS.md", section)
        print(f"appended to {ROOT / 'BENCHMARKS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
