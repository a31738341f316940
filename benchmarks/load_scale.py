"""Load and scale: N simulated partners against 1, 2 and 4 replicas of each worker role.

    .venv/bin/python benchmarks/load_scale.py [--partners 8] [--events 3000] [--replicas 1,2,4]
        [--backends sqlite,postgresql] [--rate auto|N] [--paced-seconds 20] [--quick] [--no-write]

For each ledger backend and replica count, in a fresh RabbitMQ vhost with a fresh ledger (a SQLite
file, or a throw-away PostgreSQL database) and a fresh audit log, `replicas` real
`mshale-fl worker validate|ledger|audit` processes are started (`mshale_fl.testing.load`), the
partners are registered (own broker user each) and two runs are made:

- **saturating**: `--events` submissions, every partner publishing as fast as its window of 64
  unconfirmed publishes allows. Throughput is submissions per second from the first publish until
  the last submission was completely done (itself and its receipt in the audit log under a signed
  checkpoint, its contribution in the ledger). Queue depths are sampled to see where work piles up.
- **paced**: an open loop at `--rate` submissions/s (default `auto`: half the saturating
  throughput of the first configuration, then the same rate for all) for `--paced-seconds`.
  Latencies from publish to each stage, p50 and p99; the headline is publish -> audit append.

Baseline, same run: a **raw aio-pika pipeline** with the same messages, routing and process
layout: the same bodies published by N raw aio-pika connections with confirms, three consumer
processes that only ack (the `validate` one first publishes a small receipt with confirms, routed
like the real one to the ledger and audit queues). It runs after each backend's series, so its
spread shows how much the machine drifted.

Writes `benchmarks/figures/load_*.png`, the raw results in `benchmarks/figures/load_scale.json`, and
prints a Markdown section (appended to BENCHMARKS.md unless `--no-write`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "benchmarks" / "figures"
QUEUES = ("mshale.validate", "mshale.ledger", "mshale.audit")
STAGES = ("confirmed", "validated", "receipt", "ledger", "audited", "receipt_audited", "done")
STAGE_TITLES = {
    "confirmed": "broker confirm",
    "validated": "validator commit",
    "receipt": "receipt at partner",
    "ledger": "contribution recorded",
    "audited": "audit append",
    "receipt_audited": "receipt audited",
    "done": "all done",
}
WINDOW = 64


# -- machine and CPU accounting ------------------------------------------------------------------


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


def pids_named(*names: str) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm in names:
                found[int(entry.name)] = comm
    return found


class CpuMeter:
    """CPU seconds used between start and stop: our workers by role, this driver, the broker,
    PostgreSQL, and the whole machine (the rest is other people's work on the shared machine)."""

    def __init__(self, workers: Any | None = None) -> None:
        from mshale_fl.testing.load import process_cpu_seconds

        self._cpu = process_cpu_seconds
        self.workers = workers

    def _read(self) -> dict[str, Any]:
        services = pids_named("beam.smp", "postgres")
        return {
            "wall": time.time(),
            "workers": self.workers.cpu_seconds() if self.workers is not None else {},
            "driver": time.process_time(),
            "services": {pid: (name, self._cpu(pid)) for pid, name in services.items()},
            "machine": machine_busy_seconds(),
        }

    def start(self) -> None:
        self.first = self._read()

    def stop(self) -> dict[str, float]:
        last = self._read()
        first = self.first
        used = {f"worker {role}": last["workers"][role] - first["workers"].get(role, 0.0) for role in last["workers"]}
        used["driver (generator)"] = last["driver"] - first["driver"]
        for service, label in (("beam.smp", "rabbitmq"), ("postgres", "postgresql")):
            used[label] = sum(
                cpu - first["services"][pid][1]
                for pid, (name, cpu) in last["services"].items()
                if name == service and pid in first["services"]
            )
        busy = last["machine"][0] - first["machine"][0]
        used["other processes"] = max(0.0, busy - sum(used.values()))
        used["machine busy"] = busy
        used["wall"] = last["wall"] - first["wall"]
        return used


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- one run -------------------------------------------------------------------------------------


def summarise(values: Sequence[float]) -> dict[str, float]:
    from mshale_fl.testing.load import percentile

    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values, default=float("nan")),
    }


def depth_series(samples: list[tuple[float, dict[str, int]]], start: float) -> list[list[float]]:
    return [[round(at - start, 3), *[depths.get(queue, 0) for queue in QUEUES]] for at, depths in samples]


async def measured_run(url: str, partners: Any, workload: Any, *, rate: float | None, workers: Any, engine: Any, watcher: Any) -> dict[str, Any]:
    from mshale_fl.testing.load import (
        LoadGenerator,
        QueueDepthSampler,
        check_load,
        ledger_view,
        stage_times,
        wait_until_settled,
    )

    size_before = watcher.covered_size()
    meter = CpuMeter(workers)
    meter.start()
    async with QueueDepthSampler(url, QUEUES) as depths:
        run = await LoadGenerator(url, partners, workload, rate=rate, window=WINDOW, receipt_timeout=900).run()
        settled = await wait_until_settled(run, watcher, engine, timeout=900, interval=0.25)
    cpu = meter.stop()
    workers.raise_if_failed()
    ledger = ledger_view(engine, run)
    check = check_load(run, watcher, ledger, log_is_the_runs=False)
    times = stage_times(run, watcher, ledger)
    batches = watcher.batch_sizes()
    appended = watcher.covered_size() - size_before
    new_checkpoints = sum(1 for size in watcher.log.checkpoint_sizes() if size > size_before)
    submissions = len(run.sent)
    return {
        "submissions": submissions,
        "items": sum(item.planned.items for item in run.sent),
        "rate_offered": rate,
        "throughput": times.rate(),
        "publish_rate": submissions / max(run.published_by - run.started_at, 1e-9),
        "schedule_lag_max": run.max_schedule_lag,
        "settled": settled,
        "check_ok": check.ok,
        "problems": check.problems[:10],
        "accepted": check.accepted,
        "rejected": check.rejected,
        "latency": {stage: summarise(getattr(times, stage)) for stage in STAGES},
        "cpu_seconds": cpu,
        "queue_peak": {queue: depths.peak(queue) for queue in QUEUES},
        "queue_depths": depth_series(depths.samples, run.started_at),
        "audit_entries": appended,
        "audit_appends": new_checkpoints,
        "audit_batch_mean": appended / new_checkpoints if new_checkpoints else float("nan"),
        "audit_batch_max": max(batches, default=0),
    }


async def worker_configuration(
    backend: str, replicas: int, partners_count: int, events: int, rate: float | None, paced_seconds: float
) -> dict[str, Any]:
    from mshale_fl.ledger import open_ledger
    from mshale_fl.testing.load import (
        AuditLogWatcher,
        MishaleWorkers,
        build_workload,
        declare_mishale_topology,
        provision_partners,
        remove_partner_users,
    )
    from mshale_fl.testing.rabbitmq import amqp_url, temporary_vhost

    result: dict[str, Any] = {"backend": backend, "replicas": replicas, "load_before": load_average()}
    per_partner = max(1, events // partners_count)
    with temporary_vhost("mshale-load") as vhost, ledger_database(backend) as ledger_url, tempfile.TemporaryDirectory(
        prefix="mshale-load-"
    ) as state:
        url = amqp_url(vhost)
        engine = open_ledger(ledger_url)
        await declare_mishale_topology(url)
        partners = provision_partners(engine, vhost, partners_count)
        try:
            workers = MishaleWorkers(url, ledger_url, Path(state), replicas=replicas)
            started = time.monotonic()
            try:
                await workers.start(timeout=600)
                result["startup_s"] = time.monotonic() - started
                watcher = AuditLogWatcher(workers.audit_log_dir)
                saturate = build_workload(partners, profile(per_partner, seed=1))
                result["saturating"] = await measured_run(
                    url, partners, saturate, rate=None, workers=workers, engine=engine, watcher=watcher
                )
                if rate is None:
                    rate = round(result["saturating"]["throughput"] / 2, 1)
                paced_per_partner = max(1, round(rate * paced_seconds / partners_count))
                paced = build_workload(partners, profile(paced_per_partner, seed=2))
                result["paced"] = await measured_run(
                    url, partners, paced, rate=rate, workers=workers, engine=engine, watcher=watcher
                )
            finally:
                result["exit_codes"] = workers.stop()
        finally:
            remove_partner_users([partner.partner_id for partner in partners])
            engine.dispose()
    result["load_after"] = load_average()
    return result


def profile(per_partner: int, *, seed: int) -> Any:
    from mshale_fl.testing.load import LoadProfile

    return LoadProfile(submissions_per_partner=per_partner, vector_share=0.5, vectors_per_batch=16, rejected_share=0.05, seed=seed)


@contextmanager
def ledger_database(backend: str) -> Iterator[str]:
    from mshale_fl.testing.load import temporary_postgres_database

    if backend == "postgresql":
        with temporary_postgres_database("mshale_bench_load") as url:
            yield url
    else:
        with tempfile.TemporaryDirectory(prefix="mshale-load-ledger-") as folder:
            yield f"sqlite:///{folder}/ledger.sqlite3"


# -- the raw aio-pika baseline -------------------------------------------------------------------


def raw_consumer_main(role: str, url: str, expect: int, out: Path, prefetch: int) -> None:
    """A consumer process of the raw baseline: ack every delivery (validate: publish a receipt first)."""
    acked: dict[str, float] = {}
    stop = asyncio.Event()

    async def main() -> None:
        connection = await aio_pika.connect(url)
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(f"mshale.{role}")
        exchange = await channel.get_exchange("mshale.events")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if role == "validate":
                partner = (message.routing_key or "x").split(".", 1)[0]
                receipt = aio_pika.Message(
                    json.dumps({"submission_id": message.message_id}).encode(), message_id=f"r-{message.message_id}",
                    content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )  # fmt: skip
                await exchange.publish(receipt, routing_key=f"{partner}.submission.accepted", mandatory=True)
            await message.ack()
            acked[message.message_id or ""] = time.time()
            if len(acked) >= expect:
                stop.set()

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await queue.consume(on_message)
        await stop.wait()
        await connection.close()

    asyncio.run(main())
    # Our own CPU time, written before exiting: the driver cannot read /proc of a process that is gone.
    out.write_text(json.dumps({"acked": acked, "cpu_seconds": time.process_time()}))


async def raw_publish(url: str, workload: dict[str, list[Any]], rate: float | None) -> dict[str, float]:
    """Publish the workload's bodies as N raw aio-pika connections with confirms; message id -> publish time."""
    published: dict[str, float] = {}
    connections = [await aio_pika.connect(url) for _ in workload]
    try:
        exchanges = []
        for connection in connections:
            channel = await connection.channel(publisher_confirms=True)
            exchanges.append(await channel.get_exchange("mshale.events"))
        started = time.time()

        async def partner(index: int, items: list[Any]) -> None:
            window = asyncio.Semaphore(WINDOW)
            tasks = []

            async def send(item: Any) -> None:
                try:
                    published[str(item.event_id)] = time.time()
                    message = aio_pika.Message(
                        item.body, message_id=str(item.event_id), content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    )  # fmt: skip
                    await exchanges[index].publish(message, routing_key=item.routing_key, mandatory=True)
                finally:
                    window.release()

            for number, item in enumerate(items):
                if rate is not None:
                    delay = started + (number * len(workload) + index) / rate - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await window.acquire()
                tasks.append(asyncio.ensure_future(send(item)))
            await asyncio.gather(*tasks)

        await asyncio.gather(*(partner(index, items) for index, items in enumerate(workload.values())))
    finally:
        for connection in connections:
            await connection.close()
    return published


async def raw_configuration(partners_count: int, events: int, rate: float, paced_seconds: float) -> dict[str, Any]:
    from mshale_fl.testing.load import SimulatedPartner, build_workload, declare_mishale_topology
    from mshale_fl.testing.rabbitmq import amqp_url, temporary_vhost

    fake_partners = [SimulatedPartner(f"raw-{index:03d}", 1 if index % 2 == 0 else 2, "") for index in range(partners_count)]
    result: dict[str, Any] = {"load_before": load_average()}
    for mode, per_partner, seed, mode_rate in (
        ("saturating", max(1, events // partners_count), 1, None),
        ("paced", max(1, round(rate * paced_seconds / partners_count)), 2, rate),
    ):
        workload = build_workload(fake_partners, profile(per_partner, seed=seed))
        with temporary_vhost("mshale-load-raw") as vhost, tempfile.TemporaryDirectory(prefix="mshale-load-raw-") as folder:
            url = amqp_url(vhost)
            await declare_mishale_topology(url)
            result[mode] = await raw_pipeline(url, vhost, workload, mode_rate, Path(folder))
    result["load_after"] = load_average()
    return result


async def raw_pipeline(url: str, vhost: str, workload: dict[str, list[Any]], rate: float | None, folder: Path) -> dict[str, Any]:
    from mshale_fl.config import Settings
    from mshale_fl.testing.rabbitmq import management_client

    submissions = sum(len(items) for items in workload.values())
    expect = {"validate": submissions, "ledger": submissions, "audit": 2 * submissions}
    prefetch = Settings().prefetch
    processes = {
        role: subprocess.Popen(
            [sys.executable, __file__, "--raw-consumer", role, "--url", url, "--expect", str(count),
             "--out", str(folder / f"{role}.json"), "--prefetch", str(prefetch)],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        for role, count in expect.items()
    }
    try:
        with management_client() as client:  # every consumer attached before the clock starts
            for _ in range(600):
                names = [item["queue"]["name"] for item in client.get(f"/api/consumers/{quote(vhost, safe='')}").json()]
                if all(f"mshale.{role}" in names for role in expect):
                    break
                await asyncio.sleep(0.1)
        meter = CpuMeter()
        meter.start()
        published = await raw_publish(url, workload, rate)
        for role, process in processes.items():
            while process.poll() is None:
                await asyncio.sleep(0.1)
        cpu = meter.stop()
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
    written = {role: json.loads((folder / f"{role}.json").read_text()) for role in expect}
    acked = {role: data["acked"] for role, data in written.items()}
    # The consumers exited before the meter stopped; what they used comes from their own reports.
    consumers = sum(data["cpu_seconds"] for data in written.values())
    cpu["other processes"] = max(0.0, cpu["other processes"] + cpu.pop("raw consumers", 0.0) - consumers)
    cpu = {"raw consumers": consumers, **cpu}
    latencies, done = [], []
    for event_id, at in published.items():
        audited = acked["audit"][event_id]
        receipt = f"r-{event_id}"
        latencies.append(audited - at)
        done.append(max(audited, acked["audit"][receipt], acked["ledger"][receipt]))
    first = min(published.values())
    return {
        "submissions": submissions,
        "rate_offered": rate,
        "throughput": submissions / (max(done) - first),
        "latency": {"audited": summarise(latencies), "done": summarise([end - published[e] for e, end in zip(published, done, strict=True)])},
        "cpu_seconds": cpu,
    }


# -- the single writer's ceiling ------------------------------------------------------------------


async def audit_drain(partners_count: int, events: int, prefetch: int | None) -> dict[str, Any]:
    """How fast one audit worker (or, with `prefetch` None, a raw consumer that only acks) empties a
    queue of `events` submissions published while nothing consumed it: the single writer alone."""
    from mshale_fl.ledger import open_ledger
    from mshale_fl.testing.load import (
        AuditLogWatcher,
        LoadGenerator,
        MishaleWorkers,
        build_workload,
        declare_mishale_topology,
        process_cpu_seconds,
        provision_partners,
        remove_partner_users,
    )
    from mshale_fl.testing.rabbitmq import amqp_url, temporary_vhost

    with temporary_vhost("mshale-load-drain") as vhost, tempfile.TemporaryDirectory(prefix="mshale-load-drain-") as state:
        url = amqp_url(vhost)
        ledger_url = f"sqlite:///{state}/ledger.sqlite3"
        engine = open_ledger(ledger_url)
        await declare_mishale_topology(url)
        partners = provision_partners(engine, vhost, partners_count)
        try:
            workload = build_workload(partners, profile(max(1, events // partners_count), seed=3))
            run = await LoadGenerator(url, partners, workload, window=WINDOW, receipt_timeout=0).run()
            entries = len(run.confirmed)
            if prefetch is None:
                folder = Path(state)
                process = subprocess.Popen(
                    [sys.executable, __file__, "--raw-consumer", "audit", "--url", url, "--expect", str(entries),
                     "--out", str(folder / "audit.json"), "--prefetch", "1024"],
                    stdin=subprocess.DEVNULL,
                )  # fmt: skip
                process.wait(timeout=900)
                written = json.loads((folder / "audit.json").read_text())
                times = sorted(written["acked"].values())
                return {"consumer": "raw aio-pika (ack only), prefetch 1024", "entries": entries,
                        "entries_per_s": (len(times) - 1) / (times[-1] - times[0]), "cpu_ms_per_entry": float("nan"),
                        "batch_mean": float("nan")}  # fmt: skip
            # Two audit workers start together: one drains the queue, the other stands by (single
            # active consumer). Their CPU difference is the draining, without start-up and imports.
            workers = MishaleWorkers(url, ledger_url, Path(state), replicas={"audit": 2}, env={"MSHALE_PREFETCH": str(prefetch)})
            try:
                await workers.start(timeout=600)
                watcher = AuditLogWatcher(workers.audit_log_dir)
                while watcher.covered_size() < entries:
                    workers.raise_if_failed()
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1.0)  # the last announcement published and acknowledged
                cpu = [process_cpu_seconds(child.process.pid) for child in workers.processes["audit"]]
                sizes = [size for size in watcher.log.checkpoint_sizes() if size > 0]
                first, last = sizes[0], sizes[-1]
                seconds = watcher.appended_at(last - 1) - watcher.appended_at(first - 1)
                return {
                    "consumer": f"mshale-fl worker audit, MSHALE_PREFETCH={prefetch}",
                    "entries": entries,
                    "entries_per_s": (last - first) / seconds,
                    "cpu_ms_per_entry": (max(cpu) - min(cpu)) / entries * 1000,
                    "batch_mean": last / len(sizes),
                }
            finally:
                workers.stop()
        finally:
            remove_partner_users([partner.partner_id for partner in partners])
            engine.dispose()


# -- report --------------------------------------------------------------------------------------


def cpu_ms_per_submission(run: dict[str, Any]) -> dict[str, float]:
    skip = {"wall", "machine busy"}
    return {name: seconds / run["submissions"] * 1000 for name, seconds in run["cpu_seconds"].items() if name not in skip}


def system_cpu_ms(run: dict[str, Any]) -> float:
    """CPU ms per submission of everything the pipeline needs: workers (or raw consumers), generator, broker, database.

    Much steadier than throughput on a shared machine: other people's work slows us down but does
    not make our processes burn more CPU per submission (apart from cache effects).
    """
    cpu = cpu_ms_per_submission(run)
    return sum(value for name, value in cpu.items() if name != "other processes")


def our_share(run: dict[str, Any]) -> float:
    """Fraction of the machine's busy CPU time that was the pipeline's (1.0: no interference seen)."""
    busy = run["cpu_seconds"]["machine busy"]
    return system_cpu_ms(run) * run["submissions"] / 1000 / busy if busy else float("nan")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 0) -> str:
    """'median (min-max)' over rounds, or just the value for one round."""
    if len(values) == 1:
        return f"{values[0] * scale:.{digits}f}"
    return f"{median(values) * scale:.{digits}f} ({min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f})"


def grouped(configs: list[dict[str, Any]]) -> list[tuple[str, int, list[dict[str, Any]]]]:
    """Configurations by (backend, replicas), in the order first run, each with its rounds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for config in configs:
        groups.setdefault((config["backend"], config["replicas"]), []).append(config)
    ordered = sorted(groups.items(), key=lambda item: (["sqlite", "postgresql"].index(item[0][0]), item[0][1]))
    return [(backend, replicas, rounds) for (backend, replicas), rounds in ordered]


def ratio_to_one_replica(configs: list[dict[str, Any]], config: dict[str, Any]) -> float:
    """Saturating throughput over the same backend's lowest replica count in the same round."""
    same = [c for c in configs if c["backend"] == config["backend"] and c["round"] == config["round"]]
    base = min(same, key=lambda c: c["replicas"])
    return config["saturating"]["throughput"] / base["saturating"]["throughput"]


def ratio_to_raw(raws: list[dict[str, Any]], config: dict[str, Any]) -> float:
    """Saturating throughput over the mean raw-pipeline throughput of the same round."""
    same = [raw["saturating"]["throughput"] for raw in raws if raw["round"] == config["round"]]
    return config["saturating"]["throughput"] / statistics.mean(same)


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    configs = results["configurations"]
    raws = results["raw"]
    rounds = max(config["round"] for config in configs) + 1
    first = configs[0]
    lines = [
        f"## Load and scale — {results['date']}",
        "",
        f"Machine: {info['machine']}; RabbitMQ {info['rabbitmq']} and PostgreSQL {info['postgresql']} on the same "
        "machine. The two cores are shared by the broker, PostgreSQL, every worker process, the load generator "
        "*and other people's work*, so absolute rates are noisy: `share` below is the pipeline's part of the "
        "machine's busy CPU time during the run (1.00 = nothing else ran), and `est. on 2 free cores` is 2,000 ms "
        "divided by the pipeline's CPU ms per submission, the rate if the pipeline had both cores and CPU were its "
        "only limit (an upper bound: lock waits do not show in CPU). Compare against the 1-replica row and "
        f"the raw baseline of the same round. Load average at start / end: {results['load_before']} / "
        f"{results['load_after']}. {rounds} round(s); with several, each cell is the median (min-max) over rounds.",
        f"Command: `.venv/bin/python benchmarks/load_scale.py {results['command']}`.",
        "",
        f"Workload: {results['partners']} simulated partners (half Tier 1, half Tier 2 with a DPA), each its own "
        f"broker user publishing with confirms (window {WINDOW}); Tier 2 partners send half their submissions as "
        "`vectors.submitted` batches of 16 vectors; 5 % of submissions are specs labelled `internal`, which the "
        "validator rejects. An accepted submission flows validate (receipt) -> ledger (contribution), and audit "
        "logs the submission and its receipt (two entries, each under a signed checkpoint). Saturating runs: "
        f"{first['saturating']['submissions']} submissions as fast as the windows allow; paced runs: "
        f"{first['paced']['submissions']} submissions at {results['rate']:.0f}/s (half the first configuration's "
        "saturating throughput). Worker replicas are real `mshale-fl worker ROLE` processes with the product's "
        "defaults (prefetch 64, INFO logs to a file); audit replicas beyond the first are standbys of the "
        "single-active-consumer queue.",
        "",
        "| ledger | replicas per role | saturating: submissions/s end to end | vs 1 replica | vs raw pipeline | "
        "CPU ms per submission (pipeline) | share | est. on 2 free cores, /s | paced: publish -> audit append p50 / p99 ms | paced: all done p50 / p99 ms | "
        "peak backlog validate / ledger / audit | entries per audit append | checks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for backend, replicas, group in grouped(configs):
        saturating = [c["saturating"] for c in group]
        paced = [c["paced"] for c in group]
        peaks = " / ".join(f"{median([run['queue_peak'][queue] for run in saturating]):,.0f}" for queue in QUEUES)
        problems = [p for run in saturating + paced for p in run["problems"]]
        ok = "ok" if all(run["check_ok"] for run in saturating + paced) else "FAILED: " + "; ".join(problems)[:200]
        lines.append(
            f"| {backend} | {replicas} | **{spread([r['throughput'] for r in saturating])}** | "
            f"{spread([ratio_to_one_replica(configs, c) for c in group], digits=2)} | "
            f"{spread([ratio_to_raw(raws, c) for c in group], digits=2)} | "
            f"{spread([system_cpu_ms(r) for r in saturating], digits=1)} | {spread([our_share(r) for r in saturating], digits=2)} | "
            f"{spread([2000 / system_cpu_ms(r) for r in saturating])} | "
            f"{spread([r['latency']['audited']['p50'] for r in paced], 1000)} / {spread([r['latency']['audited']['p99'] for r in paced], 1000)} | "
            f"{spread([r['latency']['done']['p50'] for r in paced], 1000)} / {spread([r['latency']['done']['p99'] for r in paced], 1000)} | "
            f"{peaks} | {spread([r['audit_batch_mean'] for r in saturating], digits=1)} | {ok} |"
        )
    raw_saturating = [raw["saturating"] for raw in raws]
    raw_paced = [raw["paced"] for raw in raws]
    lines.append(
        f"| raw aio-pika pipeline ({len(raws)} runs) | 1 | {spread([r['throughput'] for r in raw_saturating])} | | 1.00 | "
        f"{spread([system_cpu_ms(r) for r in raw_saturating], digits=1)} | {spread([our_share(r) for r in raw_saturating], digits=2)} | "
        f"{spread([2000 / system_cpu_ms(r) for r in raw_saturating])} | "
        f"{spread([r['latency']['audited']['p50'] for r in raw_paced], 1000)} / {spread([r['latency']['audited']['p99'] for r in raw_paced], 1000)} | "
        f"{spread([r['latency']['done']['p50'] for r in raw_paced], 1000)} / {spread([r['latency']['done']['p99'] for r in raw_paced], 1000)} | | | |"
    )
    lines += [
        "",
        "Where the time goes: stage latencies of the paced runs, p50 / p99 ms from publish (medians over rounds):",
        "",
        "| ledger | replicas | " + " | ".join(STAGE_TITLES[stage] for stage in STAGES) + " |",
        "|---|---:|" + "---:|" * len(STAGES),
    ]
    for backend, replicas, group in grouped(configs):
        cells = [
            f"{median([c['paced']['latency'][s]['p50'] for c in group]) * 1000:.0f} / "
            f"{median([c['paced']['latency'][s]['p99'] for c in group]) * 1000:.0f}"
            for s in STAGES
        ]
        lines.append(f"| {backend} | {replicas} | " + " | ".join(cells) + " |")
    rows = [(backend, replicas, [c["saturating"] for c in group]) for backend, replicas, group in grouped(configs)]
    rows.append(("raw pipeline", 1, raw_saturating))
    names: list[str] = []
    for _, _, runs in rows:
        for run in runs:
            names += [name for name in cpu_ms_per_submission(run) if name not in names]
    lines += [
        "",
        "Where the CPU goes in the saturating runs: ms per submission (medians over rounds; all processes of a role "
        "together; rabbitmq and postgresql are the whole services, which others use too; `other processes` is the "
        "rest of the machine's busy time, i.e. other people's work: the noise):",
        "",
        "| ledger | replicas | " + " | ".join(names) + " | machine busy, cores |",
        "|---|---:|" + "---:|" * (len(names) + 1),
    ]
    for backend, replicas, runs in rows:
        cells = " | ".join(
            f"{median([cpu_ms_per_submission(run)[name] for run in runs if name in cpu_ms_per_submission(run)]):.1f}"
            if any(name in cpu_ms_per_submission(run) for run in runs) else "-"
            for name in names
        )  # fmt: skip
        cores = median([run["cpu_seconds"]["machine busy"] / run["cpu_seconds"]["wall"] for run in runs])
        lines.append(f"| {backend} | {replicas} | {cells} | {cores:.2f} |")
    drains = results.get("drains") or []
    if drains:
        lines += [
            "",
            f"The single writer alone: {drains[0]['entries']:,} submissions published while nothing consumed the audit "
            "queue, then drained by one consumer (rate from the first to the last append; CPU of the worker process):",
            "",
            "| consumer of `mshale.audit` | entries/s | CPU ms per entry | entries per append |",
            "|---|---:|---:|---:|",
        ]
        for drain in drains:
            cpu = "-" if drain["cpu_ms_per_entry"] != drain["cpu_ms_per_entry"] else f"{drain['cpu_ms_per_entry']:.2f}"
            batch = "-" if drain["batch_mean"] != drain["batch_mean"] else f"{drain['batch_mean']:.0f}"
            lines.append(f"| {drain['consumer']} | {drain['entries_per_s']:,.0f} | {cpu} | {batch} |")
    lines += [
        "",
        "Figures: `benchmarks/figures/load_throughput.png`, `load_latency.png`, `load_cpu.png`, `load_queues.png`; "
        "every number in `benchmarks/figures/load_scale.json`.",
        "",
    ]
    return "\n".join(lines)


def figures(results: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    configs = results["configurations"]
    raws = results["raw"]
    groups = grouped(configs)
    backends = list(dict.fromkeys(backend for backend, _, _ in groups))
    replica_counts = sorted({replicas for _, replicas, _ in groups})
    paths = []

    def series(backend: str, value: Any) -> tuple[list[int], list[float], list[float], list[float]]:
        xs, mids, lows, highs = [], [], [], []
        for b, replicas, group in groups:
            if b != backend:
                continue
            values = [value(config) for config in group]
            xs.append(replicas)
            mids.append(median(values))
            lows.append(median(values) - min(values))
            highs.append(max(values) - median(values))
        return xs, mids, lows, highs

    # Throughput by replicas (median, range over rounds), with the raw pipeline's runs as a band.
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4))
    for backend in backends:
        xs, mids, lows, highs = series(backend, lambda c: c["saturating"]["throughput"])
        left.errorbar(xs, mids, yerr=[lows, highs], marker="o", capsize=3, label=f"{backend} ledger")
        xs, mids, lows, highs = series(backend, lambda c: ratio_to_one_replica(configs, c))
        middle.errorbar(xs, mids, yerr=[lows, highs], marker="o", capsize=3, label=f"{backend} ledger")
        xs, mids, lows, highs = series(backend, lambda c: system_cpu_ms(c["saturating"]))
        right.errorbar(xs, mids, yerr=[lows, highs], marker="o", capsize=3, label=f"{backend} ledger")
    raw_values = [raw["saturating"]["throughput"] for raw in raws]
    left.axhspan(min(raw_values) * 0.99, max(raw_values) * 1.01, color="grey", alpha=0.3, label="raw aio-pika pipeline")
    raw_cpu = [system_cpu_ms(raw["saturating"]) for raw in raws]
    right.axhspan(min(raw_cpu) * 0.99, max(raw_cpu) * 1.01, color="grey", alpha=0.3, label="raw aio-pika pipeline")
    left.set(ylabel="submissions/s, end to end", title="Saturating throughput")
    middle.axhline(1.0, color="grey", linewidth=0.8)
    middle.set(ylabel="throughput / 1 replica, same round", title="Scaling with replicas")
    right.set(ylabel="CPU ms per submission", title="CPU cost (workers, generator, broker, db)")
    for axis in (left, middle, right):
        axis.set_xticks(replica_counts)
        axis.set_xlabel("replicas per worker role")
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=8)
    paths.append(_save(fig, "load_throughput.png"))

    # Latency, paced: publish -> audit append p50 / p99.
    fig, axis = plt.subplots(figsize=(7, 4))
    for backend in backends:
        for quantile, style in (("p50", "-"), ("p99", "--")):
            xs, mids, lows, highs = series(backend, lambda c, q=quantile: c["paced"]["latency"]["audited"][q] * 1000)
            axis.errorbar(xs, mids, yerr=[lows, highs], fmt=style, marker="o", capsize=3, label=f"{backend} {quantile}")
    for quantile, style in (("p50", "-"), ("p99", "--")):
        values = [raw["paced"]["latency"]["audited"][quantile] * 1000 for raw in raws]
        axis.axhline(median(values), color="grey", linestyle=style, linewidth=1, label=f"raw pipeline {quantile}")
    axis.set(xlabel="replicas per worker role", ylabel="ms (log scale)", yscale="log",
             title=f"Publish -> audit append at {results['rate']:.0f} submissions/s (paced)")  # fmt: skip
    axis.set_xticks(replica_counts)
    axis.legend(fontsize=8, ncol=2)
    paths.append(_save(fig, "load_latency.png"))

    # CPU per submission by process group (first round of each configuration, then the raw runs).
    # Other people's work is written above each bar rather than stacked: it dwarfs the rest.
    fig, axis = plt.subplots(figsize=(11, 4))
    labels = [f"{backend[:6]}\n{replicas}x" for backend, replicas, _ in groups] + ["raw" for _ in raws]
    runs = [group[0]["saturating"] for _, _, group in groups] + [raw["saturating"] for raw in raws]
    names: list[str] = []
    for run in runs:
        names += [name for name in cpu_ms_per_submission(run) if name not in names and name != "other processes"]
    bottom = [0.0] * len(runs)
    for name in names:
        values = [cpu_ms_per_submission(run).get(name, 0.0) for run in runs]
        axis.bar(range(len(runs)), values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for index, run in enumerate(runs):
        other = cpu_ms_per_submission(run).get("other processes", 0.0)
        axis.annotate(f"+{other:.0f}\nothers", (index, bottom[index]), ha="center", va="bottom", fontsize=7, color="grey")
    axis.set_ylim(0, max(bottom) * 1.35)
    axis.set_xticks(range(len(runs)), labels, fontsize=8)
    axis.set(ylabel="CPU ms per submission",
             title="Where the CPU goes (saturating runs; grey: other people's work on the machine meanwhile)")  # fmt: skip
    axis.legend(fontsize=7, ncol=4, loc="upper right")
    paths.append(_save(fig, "load_cpu.png"))

    # Queue backlogs over time in the saturating runs (first round).
    fig, axes = plt.subplots(len(backends), len(replica_counts), figsize=(4 * len(replica_counts), 3.2 * len(backends)),
                             squeeze=False, sharey=True)  # fmt: skip
    for row, backend in enumerate(backends):
        for column, replicas in enumerate(replica_counts):
            axis = axes[row][column]
            match = [group for b, r, group in groups if b == backend and r == replicas]
            if not match:
                continue
            depths = match[0][0]["saturating"]["queue_depths"]
            for index, queue in enumerate(QUEUES):
                axis.plot([sample[0] for sample in depths], [sample[index + 1] for sample in depths], label=queue.split(".")[1])
            axis.set_title(f"{backend}, {replicas} replica(s) per role", fontsize=9)
            axis.set_xlabel("s since the first publish", fontsize=8)
            if column == 0:
                axis.set_ylabel("messages ready")
            axis.legend(fontsize=7)
    paths.append(_save(fig, "load_queues.png"))
    return paths


def _save(fig: Any, name: str) -> Path:
    from mshale_fl.fileio import write_atomic

    path = FIGURES / name
    fig.tight_layout()
    write_atomic(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def machine_info() -> dict[str, str]:
    from sqlalchemy import create_engine, text

    from mshale_fl.testing.postgres import POSTGRES_ADMIN_URL
    from mshale_fl.testing.machine import describe
    from mshale_fl.testing.rabbitmq import management_client

    try:
        with management_client() as client:
            rabbitmq = client.get("/api/overview").json().get("rabbitmq_version", "unknown")
    except Exception:
        rabbitmq = "unknown"
    try:
        engine = create_engine(POSTGRES_ADMIN_URL)
        with engine.connect() as connection:
            postgresql = str(connection.execute(text("SHOW server_version")).scalar())
        engine.dispose()
    except Exception:
        postgresql = "unknown"
    return {"machine": describe(), "rabbitmq": rabbitmq, "postgresql": postgresql}


# -- main ----------------------------------------------------------------------------------------


@dataclass
class Options:
    partners: int
    events: int
    replicas: list[int]
    backends: list[str]
    rate: float | None
    paced_seconds: float
    rounds: int
    drain: bool


async def run_all(options: Options) -> dict[str, Any]:
    rate = options.rate
    configurations: list[dict[str, Any]] = []
    raws: list[dict[str, Any]] = []
    for round_number in range(options.rounds):
        # Odd rounds go through the replica counts backwards, so a drift of the machine's load over
        # the run does not always favour the same end.
        replica_order = options.replicas if round_number % 2 == 0 else list(reversed(options.replicas))
        for backend in options.backends:
            for replicas in replica_order:
                print(f"[{datetime.now():%H:%M:%S}] round {round_number + 1}: {backend} ledger, {replicas} replica(s) per role ...",
                      file=sys.stderr, flush=True)  # fmt: skip
                config = await worker_configuration(backend, replicas, options.partners, options.events, rate, options.paced_seconds)
                config["round"] = round_number
                rate = rate or config["paced"]["rate_offered"]
                configurations.append(config)
                s, p = config["saturating"], config["paced"]
                print(
                    f"    saturating {s['throughput']:.0f}/s, {system_cpu_ms(s):.1f} CPU ms each, share {our_share(s):.2f} "
                    f"(checks {'ok' if s['check_ok'] else s['problems']}); paced {rate:.0f}/s: audit p50 "
                    f"{p['latency']['audited']['p50'] * 1000:.0f} ms, p99 {p['latency']['audited']['p99'] * 1000:.0f} ms "
                    f"(checks {'ok' if p['check_ok'] else p['problems']}); start-up {config['startup_s']:.0f} s",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
            print(f"[{datetime.now():%H:%M:%S}] round {round_number + 1}: raw aio-pika pipeline ...", file=sys.stderr, flush=True)
            assert rate is not None
            raw = await raw_configuration(options.partners, options.events, rate, options.paced_seconds)
            raw["round"] = round_number
            raws.append(raw)
            print(
                f"    saturating {raw['saturating']['throughput']:.0f}/s, {system_cpu_ms(raw['saturating']):.1f} CPU ms each; "
                f"paced audit p50 {raw['paced']['latency']['audited']['p50'] * 1000:.0f} ms",
                file=sys.stderr, flush=True,
            )  # fmt: skip
    assert rate is not None
    drains = []
    if options.drain:
        for prefetch in (64, 1024, None):
            print(f"[{datetime.now():%H:%M:%S}] single writer: audit queue drained by "
                  f"{'a raw consumer' if prefetch is None else f'the audit worker, prefetch {prefetch}'} ...", file=sys.stderr, flush=True)  # fmt: skip
            drain = await audit_drain(options.partners, options.events, prefetch)
            drains.append(drain)
            print(f"    {drain['entries_per_s']:.0f} entries/s, {drain['cpu_ms_per_entry']:.2f} CPU ms per entry, "
                  f"{drain['batch_mean']:.0f} entries per append", file=sys.stderr, flush=True)  # fmt: skip
    return {"configurations": configurations, "raw": raws, "rate": rate, "drains": drains}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, help="simulated partners (default 8; --quick 4)")
    parser.add_argument("--events", type=int, help="submissions per saturating run (default 3000; --quick 400)")
    parser.add_argument("--replicas", help="replica counts per role, comma-separated (default 1,2,4; --quick 1,2)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="ledger backends (default sqlite,postgresql)")
    parser.add_argument("--rate", default="auto", help="paced submissions/s, or auto (half the first saturating throughput)")
    parser.add_argument("--paced-seconds", type=float, help="length of each paced run (default 20 s; --quick 8 s)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole series, interleaved (medians reported)")
    parser.add_argument("--no-drain", action="store_true", help="skip the single-writer (audit queue drain) runs")
    parser.add_argument("--quick", action="store_true", help="a small run: 4 partners, 400 events, replicas 1,2, 8 s paced")
    parser.add_argument("--no-write", action="store_true", help="print only; write no figures and nothing to BENCHMARKS.md")
    parser.add_argument("--json-out", type=Path, help="also save every number to this file")
    parser.add_argument("--from-json", type=Path, help="no run: render the report and figures of a saved run")
    parser.add_argument("--raw-consumer", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prefetch", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw_consumer:
        raw_consumer_main(args.raw_consumer, args.url, args.expect, args.out, args.prefetch)
        return

    from mshale_fl.logging import configure_logging

    configure_logging("WARNING")
    defaults = {"partners": 8, "events": 3000, "replicas": "1,2,4", "paced_seconds": 20.0}
    if args.quick:
        defaults = {"partners": 4, "events": 400, "replicas": "1,2", "paced_seconds": 8.0}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown ledger backend(s) {sorted(unknown)}: use sqlite and/or postgresql")
    options = Options(
        partners=args.partners,
        events=args.events,
        replicas=[int(value) for value in args.replicas.split(",")],
        backends=backends,
        rate=None if args.rate == "auto" else float(args.rate),
        paced_seconds=args.paced_seconds,
        rounds=args.rounds,
        drain=not args.no_drain,
    )
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        command = " ".join(argv if argv is not None else sys.argv[1:])
        load_before = load_average()
        results = asyncio.run(run_all(options))
        results.update(
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            machine=machine_info(),
            partners=options.partners,
            command=command,
            load_before=load_before,
            load_after=load_average(),
        )
        if args.json_out:
            from mshale_fl.fileio import write_atomic

            write_atomic(args.json_out, json.dumps(results, indent=1, default=str))
    section = markdown(results)
    print(section)
    if args.no_write:
        return
    from mshale_fl.fileio import write_atomic

    paths = figures(results)
    write_atomic(FIGURES / "load_scale.json", json.dumps(results, indent=1, default=str))
    benchmarks = ROOT / "BENCHMARKS.md"
    existing = benchmarks.read_text() if benchmarks.exists() else "# Benchmarks\n"
    write_atomic(benchmarks, existing.rstrip("\n") + "\n\n" + section)
    print(f"wrote {', '.join(str(p.relative_to(ROOT)) for p in paths)}, appended to BENCHMARKS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
