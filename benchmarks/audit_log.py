"""Audit log throughput: appends/s (local store and S3) and verification entries/s, each beside
plain `hashlib.sha256` chaining of the same records measured in the same run.

    .venv/bin/python benchmarks/audit_log.py                       # 1,000,000-entry verification
    .venv/bin/python benchmarks/audit_log.py --entries 100000 --no-s3
    .venv/bin/python benchmarks/audit_log.py --markdown >> BENCHMARKS.md

What is measured:
- append: `AuditAppender.append_batch` of pre-built events in batches (record building, the
  entry bundle written once and fsynced, the SQLite index, a signed checkpoint written once);
- verify: `verify_log` of an N-entry log in a local directory (read every bundle, parse and
  check every record, rebuild the tree, verify every checkpoint signature and the consistency
  of successive checkpoints);
- baseline: a hash chain h = SHA-256(h || record) over the same records, from memory, and
  (for verification) also reading the same bundles from disk, so the ratio shows the price of
  the Merkle tree, the canonical record checks and the signatures over the bare hash.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.checkpoint import sign_checkpoint
from mshale_fl.audit.log import TransparencyLog, decode_bundle
from mshale_fl.audit.merkle import MerkleTree, hash_leaf
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.records import AuditRecord, record_for_event
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.stores.s3 import S3Store
from mshale_fl.audit.verify import verify_log
from mshale_fl.schemas import new_event
from mshale_fl.schemas.payloads import SubmissionAccepted, UpdateMasked

ORIGIN = "mshale.bench/audit"


def make_events(count: int) -> list[Any]:
    events = []
    for number in range(count):
        if number % 2:
            payload: Any = UpdateMasked(
                run_id="run-1", round=1 + number % 20, model_version=4, digest=f"{number:064x}", epsilon_spent=0.25, delta=1e-5
            )
            events.append(new_event("update.masked", payload, partner_id=f"lab-{number % 7}"))
        else:
            payload = SubmissionAccepted(submission_id=uuid.uuid4(), kind="spec", items=1)
            events.append(new_event("submission.accepted", payload, partner_id=f"lab-{number % 7}"))
    return events


def synthetic_records(count: int) -> Iterator[bytes]:
    """Valid canonical records without building events (building 10**6 events would dominate)."""
    for number in range(count):
        update = number % 2 == 1
        yield AuditRecord(
            event_id=str(uuid.UUID(int=number + 1, version=4)),
            event_type="update.masked" if update else "submission.accepted",
            partner_id=f"lab-{number % 7}",
            occurred_at=f"2026-01-01T00:00:{number % 60:02d}.{number % 1_000_000:06d}Z",
            payload_sha256=hashlib.sha256(number.to_bytes(8, "big")).hexdigest(),
            round=1 + number % 20 if update else None,
            model_version=4 if update else None,
            dp_epsilon=0.25 if update else None,
            dp_delta=1e-5 if update else None,
        ).to_bytes()


def chain(records: list[bytes]) -> bytes:
    digest = b"\x00" * 32
    for record in records:
        digest = hashlib.sha256(digest + record).digest()
    return digest


def timed(function: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


# -- appends -------------------------------------------------------------------------------------


def bench_append(store: Any, events: list[Any], batch: int, workdir: Path, label: str) -> dict[str, Any]:
    signer = NoteSigner.generate(ORIGIN)
    records = [record_for_event(event).to_bytes() for event in events]
    chain_seconds, _ = timed(chain, records)
    with AuditAppender(store, signer, index_path=workdir / f"index-{label}.sqlite3") as appender:
        start = time.perf_counter()
        for offset in range(0, len(events), batch):
            appender.append_batch(events[offset : offset + batch])
        seconds = time.perf_counter() - start
        assert appender.size == len(events)
    batches = -(-len(events) // batch)
    return {
        "label": label,
        "events": len(events),
        "batch": batch,
        "seconds": seconds,
        "rate": len(events) / seconds,
        "batch_ms": seconds / batches * 1000,
        "chain_rate": len(records) / chain_seconds,
    }


# -- verification ----------------------------------------------------------------------------------


def build_log(store: LocalStore, count: int, checkpoint_every: int) -> tuple[NoteSigner, float]:
    """Write an N-entry log directly (same layout as the appender: a bundle and a checkpoint per batch)."""
    signer = NoteSigner.generate(ORIGIN)
    log = TransparencyLog(store)
    tree = MerkleTree()
    start = time.perf_counter()
    log.write_checkpoint(0, sign_checkpoint(signer, 0, tree.root()).note)
    batch: list[bytes] = []
    for record in synthetic_records(count):
        batch.append(record)
        if len(batch) == checkpoint_every:
            _flush(log, signer, tree, batch)
            batch = []
    if batch:
        _flush(log, signer, tree, batch)
    return signer, time.perf_counter() - start


def _flush(log: TransparencyLog, signer: NoteSigner, tree: MerkleTree, batch: list[bytes]) -> None:
    log.write_bundle(tree.size, batch)
    for record in batch:
        tree.append(hash_leaf(record))
    log.write_checkpoint(tree.size, sign_checkpoint(signer, tree.size, tree.root()).note)


def read_and_chain(log: TransparencyLog) -> int:
    digest, count = b"\x00" * 32, 0
    for start in log.bundle_starts():
        for record in log.read_bundle(start):
            digest = hashlib.sha256(digest + record).digest()
            count += 1
    return count


def bench_verify(workdir: Path, count: int, checkpoint_every: int) -> dict[str, Any]:
    store = LocalStore(workdir / "verify-log")
    signer, build_seconds = build_log(store, count, checkpoint_every)
    log = TransparencyLog(store)
    records = [record for start in log.bundle_starts() for record in decode_bundle(store.get(f"entries/{start:020d}"))]
    chain_seconds, _ = timed(chain, records)
    del records
    read_chain_seconds, chained = timed(read_and_chain, log)
    verify_seconds, report = timed(verify_log, store, signer.verifier)
    assert report.ok and report.entries == count == chained, report.summary()
    return {
        "entries": count,
        "checkpoints": report.checkpoints,
        "build_seconds": build_seconds,
        "verify_seconds": verify_seconds,
        "verify_rate": count / verify_seconds,
        "chain_rate": count / chain_seconds,
        "read_chain_rate": count / read_chain_seconds,
        "bytes": sum(path.stat().st_size for path in (workdir / "verify-log").rglob("*") if path.is_file()),
    }


# -- moto_server ------------------------------------------------------------------------------------


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("moto_server did not start")


def s3_store(endpoint: str) -> S3Store:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="bench", aws_secret_access_key="bench"
    )
    store = S3Store(f"mshale-audit-bench-{uuid.uuid4().hex[:8]}", region="eu-west-1", prefix="log/", retention_days=1, client=client)
    store.ensure_bucket()
    return store


# -- report -----------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": memory,
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": "{:.1f}".format(os.getloadavg()[0]),
    }


def markdown(
    info: dict[str, str], appends: list[dict[str, Any]], verify: dict[str, Any], rss_mib: float, load_before: str
) -> str:
    lines = [
        "## Audit transparency log (`benchmarks/audit_log.py`)",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram']} RAM, Python {info['python']}; run {info['date']} "
        f"(1-minute load average {load_before} before, {info['load']} after: the machine was shared, so absolute "
        "numbers are noisy; the ratios are measured in the same run).",
        "Baseline: `hashlib.sha256` chaining (h = SHA-256(h || record)) of the same records, same run.",
        "",
        "| appends | events | batch | events/s | ms per batch | chaining records/s | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in appends:
        lines.append(
            f"| {row['label']} | {row['events']:,} | {row['batch']} | {row['rate']:,.0f} | {row['batch_ms']:.1f} "
            f"| {row['chain_rate']:,.0f} | 1 : {row['chain_rate'] / row['rate']:,.0f} |"
        )
    lines += [
        "",
        "| verification | entries | checkpoints | seconds | entries/s | chaining (memory) /s | ratio | read + chaining /s | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| `verify_log`, local directory | {verify['entries']:,} | {verify['checkpoints']:,} | {verify['verify_seconds']:.1f} "
        f"| {verify['verify_rate']:,.0f} | {verify['chain_rate']:,.0f} | 1 : {verify['chain_rate'] / verify['verify_rate']:.1f} "
        f"| {verify['read_chain_rate']:,.0f} | 1 : {verify['read_chain_rate'] / verify['verify_rate']:.1f} |",
        "",
        f"Building the {verify['entries']:,}-entry log took {verify['build_seconds']:.1f} s "
        f"({verify['bytes'] / 1e6:,.0f} MB on disk); peak RSS of the run {rss_mib:,.0f} MiB.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries of the log to verify")
    parser.add_argument("--checkpoint-every", type=int, default=1_000, help="entries per batch/checkpoint of that log")
    parser.add_argument("--append-events", type=int, default=20_000, help="events appended to the local store")
    parser.add_argument("--s3-events", type=int, default=3_000, help="events appended to S3 (moto_server)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 100, 1000], help="append batch sizes")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 append benchmark")
    parser.add_argument("--markdown", action="store_true", help="print only the BENCHMARKS.md section")
    args = parser.parse_args()

    say = (lambda *_: None) if args.markdown else (lambda *parts: print(*parts, file=sys.stderr, flush=True))
    load_before = f"{os.getloadavg()[0]:.1f}"
    workdir = Path(tempfile.mkdtemp(prefix="mshale-audit-bench-"))
    moto = None
    try:
        appends = []
        for batch in args.batch:
            count = min(args.append_events, 2_000) if batch == 1 else args.append_events
            say(f"append {count} events to the local store, batch {batch} ...")
            row = bench_append(LocalStore(workdir / f"append-local-{batch}"), make_events(count), batch, workdir, f"local directory, batch {batch}")
            say(f"  {row['rate']:,.0f} events/s")
            appends.append(row)
        if not args.no_s3:
            moto, endpoint = start_moto()
            for batch in args.batch:
                count = min(args.s3_events, 300) if batch == 1 else args.s3_events
                say(f"append {count} events to S3 (moto_server), batch {batch} ...")
                row = bench_append(s3_store(endpoint), make_events(count), batch, workdir, f"S3 (moto_server), batch {batch}")
                say(f"  {row['rate']:,.0f} events/s")
                appends.append(row)
        say(f"build and verify a {args.entries:,}-entry log ...")
        verify = bench_verify(workdir, args.entries, args.checkpoint_every)
        say(f"  {verify['verify_rate']:,.0f} entries/s")
        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(markdown(machine(), appends, verify, rss_mib, load_before))
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
