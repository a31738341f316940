"""Seconds per training round: our RabbitMQ grid beside Flower's own deployment, same machine, same run.

    .venv/bin/python benchmarks/grid_round_time.py [--rounds 5] [--repeats 1] [--no-write] [--keep DIR]

Both sides run the same ServerApp (agents/mishale/server_app.py) and ClientApp
(agents/partner/client_app.py), as real processes, with the same model (models/mshale1_v0.pt),
three partners with the same tiny Tier 3 corpora (24 protocols each, tests/federation/corpora.py),
the same rounds and the same DP-SGD settings (server epsilon 1.0, partner epsilon 0.5, FedProx
mu 0.01, batch 8, 1 local epoch, lr 0.05, clipping 1.0):

- ours: `mshale-fl serve` on an `AmqpGrid` and three `mshale-fl join` processes (PartnerNode), over
  the real RabbitMQ on 127.0.0.1:5672 in a throw-away vhost, with an SQLite ledger (reservations);
  the ledger worker is not run (nothing in a round waits for it);
- Flower: `flower-superlink`, three `flower-supernode`s (loopback, insecure) and `flwr run`, as in
  tests/federation/test_flower_deployment.py (no ledger, events only logged).

The sides alternate: ours, Flower, ours (`--repeats N`: N Flower trials, ours before each and after
the last). Ours takes seconds, Flower's minutes, so a change in the shared machine's load during a
Flower trial shows up in ours on both sides of it.

Timing (wall clock, one clock: this script's and the server's `state.json` stamps):
- start-up: from launching the first process until the ServerApp begins its run (`started_at` in
  its run state), with every partner already connected: partners are started first and the
  server once all three have said hello (ours) or been activated by the SuperLink (Flower);
- round 1: `started_at` to round 1's `completed_at`; round n: round n-1's to round n's
  `completed_at`. A round is the whole plan / reserve / train / aggregate / save cycle.
The figures are the median over all rounds and the range; the ratio is Flower / ours.
CPU: user + system seconds of every process started for a trial and of all their descendants
(Flower's per-message ClientApp processes included), sampled from /proc every 0.25 s, so a
process's last quarter second may be missed; the RabbitMQ broker, shared, is not counted.

Every process runs in a session of its own and is stopped (SIGTERM, then SIGKILL of its whole
session) at the end of its trial, also on failure or Ctrl-C. Appends a section to BENCHMARKS.md
unless `--no-write`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aio_pika

from mshale_fl.federation import wire
from mshale_fl.fileio import write_atomic
from mshale_fl.ledger import (
    AgreementKind,
    AgreementTerms,
    epsilon,
    open_ledger,
    register_partner,
)
from mshale_fl.ledger.accounting import Mechanism
from mshale_fl.logging import configure_logging
from mshale_fl.testing.rabbitmq import amqp_url, temporary_vhost
from tests.federation.corpora import write_corpus

BIN = Path(sys.executable).parent
MODEL = ROOT / "models" / "mshale1_v0.pt"
PARTNERS = ("lab-a", "lab-b", "lab-c")
PROTOCOLS_PER_PARTNER = 24

SERVER_EPSILON = 1.0
PARTNER_EPSILON = 0.5
MU = 0.01
BATCH_SIZE = 8
LOCAL_EPOCHS = 1
LR = 0.05
MAX_GRAD_NORM = 1.0
ROUND_TIMEOUT = 120.0
PLAN_TIMEOUT = 60.0

READY_TIMEOUT = 120.0


class TrialFailed(RuntimeError):
    pass


# -- processes --------------------------------------------------------------------------------------


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BOOT_TIME = next(
    int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
)


def _process_table() -> dict[int, tuple[int, int, float]]:
    """pid -> (parent pid, start time in ticks since boot, user + system CPU seconds), from /proc."""
    table: dict[int, tuple[int, int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = text[text.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return table


def _program(pid: int) -> str:
    """What a process runs: the script or module of a Python process, else the executable's name."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    if Path(argv[0]).name.startswith("python"):
        rest = argv[1:]
        while rest and rest[0].startswith("-") and rest[0] != "-m":
            rest = rest[1:]
        if rest[:1] == ["-m"] and len(rest) > 1:
            return rest[1] + (f" {rest[2]}" if rest[1] == "mshale_fl.cli" and len(rest) > 2 else "")
        return Path(rest[0]).name if rest else Path(argv[0]).name
    return Path(argv[0]).name


@dataclass
class Tracked:
    program: str
    started: float  # epoch seconds
    last_seen: float
    cpu: float = 0.0


class ProcessTree:
    """Every process started from our roots, followed by sampling /proc (also after re-parenting).

    Gives the CPU seconds they used (as last seen: sampled every `interval` s, so a process's last
    moments may be missed), how long each lived, and lets the end of a trial stop each of them by
    pid (checked against its start time, so a reused pid is never hit).
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.roots: set[int] = set()
        self.processes: dict[tuple[int, int], Tracked] = {}  # (pid, start ticks) -> what we know
        self.timeline: list[tuple[float, float]] = []  # (time, CPU seconds of all so far)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process tree", daemon=True)
        self._thread.start()

    def add_root(self, pid: int) -> None:
        with self._lock:
            self.roots.add(pid)
        self.sample()

    def sample(self) -> dict[int, tuple[int, int, float]]:
        table = _process_table()
        now = time.time()
        with self._lock:
            tracked = {
                pid
                for pid, (_ppid, start, _cpu) in table.items()
                if (pid, start) in self.processes or pid in self.roots
            }
            changed = True
            while changed:  # children of tracked processes, to any depth
                changed = False
                for pid, (ppid, _start, _cpu) in table.items():
                    if ppid in tracked and pid not in tracked:
                        tracked.add(pid)
                        changed = True
            for pid in tracked:
                _ppid, start, cpu = table[pid]
                item = self.processes.get((pid, start))
                if item is None:
                    item = self.processes[(pid, start)] = Tracked(_program(pid), BOOT_TIME + start / CLOCK_TICKS, now)
                item.cpu = max(cpu, item.cpu)
                item.last_seen = now
            self.timeline.append((now, sum(item.cpu for item in self.processes.values())))
        return table

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds all tracked processes used between two moments (from the samples around them)."""
        with self._lock:
            timeline = list(self.timeline)

        def at(moment: float) -> float:
            before = [cpu for when, cpu in timeline if when <= moment]
            return before[-1] if before else 0.0

        return at(end) - at(start)

    def _alive(self, table: dict[int, tuple[int, int, float]]) -> list[int]:
        with self._lock:
            return [pid for pid, start in self.processes if pid in table and table[pid][1] == start]

    def alive(self) -> list[int]:
        return self._alive(self.sample())

    def signal_alive(self, signum: int) -> None:
        for pid in self._alive(_process_table()):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def total_cpu(self) -> float:
        with self._lock:
            return sum(item.cpu for item in self.processes.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


class Processes:
    """Processes of one trial, each in a session of its own (so helpers they start go with them)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.items: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.tree = ProcessTree()

    def start(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                args,
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.items.append((name, process))
        self.tree.add_root(process.pid)
        return process

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def check_alive(self) -> None:
        for name, process in self.items:
            if process.poll() is not None:
                raise TrialFailed(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, wait, SIGKILL: each process's session, then any descendant that left it; once each."""
        chosen, self.items = self.items, []
        self.tree.sample()
        for _name, process in chosen:
            if process.poll() is None:
                _signal_session(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _name, process in chosen:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_session(process.pid, signal.SIGKILL)
                process.wait(10)
            _signal_session(process.pid, signal.SIGKILL)  # helpers still in the session
        # Helpers in sessions of their own (Flower's SuperLink detaches its SuperExec) end with their
        # parent; give them a moment, then stop what is left by pid.
        deadline = time.monotonic() + 5
        while self.tree.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.tree.alive():
            self.tree.signal_alive(signal.SIGTERM)
            time.sleep(2)
            self.tree.signal_alive(signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        self.tree.close()


def _signal_session(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # the session (and process group) of a process we started: pgid == its pid
    except ProcessLookupError:
        pass


def _wait_for(condition: Callable[[], bool], processes: Processes, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        processes.check_alive()
        if time.monotonic() > deadline:
            raise TrialFailed(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.05)


# -- one trial ------------------------------------------------------------------------------------


@dataclass
class Trial:
    side: str
    startup: float
    rounds: list[float]
    total: float
    cpu: float
    """CPU seconds of every process of the trial, start to end."""
    cpu_per_round: float
    """CPU seconds from the run's start to the last round's end, per round."""
    programs: dict[str, tuple[int, float, float]]
    """program -> (processes, mean seconds alive, mean CPU seconds)."""
    epsilon_spent: dict[str, float] = field(default_factory=dict)
    noise_multipliers: set[float] = field(default_factory=set)

    @property
    def processes(self) -> int:
        return sum(count for count, _alive, _cpu in self.programs.values())


def _read_run(home: Path, rounds: int) -> tuple[float, list[float]]:
    """(started_at, completed_at of each round) as epoch seconds, from the server's run state."""
    (state_file,) = (home / "federation" / "runs").glob("*/state.json")
    state = json.loads(state_file.read_text())
    records = state["rounds"]
    if len(records) != rounds or any(r["failed"] or r["participants"] != list(PARTNERS) for r in records):
        raise TrialFailed(f"the run did not complete {rounds} rounds with all partners: {records}")
    started = datetime.fromisoformat(state["started_at"]).timestamp()
    return started, [datetime.fromisoformat(r["completed_at"]).timestamp() for r in records]


def _privacy(partner_homes: dict[str, Path], rounds: int) -> tuple[dict[str, float], set[float]]:
    """Each partner's epsilon spent on model version 1 (its own accountant) and the noise multipliers used."""
    spent: dict[str, float] = {}
    noise: set[float] = set()
    for partner, home in partner_homes.items():
        document = json.loads((home / "privacy" / partner / "model-1.json").read_text())
        history = [Mechanism(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in document["history"]]
        if len(history) != rounds:
            raise TrialFailed(f"{partner} recorded {len(history)} DP rounds, expected {rounds}")
        spent[partner] = epsilon(history, document["delta"])
        noise.update(round(m.noise_multiplier, 6) for m in history)
    return spent, noise


def _timing(side: str, launched: float, home: Path, rounds: int, finished: float, tree: ProcessTree,
            partner_homes: dict[str, Path]) -> Trial:  # fmt: skip
    started, completed = _read_run(home, rounds)
    durations = [b - a for a, b in zip([started, *completed[:-1]], completed, strict=True)]
    spent, noise = _privacy(partner_homes, rounds)
    by_program: dict[str, list[Tracked]] = {}
    for item in tree.processes.values():
        by_program.setdefault(item.program, []).append(item)
    programs = {
        name: (
            len(items),
            statistics.mean(i.last_seen - i.started for i in items),
            statistics.mean(i.cpu for i in items),
        )
        for name, items in sorted(by_program.items())
    }
    cpu_per_round = tree.cpu_between(started, completed[-1]) / rounds
    return Trial(side, started - launched, durations, finished - launched, tree.total_cpu(), cpu_per_round, programs,
                 spent, noise)  # fmt: skip


def corpora(root: Path) -> dict[str, Path]:
    return {
        partner: write_corpus(root / partner, PROTOCOLS_PER_PARTNER, seed=int.from_bytes(partner.encode(), "big") % 2**32)
        for partner in PARTNERS
    }  # fmt: skip


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSHALE_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.update(extra)
    return env


# ours


async def _prepare_broker(url: str) -> None:
    """The server's queues (as after any earlier `serve`), and a tap on hellos to see the partners arrive."""
    connection = await aio_pika.connect(url)
    try:
        await wire.declare_server_queues(connection)
        channel = await connection.channel()
        tap = await channel.declare_queue("bench.hello-tap", durable=False, auto_delete=False)
        await tap.bind(wire.GRID_EXCHANGE, routing_key="*.grid.hello")
    finally:
        await connection.close()


async def _hellos(url: str) -> set[str]:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue("bench.hello-tap")
        seen: set[str] = set()
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            partner = wire.partner_of_routing_key(message.routing_key or "")
            if partner:
                seen.add(partner)
        return seen
    finally:
        await connection.close()


def run_ours(root: Path, rounds: int, data: dict[str, Path]) -> Trial:
    logs = root / "logs"
    logs.mkdir(parents=True)
    processes = Processes(logs)
    with temporary_vhost(prefix="mshale-bench") as vhost:
        url = amqp_url(vhost)
        try:
            ledger_url = f"sqlite:///{root / 'ledger.sqlite3'}"
            engine = open_ledger(ledger_url)
            agreement = AgreementTerms(
                AgreementKind.TRAINING,
                valid_until=date.today() + timedelta(days=365),
                valid_from=date.today() - timedelta(days=1),
            )
            for partner in PARTNERS:
                register_partner(
                    engine,
                    partner,
                    tier=3,
                    broker=None,
                    agreements=[agreement],
                    epsilon_per_model_version=8.0,
                )
            engine.dispose()
            asyncio.run(_prepare_broker(url))
            cli = [sys.executable, "-m", "mshale_fl.cli"]
            homes = {partner: root / "partners" / partner for partner in PARTNERS}
            launched = time.time()
            for partner in PARTNERS:
                processes.start(
                    partner,
                    [*cli, "join", "--server", "127.0.0.1:5672", "--corpus", str(data[partner]), "--tier", "3",
                     "--dp-epsilon", str(PARTNER_EPSILON), "--partner-id", partner],
                    _clean_env(MSHALE_BROKER_URL=url, MSHALE_HOME=str(homes[partner])),
                    ROOT,
                )  # fmt: skip
            seen: set[str] = set()

            def all_joined() -> bool:
                seen.update(asyncio.run(_hellos(url)))
                return seen >= set(PARTNERS)

            _wait_for(all_joined, processes, READY_TIMEOUT, "three partners joining")
            server_home = root / "server"
            server = processes.start(
                "serve",
                [*cli, "serve", "--model", str(MODEL), "--rounds", str(rounds), "--min-clients", str(len(PARTNERS)),
                 "--dp-epsilon", str(SERVER_EPSILON), "--mu", str(MU), "--round-timeout", str(ROUND_TIMEOUT),
                 "--plan-timeout", str(PLAN_TIMEOUT), "--batch-size", str(BATCH_SIZE),
                 "--local-epochs", str(LOCAL_EPOCHS), "--lr", str(LR), "--max-grad-norm", str(MAX_GRAD_NORM)],
                _clean_env(MSHALE_BROKER_URL=url, MSHALE_HOME=str(server_home), MSHALE_LEDGER_URL=ledger_url),
                ROOT,
            )  # fmt: skip
            try:
                code = server.wait(READY_TIMEOUT + rounds * (ROUND_TIMEOUT + PLAN_TIMEOUT))
            except subprocess.TimeoutExpired:
                raise TrialFailed(f"serve did not finish:\n{processes.log_tail('serve')}") from None
            finished = time.time()
            if code != 0:
                raise TrialFailed(f"serve exited with {code}:\n{processes.log_tail('serve')}")
            processes.stop()
            return _timing("ours", launched, server_home, rounds, finished, processes.tree, homes)
        finally:
            processes.close()


# Flower's deployment

FLOWER_APP = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "mshale-flower-bench"
version = "1.0.0"
description = "mshale-fl apps under Flower's deployment (benchmark)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "mshale"

[tool.flwr.app.components]
serverapp = "mshale_fl.agents.mishale.server_app:app"
clientapp = "mshale_fl.agents.partner.client_app:app"

[tool.flwr.app.config]
rounds = {rounds}
min-clients = {min_clients}
dp-epsilon = {dp_epsilon}
mu = {mu}
batch-size = {batch_size}
local-epochs = {local_epochs}
lr = {lr}
max-grad-norm = {max_grad_norm}
round-timeout = {round_timeout}
plan-timeout = {plan_timeout}
model = "{model}"
home = "{home}"
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_flower(root: Path, rounds: int, data: dict[str, Path]) -> Trial:
    logs = root / "logs"
    logs.mkdir(parents=True)
    processes = Processes(logs)
    server_home = root / "server"
    app = root / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text(
        FLOWER_APP.format(
            rounds=rounds, min_clients=len(PARTNERS), dp_epsilon=SERVER_EPSILON, mu=MU, batch_size=BATCH_SIZE,
            local_epochs=LOCAL_EPOCHS, lr=LR, max_grad_norm=MAX_GRAD_NORM, round_timeout=ROUND_TIMEOUT,
            plan_timeout=PLAN_TIMEOUT, model=MODEL, home=server_home,
        )
    )  # fmt: skip
    flwr_home = root / "flwr"
    flwr_home.mkdir()
    link = _free_port()
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    env = _clean_env(FLWR_HOME=str(flwr_home))
    homes = {partner: root / "partners" / partner for partner in PARTNERS}
    try:
        launched = time.time()
        processes.start(
            "superlink",
            [str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
             "--host", "127.0.0.1", "--port", str(link)],
            env,
            root,
        )  # fmt: skip
        for partner in PARTNERS:
            config = (
                f"partner-id='{partner}' corpus='{data[partner]}' dp-epsilon={PARTNER_EPSILON} home='{homes[partner]}'"
            )
            processes.start(
                partner,
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                 "--host", "127.0.0.1", "--port", str(_free_port()), "--node-config", config],
                env,
                root,
            )  # fmt: skip
        _wait_for(
            lambda: processes.log_tail("superlink", 10**9).count("Activated node_id") >= len(PARTNERS),
            processes,
            READY_TIMEOUT,
            "three SuperNodes activated",
        )
        run = processes.start("flwr-run", [str(BIN / "flwr"), "run", ".", "bench", "--stream"], env, app)
        try:
            code = run.wait(READY_TIMEOUT + rounds * (ROUND_TIMEOUT + PLAN_TIMEOUT))
        except subprocess.TimeoutExpired:
            raise TrialFailed(f"flwr run did not finish:\n{processes.log_tail('flwr-run')}") from None
        finished = time.time()
        if code != 0:
            raise TrialFailed(f"flwr run exited with {code}:\n{processes.log_tail('flwr-run')}")
        processes.stop()
        return _timing("Flower", launched, server_home, rounds, finished, processes.tree, homes)
    finally:
        processes.close()


# -- report ---------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    import flwr

    return (
        f"{cpu}, nproc {os.cpu_count()}, {memory_kib / 2**20:.1f} GiB RAM; Python {platform.python_version()}, "
        f"Flower {flwr.__version__}; RabbitMQ on the same machine"
    )


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}"


def report(trials: list[Trial], rounds: int, command: str, load_before: str, load_after: str) -> str:
    ours = [t for t in trials if t.side == "ours"]
    flower = [t for t in trials if t.side == "Flower"]
    order = ", ".join(t.side for t in trials)
    lines = [
        f"## Seconds per round: RabbitMQ grid vs Flower's deployment — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        (
            f"Machine: {machine()}. Load average before/after: {load_before} / {load_after}. "
            "The machine is shared with other work (two cores for everything, the broker included), so absolute "
            f"times vary between runs; both sides ran in this run, alternating ({order})."
        ),
        "",
        f"Command: `{command}`",
        "",
        (
            f"Same ServerApp and ClientApp, model `models/mshale1_v0.pt` (mshale1), 3 partners with "
            f"{PROTOCOLS_PER_PARTNER} tiny Tier 3 protocols each (tests/federation/corpora.py), {rounds} round{'s' if rounds != 1 else ''}, "
            f"DP-SGD on both sides with the same settings (server epsilon {SERVER_EPSILON}, partner epsilon "
            f"{PARTNER_EPSILON}, FedProx mu {MU}, batch {BATCH_SIZE}, {LOCAL_EPOCHS} local epoch, lr {LR}, clipping "
            f"{MAX_GRAD_NORM}). All real processes: **ours** = `mshale-fl serve` (AmqpGrid, SQLite ledger) + 3 "
            "`mshale-fl join` (PartnerNode) over RabbitMQ in a throw-away vhost; **Flower** = `flower-superlink` + "
            "3 `flower-supernode` + `flwr run` on loopback. A round is plan, reserve, train, aggregate, save the "
            "model (from the server's run state: round 1 from the run's start, round n from round n-1's end). "
            "Start-up is from launching the first process to the ServerApp starting its run with all three "
            "partners connected. CPU is user + system seconds of every process started for the trial and their "
            "descendants (sampled from /proc every 0.25 s), not counting the RabbitMQ broker; per round is from the "
            "run's start to the last round's end, divided by the rounds."
        ),
        "",
        "| side | trials | start-up s | round 1 s | **median round s** | range, all rounds s | whole run s "
        + "| CPU s per round | CPU s, whole run | processes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def median(values: Iterable[float]) -> float:
        return statistics.median(list(values))

    for name, group in (("ours (RabbitMQ grid)", ours), ("Flower deployment", flower)):
        every_round = [d for t in group for d in t.rounds]
        lines.append(
            f"| {name} | {len(group)} | {median(t.startup for t in group):.1f} "
            f"| {median(t.rounds[0] for t in group):.2f} | **{median(every_round):.2f}** "
            f"| {min(every_round):.2f}–{max(every_round):.2f} | {median(t.total for t in group):.1f} "
            f"| {median(t.cpu_per_round for t in group):.1f} | {median(t.cpu for t in group):.1f} "
            f"| {median(t.processes for t in group):.0f} |"
        )
    ours_rounds = [d for t in ours for d in t.rounds]
    flower_rounds = [d for t in flower for d in t.rounds]
    lines += [
        "",
        (
            f"**Flower deployment / ours: {median(flower_rounds) / median(ours_rounds):.0f}x seconds per round** "
            f"(medians; the fastest Flower round took {min(flower_rounds) / max(ours_rounds):.0f}x the slowest of "
            f"ours); CPU per round {median(t.cpu_per_round for t in flower) / median(t.cpu_per_round for t in ours):.1f}x; "
            f"start-up {median(t.startup for t in flower) / median(t.startup for t in ours):.2f}x."
        ),
        "",
        *_notes(flower, rounds),
        "Per trial, in the order run (processes: how many of each program, mean seconds alive, mean CPU seconds):",
        "",
    ]
    for trial in trials:
        spent = ", ".join(f"{p} {e:.3f}" for p, e in trial.epsilon_spent.items())
        noise = ", ".join(f"{n:g}" for n in sorted(trial.noise_multipliers))
        programs = "; ".join(
            f"{count} `{name}` ({alive:.1f} s, {cpu:.1f} s CPU)" for name, (count, alive, cpu) in trial.programs.items()
        )
        lines.append(
            f"- {trial.side}: start-up {trial.startup:.1f} s; rounds {', '.join(f'{d:.2f}' for d in trial.rounds)} s; "
            f"CPU {trial.cpu_per_round:.1f} s per round, {trial.cpu:.1f} s in all; epsilon spent per partner "
            f"(its own accountant) {spent}, noise multiplier {noise}; processes: {programs}"
        )
    return "\n".join(lines) + "\n"


def _notes(flower: list[Trial], rounds: int) -> list[str]:
    """Where Flower's round time goes, from what was measured (and Flower's poll intervals, from its source)."""
    clientapps = [t.programs["flwr-clientapp"] for t in flower if "flwr-clientapp" in t.programs]
    if not clientapps:
        return []
    count = statistics.median(c[0] for c in clientapps)
    alive = statistics.median(c[1] for c in clientapps)
    cpu = statistics.median(c[2] for c in clientapps)
    messages = rounds * 2 * len(PARTNERS)
    return [
        (
            f"Notes: Flower's SuperNodes started {count:.0f} `flwr-clientapp` processes for {messages} messages "
            f"(each partner gets a plan query and a train instruction per round), each alive {alive:.1f} s and using "
            f"{cpu:.1f} s CPU on average: every one imports the training stack and loads and featurises its partner's "
            f"corpus again, which `mshale-fl join` does once, before it joins. That is about {count * cpu / rounds:.0f} "
            "CPU seconds per round on two cores. On top, a SuperNode that finds no message sleeps 3 s and the "
            "ServerApp's grid polls for replies every 3 s (Flower 1.42's source), twice per round (plan, then train). "
            "These corpora are tiny (24 examples, a few DP-SGD steps per round), so the figures measure transport "
            "and process overhead: with real data, local training adds the same seconds to both sides and the "
            "ratio shrinks. Start-up favours Flower because its SuperNodes load nothing until a message arrives, "
            "while `join` warms up (imports, data, a first privacy plan) before saying hello."
        ),
        "",
    ]


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="training rounds per trial (default 5)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="Flower trials (default 1); ours runs before each and after the last",
    )
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="print the section, do not append to BENCHMARKS.md",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the trials' files (logs, run states) in this folder",
    )
    args = parser.parse_args()
    configure_logging("WARNING")  # the ledger set-up's info lines would drown the progress
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be at least 1")
    if not MODEL.exists():
        parser.error(f"{MODEL} is missing")

    def on_sigterm(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through every trial's `finally`, which stops its processes

    signal.signal(signal.SIGTERM, on_sigterm)
    command = ".venv/bin/python benchmarks/grid_round_time.py" + "".join(f" {a}" for a in sys.argv[1:])
    # Ours takes seconds, Flower's minutes: ours runs before and after every Flower trial, so a change
    # in the shared machine's load during a Flower trial shows up on both sides of it.
    order = ["ours", "Flower"] * args.repeats + ["ours"]
    load_before = _load()
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="mshale-grid-bench-") as scratch:
        root = args.keep or Path(scratch)
        data = corpora(root / "corpora")
        for index, side in enumerate(order, start=1):
            trial_root = root / f"{index:02d}-{side.lower()}"
            print(f"[{index}/{len(order)}] {side}: {args.rounds} rounds ...", flush=True)
            trial = (run_ours if side == "ours" else run_flower)(trial_root, args.rounds, data)
            print(
                f"    start-up {trial.startup:.1f} s, rounds {', '.join(f'{d:.2f}' for d in trial.rounds)} s, "
                f"CPU {trial.cpu_per_round:.1f} s per round, {trial.cpu:.1f} s in all",
                flush=True,
            )
            trials.append(trial)
    section = report(trials, args.rounds, command, load_before, _load())
    print()
    print(section)
    if not args.no_write:
        target = ROOT / "BENCHMARKS.md"
        existing = target.read_text(encoding="utf-8")
        write_atomic(target, existing.rstrip("\n") + "\n\n" + section)
        print(f"appended to {target}")


if __name__ == "__main__":
    try:
        main()
    except TrialFailed as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        sys.exit(130)
