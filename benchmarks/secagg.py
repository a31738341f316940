"""Secure aggregation cost: our SecAgg / SecAgg+ beside plaintext summation and Flower's SecAgg+, same run.

    .venv/bin/python benchmarks/secagg.py [--partners 5,10,20,50] [--sizes 10000,100000,1000000]
                                          [--repeats 1] [--threshold-fraction 0.67] [--quick]
                                          [--json] [--no-write]

For every cohort size n and vector length d, the same n float updates (and example counts) go through:

- **plaintext**: each partner sends its example-weighted update (float64 bytes) and example count;
  the server adds them up. The floor: what aggregation costs with no protection at all.
- **ours, SecAgg+** (`mshale_fl.secagg`, `neighbours=k`): quantise (`quantize_update`), the five
  stages through `simulation.run_round` (every message through its `wire` encoding), dequantise.
- **ours, complete graph** (`neighbours=None`, Bonawitz et al.): the same with every pair masking.
- **Flower SecAgg+**: Flower 1.42's own `SecAggPlusWorkflow` on the server and a `ClientApp` with
  `secaggplus_mod` per partner, connected by `InProcessGrid` below: every message is serialised to
  protobuf (`message_to_proto`) and parsed back on the other side, as a real transport would.

Matched security parameters: Flower's `num_shares` = k + 1 (each partner's share holders are its k
neighbours and itself; the graph is the same ring-lattice: Flower joins each node to the
num_shares // 2 nearest on either side of a shuffled cycle, we join k / 2 on either side), and both
use the same integer threshold t = max(2, round(fraction * (k + 1))) (complete graph: of n). Both use
a 2^32 modulus (Flower's default `modulus_range`; ours `modulus_bits=32`).
k = min(n - 1 rounded down to even, 2 * ceil(log2 n)): logarithmic degree as in Bell et al.

Timing is CPU time (`time.process_time`, robust to other load on a shared machine) of one process.
A partner's seconds are everything done on its side: its stage calls, quantising its update,
decoding what it receives and encoding what it sends (Flower: the ClientApp call with its mod,
protobuf parsing and serialising); the tables give the median over partners of the sum over stages.
The server's seconds are the rest of the round (Flower: the workflow's CPU time minus the time spent
inside the partners; ours: the server's stage calls, its encoding and decoding, and dequantising).
Bytes per partner are the serialised message sizes: ours the `wire` encodings, Flower the protobuf
`RecordDict` of each message (`recorddict_to_proto(content).ByteSize()`), plaintext the raw arrays.
Flower's fit instruction carries the global model; we give the workflow a one-element model so that
its download counts only SecAgg+ traffic, as ours does.

Every run checks its result against the plaintext weighted mean (max absolute error reported).
Appends a section to BENCHMARKS.md and writes benchmarks/figures/secagg.png unless `--no-write`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flwr  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.client import NumPyClient  # noqa: E402
from flwr.client.mod import secaggplus_mod  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402
from flwr.common.constant import SUPERLINK_NODE_ID  # noqa: E402
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage  # noqa: E402
from flwr.common.serde import message_from_proto, message_to_proto  # noqa: E402
from flwr.compat.common import recorddict_compat as compat  # noqa: E402
from flwr.proto.message_pb2 import Message as ProtoMessage  # noqa: E402
from flwr.server.client_manager import SimpleClientManager  # noqa: E402
from flwr.server.compat.grid_client_proxy import GridClientProxy  # noqa: E402
from flwr.server.compat.legacy_context import LegacyContext  # noqa: E402
from flwr.server.server_config import ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.server.workflow import SecAggPlusWorkflow  # noqa: E402
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402
from flwr.supercore.run import Run  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from mshale_fl.logging import configure_logging  # noqa: E402
from mshale_fl.secagg.protocol import RoundConfig  # noqa: E402
from mshale_fl.secagg.quantize import QuantizationConfig, dequantize_sum, quantize_update  # noqa: E402
from mshale_fl.secagg.simulation import Dropouts, make_identities, run_round  # noqa: E402

CLOCK = time.process_time
MODULUS_BITS = 32  # Flower's default modulus_range is 2**32
MAX_EXAMPLES = 1000  # Flower's default max_weight
CLIP = 1.0
RUN_ID = 7
SYSTEMS = ("plaintext", "ours SecAgg+", "ours complete", "Flower SecAgg+")


@dataclass
class Measurement:
    """One system on one cohort: medians over partners, and the server's total."""

    system: str
    partners: int
    length: int
    partner_seconds: float
    server_seconds: float
    bytes_up: int
    bytes_down: int
    max_error: float
    partner_seconds_all: list[float] = field(default_factory=list)
    round_wall_seconds: float = 0.0  # the whole round, every party in turn, wall clock


@dataclass
class Cohort:
    updates: list[np.ndarray]  # float64, in [-CLIP, CLIP]
    examples: list[int]

    def weighted_mean(self, dropped: frozenset[int] = frozenset()) -> np.ndarray:
        """The example-weighted mean of the partners (by index) that were not dropped."""
        kept = [i for i in range(len(self.updates)) if i not in dropped]
        total = sum(self.updates[i] * self.examples[i] for i in kept)
        return total / sum(self.examples[i] for i in kept)


def make_cohort(n: int, d: int, seed: int) -> Cohort:
    rng = np.random.default_rng(seed)
    updates = [rng.uniform(-0.9 * CLIP, 0.9 * CLIP, d) for _ in range(n)]
    examples = [int(x) for x in rng.integers(10, MAX_EXAMPLES + 1, n)]
    return Cohort(updates, examples)


def secagg_plus_degree(n: int) -> int:
    """Neighbours per partner: logarithmic in n (Bell et al.), even, below n."""
    return min((n - 1) // 2 * 2, 2 * math.ceil(math.log2(n)))


def threshold_of(holders: int, fraction: float) -> int:
    return max(2, round(fraction * holders))


# -- plaintext ------------------------------------------------------------------------------------


def run_plaintext(cohort: Cohort, dropped: frozenset[int] = frozenset()) -> Measurement:
    n, d = len(cohort.updates), cohort.updates[0].size
    partner_seconds, uploads = [], []
    for i, (update, examples) in enumerate(zip(cohort.updates, cohort.examples, strict=True)):
        if i in dropped:
            continue
        started = CLOCK()
        message = (update * examples).tobytes() + examples.to_bytes(8, "big")
        partner_seconds.append(CLOCK() - started)
        uploads.append(message)
    started = CLOCK()
    total = np.zeros(d)
    count = 0
    for message in uploads:
        total += np.frombuffer(message[:-8], dtype=np.float64)
        count += int.from_bytes(message[-8:], "big")
    mean = total / count
    server_seconds = CLOCK() - started
    error = float(np.max(np.abs(mean - cohort.weighted_mean(dropped))))
    return Measurement("plaintext", n, d, statistics.median(partner_seconds), server_seconds,
                       len(uploads[0]), 0, error, partner_seconds)  # fmt: skip


# -- ours -----------------------------------------------------------------------------------------


class LazyQuantized(Mapping):
    """partner -> its quantised update, computed when the round asks for it (inside its timing)."""

    def __init__(self, updates: dict[str, tuple[np.ndarray, int]], quantization: QuantizationConfig,
                 rng: np.random.Generator) -> None:  # fmt: skip
        self.updates, self.quantization, self.rng = updates, quantization, rng

    def __getitem__(self, partner: str) -> np.ndarray:
        update, examples = self.updates[partner]
        return quantize_update(update, examples, self.quantization, self.rng)

    def __iter__(self):  # noqa: ANN204
        return iter(self.updates)

    def __len__(self) -> int:
        return len(self.updates)


def run_ours(cohort: Cohort, neighbours: int | None, threshold: int, seed: int,
             dropped: frozenset[int] = frozenset()) -> Measurement:  # fmt: skip
    n, d = len(cohort.updates), cohort.updates[0].size
    ids = tuple(f"partner-{i:02d}" for i in range(n))
    quantization = QuantizationConfig(modulus_bits=MODULUS_BITS, clip=CLIP, max_examples=MAX_EXAMPLES,
                                      max_partners=max(n, 50))  # fmt: skip
    config = RoundConfig(round_id=f"bench-{seed}".encode(), partner_ids=ids, threshold=threshold,
                         vector_length=d + 1, modulus_bits=MODULUS_BITS, neighbours=neighbours)  # fmt: skip
    identities = make_identities(ids)  # long-term keys, registered before any round: not timed
    rng = np.random.default_rng(seed)
    updates = dict(zip(ids, zip(cohort.updates, cohort.examples, strict=True), strict=True))
    # Each partner quantises its update when it masks it, inside its timed stage, and the quantised
    # vector is dropped afterwards: partners are separate machines, so the harness should not hold
    # all n quantised vectors at once (Flower's ClientApp likewise quantises inside its stage).
    inputs = LazyQuantized(updates, quantization, rng)
    dropouts = Dropouts(before_masked_input=frozenset(ids[i] for i in dropped))
    result = run_round(config, inputs, dropouts, identities=identities, clock=CLOCK)
    started = CLOCK()
    mean = dequantize_sum(result.total, quantization).weighted_mean
    server_seconds = result.server_seconds + CLOCK() - started
    survivors = [p for i, p in enumerate(ids) if i not in dropped]
    partner_seconds = [result.partner_seconds[p] for p in survivors]
    error = float(np.max(np.abs(mean - cohort.weighted_mean(dropped))))
    name = "ours complete" if neighbours is None else "ours SecAgg+"
    return Measurement(name, n, d, statistics.median(partner_seconds), server_seconds,
                       int(statistics.median(result.bytes_uploaded[p] for p in survivors)),
                       int(statistics.median(result.bytes_downloaded[p] for p in survivors)), error,
                       partner_seconds)  # fmt: skip


# -- Flower ---------------------------------------------------------------------------------------


class InProcessGrid(Grid):
    """A Flower Grid whose nodes are ClientApps in this process.

    Each instruction is serialised to protobuf bytes, parsed back, handed to the node's ClientApp
    with that node's persistent Context, and the reply goes the same way back, so server and client
    share no objects, as over a real transport. The time spent on the node's side (parse, ClientApp,
    serialise) and the content bytes each way are recorded per node.
    """

    def __init__(self, app: ClientApp, node_ids: list[int], vanish_at: Mapping[int, str] | None = None) -> None:
        self.app = app
        self.node_ids = list(node_ids)
        # node -> SecAgg+ stage whose instruction it never answers (nor anything after): a dropout
        self.vanish_at = dict(vanish_at or {})
        self._vanished: set[int] = set()
        self.contexts = {
            nid: Context(run_id=RUN_ID, node_id=nid, node_config={}, state=RecordDict(), run_config={})
            for nid in self.node_ids
        }
        self.node_seconds = dict.fromkeys(self.node_ids, 0.0)
        self.bytes_down = dict.fromkeys(self.node_ids, 0)
        self.bytes_up = dict.fromkeys(self.node_ids, 0)
        self._run = Run.create_empty(RUN_ID)
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return Run(**vars(self._run))

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:  # fmt: skip
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            ids.append(message.metadata.message_id)
            node = message.metadata.dst_node_id
            stage = message.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE)
            if node in self._vanished or self.vanish_at.get(node) == stage:
                self._vanished.add(node)
                continue  # no reply, ever
            self._replies[message.metadata.message_id] = self._deliver(message)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))

    def _deliver(self, instruction: Message) -> Message:
        proto = message_to_proto(instruction)  # server side: serialise
        body = proto.SerializeToString()
        node = instruction.metadata.dst_node_id
        self.bytes_down[node] += proto.content.ByteSize()
        started = CLOCK()
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, node, 0
        received = ProtoMessage()
        received.ParseFromString(body)
        reply = self.app(message_from_proto(received), self.contexts[node])
        reply_proto = message_to_proto(reply)
        reply_body = reply_proto.SerializeToString()
        self.node_seconds[node] += CLOCK() - started
        self.bytes_up[node] += reply_proto.content.ByteSize()
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, SUPERLINK_NODE_ID, 1
        back = ProtoMessage()  # server side: parse the reply
        back.ParseFromString(reply_body)
        return message_from_proto(back)


class BenchClient(NumPyClient):
    """`fit` returns this partner's precomputed update: no training is timed."""

    def __init__(self, update: np.ndarray, examples: int) -> None:
        self.update, self.examples = update, examples

    def fit(self, parameters, config):  # noqa: ANN001, ANN201 (Flower's signature)
        return [self.update], self.examples, {}


def run_flower(cohort: Cohort, num_shares: int, threshold: int, seed: int,
               dropped: frozenset[int] = frozenset()) -> Measurement:  # fmt: skip
    n, d = len(cohort.updates), cohort.updates[0].size
    node_ids = [1000 + i for i in range(n)]
    by_node = dict(zip(node_ids, zip(cohort.updates, cohort.examples, strict=True), strict=True))

    def client_fn(context: Context):  # noqa: ANN202
        update, examples = by_node[context.node_id]
        return BenchClient(update, examples).to_client()

    vanish_at = {node_ids[i]: Stage.COLLECT_MASKED_VECTORS for i in dropped}
    grid = InProcessGrid(ClientApp(client_fn=client_fn, mods=[secaggplus_mod]), node_ids, vanish_at)
    manager = SimpleClientManager()
    for nid in node_ids:
        manager.register(GridClientProxy(node_id=nid, grid=grid, run_id=RUN_ID))
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n, fraction_evaluate=0.0)
    context = LegacyContext(Context(run_id=RUN_ID, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(),
                                    run_config={}), config=ServerConfig(num_rounds=1), strategy=strategy,
                            client_manager=manager)  # fmt: skip
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({"current_round": 1})
    # A one-element global model: the fit instruction then carries SecAgg+ traffic only (see docstring).
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([np.zeros(1)]), keep_input=True
    )
    workflow = SecAggPlusWorkflow(num_shares=num_shares, reconstruction_threshold=threshold,
                                  max_weight=float(MAX_EXAMPLES), clipping_range=CLIP,
                                  modulus_range=1 << MODULUS_BITS)  # fmt: skip
    # Message(...) reads the process-wide TaskIdentity (as Flower's runtime sets it for a ServerApp);
    # put back whatever was there, so that the harness leaves no trace in a test session.
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)  # may be unset (None)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, SUPERLINK_NODE_ID, 1
    random.seed(seed)  # the workflow shuffles nodes onto its ring with the `random` module
    try:
        started = CLOCK()
        workflow(grid, context)
        round_seconds = CLOCK() - started
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
    record: ArrayRecord = context.state.array_records[MAIN_PARAMS_RECORD]
    mean = parameters_to_ndarrays(compat.arrayrecord_to_parameters(record, keep_input=True))[0]
    if mean.shape != (d,):
        raise RuntimeError(f"Flower's SecAgg+ round did not finish (result shape {mean.shape})")
    survivors = [nid for i, nid in enumerate(node_ids) if i not in dropped]
    partner_seconds = [grid.node_seconds[nid] for nid in survivors]
    error = float(np.max(np.abs(mean - cohort.weighted_mean(dropped))))
    return Measurement("Flower SecAgg+", n, d, statistics.median(partner_seconds),
                       round_seconds - sum(grid.node_seconds.values()),
                       int(statistics.median(grid.bytes_up[nid] for nid in survivors)),
                       int(statistics.median(grid.bytes_down[nid] for nid in survivors)), error,
                       partner_seconds)  # fmt: skip


# -- driver ---------------------------------------------------------------------------------------


def dropped_partners(n: int, fraction: float) -> frozenset[int]:
    """Indices of the partners that vanish before the masked-input stage (at least one if fraction > 0)."""
    if fraction <= 0:
        return frozenset()
    return frozenset(range(max(1, round(fraction * n))))


def measure(n: int, d: int, repeats: int, fraction: float, dropout: float = 0.0) -> dict[str, Measurement]:
    """Every system on the same cohort, interleaved `repeats` times; medians over repeats."""
    k = secagg_plus_degree(n)
    t_plus, t_full = threshold_of(k + 1, fraction), threshold_of(n, fraction)
    dropped = dropped_partners(n, dropout)
    runs: dict[str, list[Measurement]] = {s: [] for s in SYSTEMS}
    for repeat in range(repeats):
        cohort = make_cohort(n, d, seed=1000 * n + repeat)
        systems = {
            "plaintext": lambda: run_plaintext(cohort, dropped),
            "ours SecAgg+": lambda: run_ours(cohort, k, t_plus, repeat, dropped),
            "ours complete": lambda: run_ours(cohort, None, t_full, repeat, dropped),
            "Flower SecAgg+": lambda: run_flower(cohort, k + 1, t_plus, repeat, dropped),
        }
        for system, run in systems.items():
            started = time.perf_counter()
            measurement = run()
            measurement.round_wall_seconds = time.perf_counter() - started
            runs[system].append(measurement)
        del cohort, systems
    out = {}
    for system, ms in runs.items():
        out[system] = Measurement(
            system, n, d,
            statistics.median(m.partner_seconds for m in ms),
            statistics.median(m.server_seconds for m in ms),
            int(statistics.median(m.bytes_up for m in ms)),
            int(statistics.median(m.bytes_down for m in ms)),
            max(m.max_error for m in ms),
            [s for m in ms for s in m.partner_seconds_all],
            statistics.median(m.round_wall_seconds for m in ms),
        )  # fmt: skip
    return out


def machine() -> dict[str, str]:
    cpu, ram = platform.processor() or "unknown", "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    import cryptography

    return {"nproc": str(len(os.sched_getaffinity(0))), "cpu": cpu, "ram": ram, "python": platform.python_version(),
            "numpy": np.__version__, "cryptography": cryptography.__version__, "flwr": flwr.__version__}  # fmt: skip


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def human_bytes(count: int) -> str:
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def seconds(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"


def report(results: list[dict[str, Measurement]], info: dict[str, str], args: argparse.Namespace,
           started: datetime, wall: float, loads: tuple[str, str]) -> str:  # fmt: skip
    lines = [
        "",
        f"## Secure aggregation: ours vs Flower's SecAgg+ (`benchmarks/secagg.py`) — {started:%Y-%m-%d %H:%M} UTC",
        "",
        (
            f"Machine: {info['cpu']}, nproc {info['nproc']}, {info['ram']} RAM; Python {info['python']}, "
            f"numpy {info['numpy']}, cryptography {info['cryptography']}, Flower {info['flwr']}. Load average "
            f"before / after: {loads[0]} / {loads[1]} (shared machine: CPU time, and ratios from the same run). "
            f"Whole run {wall / 60:.1f} min of wall time; {args.repeats} repeat(s) per cell, systems interleaved."
        ),
        (
            "One process, CPU time (`time.process_time`). Partner s: median over partners of everything on the "
            "partner's side over all stages (quantising, stage calls, decoding and encoding its messages; Flower: "
            "the ClientApp with `secaggplus_mod` plus protobuf parse and serialise). Server s: the rest of the "
            "round. Bytes: per partner (median), serialised messages: ours `wire` encodings, Flower protobuf "
            "`RecordDict`s. Modulus 2^32 for both; SecAgg+ degree k = min(n - 1, 2 ceil(log2 n)) rounded to even, "
            f"Flower `num_shares` = k + 1; threshold t = round({args.threshold_fraction} x share holders) for both. "
            f"{dropout_text(args.dropouts)} Error: max |result - plaintext weighted mean of the survivors|. "
            "Round wall s: the whole round with every party in turn in this one process (wall clock, so it "
            "includes waiting for the shared CPUs, and memory faults the guest's CPU time does not see)."
        ),
        "",
        "| n | d | k | t (SecAgg+ / complete) | system | partner s | server s | round wall s | up / partner | down / partner | error |",
        "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in results:
        any_m = cell["plaintext"]
        n, d = any_m.partners, any_m.length
        k = secagg_plus_degree(n)
        thresholds = f"{threshold_of(k + 1, args.threshold_fraction)} / {threshold_of(n, args.threshold_fraction)}"
        for system in SYSTEMS:
            m = cell[system]
            lines.append(
                f"| {n} | {d:,} | {k} | {thresholds} | {system} | {seconds(m.partner_seconds)} | "
                f"{seconds(m.server_seconds)} | {seconds(m.round_wall_seconds)} | {human_bytes(m.bytes_up)} | "
                f"{human_bytes(m.bytes_down)} | "
                f"{m.max_error:.1e} |"
            )
    lines += [
        "",
        "Ratios in the same run, **ours / Flower SecAgg+** (below 1: ours is cheaper):",
        "",
        "| n | d | partner s, SecAgg+ | server s, SecAgg+ | round wall, SecAgg+ | up, SecAgg+ | down, SecAgg+ | partner s, complete | server s, complete | ours SecAgg+ partner / plaintext |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in results:
        plus, full, fl, plain = (cell[s] for s in ("ours SecAgg+", "ours complete", "Flower SecAgg+", "plaintext"))
        lines.append(
            f"| {plus.partners} | {plus.length:,} | **{ratio(plus.partner_seconds, fl.partner_seconds)}** | "
            f"**{ratio(plus.server_seconds, fl.server_seconds)}** | "
            f"{ratio(plus.round_wall_seconds, fl.round_wall_seconds)} | {ratio(plus.bytes_up, fl.bytes_up)} | "
            f"{ratio(plus.bytes_down, fl.bytes_down)} | {ratio(full.partner_seconds, fl.partner_seconds)} | "
            f"{ratio(full.server_seconds, fl.server_seconds)} | {ratio(plus.partner_seconds, plain.partner_seconds)} |"
        )
    command = "`.venv/bin/python benchmarks/secagg.py " + " ".join(
        [f"--partners {','.join(map(str, args.partners))}", f"--sizes {','.join(map(str, args.sizes))}",
         f"--repeats {args.repeats}", f"--threshold-fraction {args.threshold_fraction}"]
        + ([f"--dropouts {args.dropouts}"] if args.dropouts else [])) + "`"  # fmt: skip
    lines += ["", f"Command: {command}. Figure: `benchmarks/figures/{figure_name(args.dropouts)}`.", ""]
    return "\n".join(lines)


def dropout_text(fraction: float) -> str:
    if fraction <= 0:
        return "No dropouts."
    return (f"Dropouts: max(1, round({fraction} n)) partners vanish before the masked-input stage (after "
            "sharing keys), so the server must rebuild their pairwise masks; medians over the survivors.")  # fmt: skip


def figure_name(dropout: float) -> str:
    return "secagg_dropouts.png" if dropout > 0 else "secagg.png"


def figure(results: list[dict[str, Measurement]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)

    def short(d: int) -> str:
        return f"{d // 1_000_000}M" if d >= 1_000_000 else f"{d // 1000}k"

    labels = [f"n={c['plaintext'].partners}\nd={short(c['plaintext'].length)}" for c in results]
    x = np.arange(len(results))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.75 * len(results) + 3), 4.2), sharey=True)
    lowest = 1.0
    for ax, attribute, title in ((axes[0], "partner_seconds", "partner CPU s (median over partners)"),
                                 (axes[1], "server_seconds", "server CPU s")):  # fmt: skip
        for offset, system, colour in ((-0.18, "ours SecAgg+", "#1f77b4"), (0.18, "ours complete", "#9ecae1")):
            values = [getattr(c[system], attribute) / getattr(c["Flower SecAgg+"], attribute) for c in results]
            lowest = min(lowest, *values)
            bars = ax.bar(x + offset, values, width=0.36, color=colour, label=f"{system} / Flower SecAgg+")
            if system == "ours SecAgg+":
                for bar, value in zip(bars, values, strict=True):
                    ax.text(bar.get_x() + bar.get_width() / 2, value * 1.08, f"{value:.2f}", ha="center",
                            fontsize=6, rotation=90)  # fmt: skip
        ax.axhline(1.0, color="#d62728", linewidth=1.2, label="Flower SecAgg+ (= 1)")
        ax.set_yscale("log")
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_title(title, fontsize=9)
    axes[0].set_ylim(lowest / 2, 2.5)
    axes[1].legend(fontsize=7, loc="upper right")
    axes[0].set_ylabel("ours / Flower SecAgg+ (log; < 1: ours faster)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)


def int_list(text: str) -> list[int]:
    return [int(part.replace("_", "").replace("k", "000").replace("M", "000000")) for part in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int_list, default=[5, 10, 20, 50], help="cohort sizes, e.g. 5,10,20,50")
    parser.add_argument("--sizes", type=int_list, default=[10_000, 100_000, 1_000_000],
                        help="vector lengths, e.g. 10k,100k,1M")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats per cell (medians)")
    parser.add_argument("--threshold-fraction", type=float, default=0.67,
                        help="t as a fraction of each secret's share holders (Flower's reconstruction_threshold)")  # fmt: skip
    parser.add_argument("--dropouts", type=float, default=0.0,
                        help="fraction of partners (at least one if > 0) that vanish before the masked-input stage")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="n in {5, 10}, d in {10k, 100k}, one repeat; prints only")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    parser.add_argument("--no-write", action="store_true", help="print only; no BENCHMARKS.md section, no figure")
    args = parser.parse_args(argv)
    if args.quick:
        args.partners, args.sizes, args.repeats, args.no_write = [5, 10], [10_000, 100_000], 1, True
    logging.getLogger("flwr").setLevel(logging.ERROR)  # the workflow logs every stage at INFO
    configure_logging("WARNING")  # ours logs every stage at INFO too
    info, before, started, wall_start = machine(), load(), datetime.now(UTC), time.monotonic()
    # Warm-up: imports, first-call costs of both libraries.
    measure(3, 100, 1, args.threshold_fraction)
    results = []
    for d in args.sizes:
        for n in args.partners:
            cell = measure(n, d, args.repeats, args.threshold_fraction, args.dropouts)
            results.append(cell)
            plus, fl = cell["ours SecAgg+"], cell["Flower SecAgg+"]
            print(f"n={n} d={d}: partner s ours+ {plus.partner_seconds:.3f} complete "
                  f"{cell['ours complete'].partner_seconds:.3f} Flower {fl.partner_seconds:.3f}; server s ours+ "
                  f"{plus.server_seconds:.3f} complete {cell['ours complete'].server_seconds:.3f} Flower "
                  f"{fl.server_seconds:.3f}", file=sys.stderr, flush=True)  # fmt: skip
    wall = time.monotonic() - wall_start
    section = report(results, info, args, started, wall, (before, load()))
    if args.json:
        print(json.dumps({"machine": info, "wall_seconds": wall,
                          "results": [{s: asdict(m) for s, m in cell.items()} for cell in results]}, indent=1))  # fmt: skip
    else:
        print(section)
    if not args.no_write:
        with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as handle:
            handle.write(section)
        figure(results, ROOT / "benchmarks" / "figures" / figure_name(args.dropouts))


if __name__ == "__main__":
    main()
