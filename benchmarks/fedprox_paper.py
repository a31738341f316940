"""Reproduce the synthetic-data experiments of Li et al., "Federated Optimization in Heterogeneous
Networks" (FedProx, MLSys 2020), through this project's own training path.

    .venv/bin/python benchmarks/fedprox_paper.py [--rounds 40] [--datasets 3] [--workers 2] [--no-write]
    .venv/bin/python benchmarks/fedprox_paper.py --full      # the paper's 200 rounds (hours on 2 cores)

Data, as the paper defines it and its generator (`data/synthetic_*/generate_synthetic.py` of the
authors' code) draws it: 30 devices with `lognormal(4, 2) + 50` examples each (a power law); for
synthetic(alpha, beta) each device k draws u_k ~ N(0, alpha), B_k ~ N(0, beta), v_k ~ N(B_k, 1)
(per dimension), W_k ~ N(u_k, 1) (60 x 10), b_k ~ N(u_k, 1), x ~ N(v_k, Sigma) with Sigma diagonal,
Sigma_jj = j^-1.2, and y = argmax softmax(W_k x + b_k). IID: one W, b ~ N(0, 1) for all devices
and x ~ N(0, Sigma). Each device keeps 90 % for training and 10 % for testing. (The parameters of a
normal are its mean and standard deviation, as numpy's `normal(loc, scale)` in their code.)

Setup (the paper's): multinomial logistic regression 60 -> 10 (Glorot-uniform weights, zero bias,
as TensorFlow's dense layer), 10 of 30 devices per round chosen uniformly, E = 20 local epochs,
batch 10, lr 0.01. Stragglers: a fraction (0 / 50 / 90 %) of the selected devices; FedAvg drops
them, FedProx keeps their partial work (a uniform 1..E-1 epochs, as the authors' code). The same
devices, stragglers and straggler epochs in every method (seeded by dataset and round). Methods:
FedAvg, FedProx mu = 0, 0.01, 1. At 0 % stragglers FedAvg and FedProx mu = 0 are the same
algorithm, so it is run once. Local training is `train_locally(dp=False, loss="cross_entropy")`
and aggregation `fedavg` weighted by example counts; the proximal step is this project's separate
step (`w <- w - lr mu (w - w_global)` after each SGD step; the paper's optimizer takes the
penalty's gradient at the same point as the data gradient -- a difference of order lr^2 mu).

Metrics each round, before the round's training (as the authors' code): training loss averaged over
all training examples of all devices, and test accuracy over all test examples. Curves are averaged
over `--datasets` generated datasets per setting (seeds 0, 1, ...). Writes two figures under
benchmarks/figures/ and appends a section to BENCHMARKS.md with the paper's findings checked.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NUM_DEVICES, DIMENSION, CLASSES = 30, 60, 10
PER_ROUND, EPOCHS, BATCH, LR = 10, 20, 10, 0.01
SETS = {"synthetic_iid": None, "synthetic_0_0": (0.0, 0.0), "synthetic_0.5_0.5": (0.5, 0.5), "synthetic_1_1": (1.0, 1.0)}
NON_IID = ["synthetic_0_0", "synthetic_0.5_0.5", "synthetic_1_1"]
STRAGGLERS = [0.0, 0.5, 0.9]
METHODS = {"FedAvg": None, "FedProx mu=0": 0.0, "FedProx mu=0.01": 0.01, "FedProx mu=1": 1.0}


@dataclass
class Device:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def generate(name: str, seed: int) -> list[Device]:
    """One synthetic dataset, following the authors' generator (see the module docstring)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    sizes = rng.lognormal(4, 2, NUM_DEVICES).astype(int) + 50
    std_x = np.sqrt(np.arange(1, DIMENSION + 1, dtype=np.float64) ** -1.2)  # Sigma diagonal: x = mean + std * z
    params = SETS[name]
    if params is None:
        shared_w, shared_b = rng.normal(0, 1, (DIMENSION, CLASSES)), rng.normal(0, 1, CLASSES)
        means_x = np.zeros((NUM_DEVICES, DIMENSION))
    else:
        alpha, beta = params
        mean_w = rng.normal(0, alpha, NUM_DEVICES)  # u_k; b_k shares it, as in the paper
        b_shift = rng.normal(0, beta, NUM_DEVICES)  # B_k
        means_x = np.stack([rng.normal(b_shift[k], 1, DIMENSION) for k in range(NUM_DEVICES)])  # v_k
    devices = []
    for k in range(NUM_DEVICES):
        if params is None:
            w, b = shared_w, shared_b
        else:
            w, b = rng.normal(mean_w[k], 1, (DIMENSION, CLASSES)), rng.normal(mean_w[k], 1, CLASSES)
        x = means_x[k] + std_x * rng.standard_normal((sizes[k], DIMENSION))
        y = np.argmax(x @ w + b, axis=1)  # argmax of softmax = argmax of the logits
        order = rng.permutation(sizes[k])
        x, y = x[order].astype(np.float32), y[order].astype(np.int64)
        cut = int(0.9 * sizes[k])
        devices.append(Device(x[:cut], y[:cut], x[cut:], y[cut:]))
    return devices


def initial_parameters(seed: int) -> list[np.ndarray]:
    """Glorot-uniform 10 x 60 weight (torch layout) and zero bias, as TensorFlow's dense layer."""
    rng = np.random.Generator(np.random.PCG64(10_000 + seed))
    limit = math.sqrt(6.0 / (DIMENSION + CLASSES))
    return [rng.uniform(-limit, limit, (CLASSES, DIMENSION)).astype(np.float32), np.zeros(CLASSES, np.float32)]


def evaluate(params: list[np.ndarray], train_x, train_y, test_x, test_y) -> tuple[float, float]:
    """(training loss over all training examples, test accuracy over all test examples)."""
    weight, bias = params[0].astype(np.float64), params[1].astype(np.float64)
    logits = train_x @ weight.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(train_y)), train_y].mean())
    accuracy = float(((test_x @ weight.T + bias).argmax(axis=1) == test_y).mean())
    return loss, accuracy


def round_plan(seed: int, round_index: int, drop: float) -> tuple[list[int], set[int], dict[int, int]]:
    """(selected devices, the active ones, straggler epochs): the same for every method."""
    rng = np.random.Generator(np.random.PCG64([seed, round_index]))
    selected = [int(k) for k in rng.choice(NUM_DEVICES, PER_ROUND, replace=False)]
    active = {int(k) for k in rng.choice(selected, round(PER_ROUND * (1 - drop)), replace=False)}
    partial = {k: int(rng.integers(1, EPOCHS)) for k in selected}  # randint(1, E): 1 .. E-1 epochs
    return selected, active, partial


def run(task: tuple[str, int, float, str, int]) -> dict:
    """One training run: a dataset, a straggler fraction, a method, `rounds` rounds."""
    import torch
    from torch import nn

    from mshale_fl.training.aggregation import fedavg
    from mshale_fl.training.local import (
        LocalTrainingConfig,
        TrainingDiverged,
        train_locally,
    )

    torch.set_num_threads(1)
    name, seed, drop, method, rounds = task
    devices = generate(name, seed)
    train_x = np.concatenate([d.train_x for d in devices]).astype(np.float64)
    train_y = np.concatenate([d.train_y for d in devices])
    test_x = np.concatenate([d.test_x for d in devices]).astype(np.float64)
    test_y = np.concatenate([d.test_y for d in devices])
    mu = METHODS[method]
    model = nn.Sequential(nn.Linear(DIMENSION, CLASSES))
    params = initial_parameters(seed)
    losses, accuracies = [], []
    started, cpu_started = time.perf_counter(), time.process_time()
    steps = 0
    for round_index in range(rounds + 1):
        loss, accuracy = evaluate(params, train_x, train_y, test_x, test_y)
        losses.append(loss)
        accuracies.append(accuracy)
        if round_index == rounds or not math.isfinite(loss):
            break
        selected, active, partial = round_plan(seed, round_index, drop)
        updates, weights = [], []
        for k in selected:
            if k in active:
                epochs = EPOCHS
            elif mu is None:
                continue  # FedAvg drops stragglers
            else:
                epochs = partial[k]
            config = LocalTrainingConfig(epochs=epochs, batch_size=BATCH, lr=LR, mu=mu or 0.0, noise_multiplier=0.0,
                                         max_grad_norm=0.0, seed=seed * 1_000_000 + round_index * 100 + k, dp=False,
                                         loss="cross_entropy")  # fmt: skip
            try:
                result = train_locally(model, devices[k].train_x, devices[k].train_y, params, config)
            except TrainingDiverged:
                updates = None
                break
            steps += result.steps
            updates.append(result.params)
            weights.append(result.num_examples)
        if updates is None:  # a device diverged: the curve ends here
            losses.append(float("nan"))
            accuracies.append(float("nan"))
            break
        if updates:  # a FedAvg round whose every device straggled keeps the model
            params = fedavg(updates, weights)
    return {"set": name, "seed": seed, "drop": drop, "method": method, "loss": losses, "accuracy": accuracies,
            "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
            "steps": steps}  # fmt: skip


def expected_cost(task: tuple[str, int, float, str, int]) -> float:
    """Relative work of a run: the dataset's training examples times the share of devices that train."""
    _name, seed, drop, method, _rounds = task
    sizes = np.random.Generator(np.random.PCG64(seed)).lognormal(4, 2, NUM_DEVICES).astype(int) + 50
    share = 1 - drop if method == "FedAvg" else 1 - drop / 2  # a straggler does about half the epochs
    return float(sizes.sum()) * share


def tasks(rounds: int, datasets: int) -> list[tuple[str, int, float, str, int]]:
    found = []
    for name in SETS:
        for seed in range(datasets):
            for drop in STRAGGLERS:
                for method in METHODS:
                    if drop == 0.0 and method == "FedAvg":
                        continue  # identical to FedProx mu=0 without stragglers; copied after the runs
                    found.append((name, seed, drop, method, rounds))
    return found


# ---------------------------------------------------------------- analysis


def curves(results: list[dict], name: str, drop: float, method: str, key: str) -> np.ndarray:
    """[datasets, rounds + 1] for one setting (NaN after a divergence)."""
    runs = [r[key] for r in results if r["set"] == name and r["drop"] == drop and r["method"] == method]
    width = max(len(r) for r in runs)
    return np.array([r + [float("nan")] * (width - len(r)) for r in runs])


def tail_mean(values: np.ndarray) -> float:
    """Mean over datasets of each run's mean over its last quarter of rounds (the end of the curve)."""
    quarter = max(1, values.shape[1] // 4)
    return float(np.mean(values[:, -quarter:].mean(axis=1)))


STRAGGLERS_FIGURE = "systems heterogeneity (stragglers)"
HETEROGENEITY = "statistical heterogeneity (mu = 0 vs 1)"


def _per_dataset_tail(values: np.ndarray) -> np.ndarray:
    quarter = max(1, values.shape[1] // 4)
    return values[:, -quarter:].mean(axis=1)


def findings(results: list[dict]) -> list[tuple[str, str, str, bool]]:
    """(source in the paper, claim, evidence, reproduced) for each of the paper's relative findings.

    "Loss" is the mean over the last quarter of rounds, averaged over datasets; "k/n datasets" counts
    the generated datasets on which the claim holds by itself.
    """
    rows = []
    for drop, source in ((0.0, HETEROGENEITY), (0.5, STRAGGLERS_FIGURE), (0.9, STRAGGLERS_FIGURE)):
        for name in NON_IID:
            prox1 = curves(results, name, drop, "FedProx mu=1", "loss")
            prox0 = curves(results, name, drop, "FedProx mu=0", "loss")
            wins = int(np.sum(_per_dataset_tail(prox1) < _per_dataset_tail(prox0)))
            rows.append((source, f"{name}, {drop:.0%} stragglers: mu=1 reaches a lower loss than mu=0",
                         f"{tail_mean(prox1):.3f} vs {tail_mean(prox0):.3f} ({wins}/{len(prox1)} datasets)",
                         tail_mean(prox1) < tail_mean(prox0)))  # fmt: skip
    for name in NON_IID:
        ends = {m: [tail_mean(curves(results, name, d, m, "loss")) for d in STRAGGLERS] for m in ("FedProx mu=1", "FedAvg")}
        spread = {m: (max(v) - min(v)) / min(v) for m, v in ends.items()}
        ok = spread["FedProx mu=1"] <= 0.10 and spread["FedProx mu=1"] < spread["FedAvg"]
        evidence = (
            f"loss at 0/50/90 %: mu=1 {', '.join(f'{v:.3f}' for v in ends['FedProx mu=1'])} (spread "
            f"{spread['FedProx mu=1']:.1%}); FedAvg {', '.join(f'{v:.3f}' for v in ends['FedAvg'])} "
            f"(spread {spread['FedAvg']:.1%})"
        )
        rows.append((STRAGGLERS_FIGURE, f"{name}: mu=1 is insensitive to stragglers (spread <= 10 %, below FedAvg's)", evidence, ok))
    for name in NON_IID:
        at0, at90 = curves(results, name, 0.0, "FedAvg", "loss"), curves(results, name, 0.9, "FedAvg", "loss")
        acc0 = tail_mean(curves(results, name, 0.0, "FedAvg", "accuracy"))
        acc90 = tail_mean(curves(results, name, 0.9, "FedAvg", "accuracy"))
        worse = int(np.sum(_per_dataset_tail(at90) > _per_dataset_tail(at0)))
        evidence = (
            f"loss {tail_mean(at0):.3f} -> {tail_mean(at90):.3f} ({worse}/{len(at0)} datasets), "
            f"test accuracy {acc0:.3f} -> {acc90:.3f}"
        )
        rows.append((STRAGGLERS_FIGURE, f"{name}: FedAvg degrades at 90 % stragglers", evidence, tail_mean(at90) > tail_mean(at0)))
    for drop, source in ((0.0, HETEROGENEITY), (0.5, "beyond the paper"), (0.9, "beyond the paper")):
        prox1 = curves(results, "synthetic_iid", drop, "FedProx mu=1", "loss")
        prox0 = curves(results, "synthetic_iid", drop, "FedProx mu=0", "loss")
        mean1, mean0 = float(np.nanmean(prox1[:, 1:])), float(np.nanmean(prox0[:, 1:]))
        evidence = (
            f"mean loss over rounds 1-{prox1.shape[1] - 1}: {mean1:.3f} vs {mean0:.3f}; "
            f"final {tail_mean(prox1):.3f} vs {tail_mean(prox0):.3f}"
        )
        rows.append((source, f"synthetic_iid, {drop:.0%} stragglers: mu=1 converges more slowly than mu=0", evidence,
                     mean1 > mean0))  # fmt: skip
    return rows


def figures(results: list[dict], rounds: int, datasets: int, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    colours = {"FedAvg": "#2ca02c", "FedProx mu=0": "#1f77b4", "FedProx mu=0.01": "#ff7f0e", "FedProx mu=1": "#d62728"}
    written = []
    for key, label in (("loss", "training loss"), ("accuracy", "test accuracy")):
        fig, axes = plt.subplots(len(STRAGGLERS), len(SETS), figsize=(15, 9), sharex=True, squeeze=False)
        for row, drop in enumerate(STRAGGLERS):
            for column, name in enumerate(SETS):
                ax = axes[row][column]
                for method, colour in colours.items():
                    values = curves(results, name, drop, method, key)
                    mean = np.nanmean(values, axis=0)
                    style = "--" if method == "FedProx mu=0" and drop == 0.0 else "-"
                    ax.plot(np.arange(len(mean)), mean, style, color=colour, label=method, linewidth=1.3)
                    ax.fill_between(np.arange(len(mean)), np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                                    color=colour, alpha=0.08)  # fmt: skip
                if row == 0:
                    ax.set_title(name, fontsize=10)
                if column == 0:
                    ax.set_ylabel(f"{drop:.0%} stragglers\n{label}")
                if row == len(STRAGGLERS) - 1:
                    ax.set_xlabel("round")
                if key == "loss":
                    finite = np.concatenate([np.nanmean(curves(results, name, drop, m, key), axis=0) for m in colours])
                    finite = finite[np.isfinite(finite)]
                    ax.set_ylim(max(0.0, finite.min() * 0.9), min(finite.max(), np.percentile(finite, 98) * 1.3))
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"FedProx synthetic reproduction ({label}): mean over {datasets} generated datasets (band: min-max), "
                     f"{rounds} rounds; E={EPOCHS}, batch {BATCH}, lr {LR}; 0 % stragglers: FedAvg = FedProx mu=0", fontsize=10)  # fmt: skip
        fig.tight_layout()
        path = folder / f"fedprox_paper_{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


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
    return {"nproc": str(len(os.sched_getaffinity(0))), "cpu": cpu, "ram": ram, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="rounds per run (the paper: 200)")
    parser.add_argument("--datasets", type=int, default=3, help="generated datasets per setting (seeds 0..N-1)")
    parser.add_argument("--workers", type=int, default=2, help="processes (one torch thread each)")
    parser.add_argument("--full", action="store_true", help="the paper's 200 rounds")
    parser.add_argument("--json", type=Path, help="also write the per-round results to this file")
    parser.add_argument("--load", type=Path, help="analyse results written by --json instead of training")
    parser.add_argument("--no-write", action="store_true", help="print only; no BENCHMARKS.md section, no figures")
    args = parser.parse_args(argv)
    rounds = 200 if args.full else args.rounds
    todo = tasks(rounds, args.datasets)
    todo.sort(key=lambda t: -expected_cost(t))  # biggest first, so that the workers finish together
    info = machine()
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    started = datetime.now(UTC)
    clock = time.perf_counter()
    if args.load:
        saved = json.loads(args.load.read_text())
        results, wall, rounds = saved["results"], saved["wall_seconds"], saved["rounds"]
        started = datetime.fromisoformat(saved["started"])
        load_before, args.workers = saved["load_before"], saved["workers"]
        args.datasets = 1 + max(r["seed"] for r in results)
    else:
        results = []
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            for done, result in enumerate(as_completed([pool.submit(run, task) for task in todo]), start=1):
                results.append(result.result())
                print(f"[{time.perf_counter() - clock:7.0f} s] {done}/{len(todo)} runs done", file=sys.stderr, flush=True)
        wall = time.perf_counter() - clock
        for result in [r for r in results if r["drop"] == 0.0 and r["method"] == "FedProx mu=0"]:
            results.append({**result, "method": "FedAvg"})
    load_after = saved["load_after"] if args.load else " ".join(f"{v:.2f}" for v in os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps({"results": results, "wall_seconds": wall, "rounds": rounds,
                                         "started": started.isoformat(), "load_before": load_before,
                                         "load_after": load_after, "workers": args.workers}))  # fmt: skip
    rows = findings(results)
    trained = [r for r in results if not (r["drop"] == 0.0 and r["method"] == "FedAvg")]  # the copies ran once
    steps = sum(r["steps"] for r in trained)
    cpu = sum(r.get("cpu_seconds", float("nan")) for r in trained)
    lines = [
        "",
        f"## FedProx paper reproduction, synthetic data (`benchmarks/fedprox_paper.py`) — {started:%Y-%m-%d %H:%M} UTC",
        "",
        (
            f"Machine: nproc {info['nproc']} ({info['cpu']}), {info['ram']} RAM, Python {info['python']}; "
            f"{args.workers} worker processes, one torch thread each; load average before / after {load_before} / "
            f"{load_after}. Wall time {wall / 60:.1f} min for {len(trained)} runs ({steps:,} local SGD steps through "
            f"`train_locally`); CPU time of the runs {cpu / 60:.1f} min ({1e6 * cpu / max(steps, 1):.0f} µs per local "
            f"step, evaluation included), i.e. about {cpu / 60 / args.workers:.1f} min of wall time on "
            f"{args.workers} otherwise idle cores."
        ),
        (
            f"Setup: Li et al. (MLSys 2020), section 5.1 synthetic(alpha, beta) and IID, 30 devices (power-law sizes), "
            f"10 per round, E = {EPOCHS}, batch {BATCH}, lr {LR}, multinomial logistic regression 60 -> 10; "
            f"**{rounds} rounds** (the paper: 200{'' if rounds == 200 else '; `--full` runs 200'}), "
            f"{args.datasets} generated datasets per setting (seeds 0-{args.datasets - 1}), curves averaged. "
            "Figures: `benchmarks/figures/fedprox_paper_loss.png`, `benchmarks/figures/fedprox_paper_accuracy.png`."
        ),
        "",
        "Final training loss / test accuracy (mean of the last quarter of rounds, averaged over datasets):",
        "",
        "| stragglers | method | " + " | ".join(SETS) + " |",
        "|---|---|" + "---|" * len(SETS),
    ]
    for drop in STRAGGLERS:
        for method in METHODS:
            cells = []
            for name in SETS:
                loss = tail_mean(curves(results, name, drop, method, "loss"))
                accuracy = tail_mean(curves(results, name, drop, method, "accuracy"))
                cells.append(f"{loss:.3f} / {accuracy:.3f}")
            lines.append(f"| {drop:.0%} | {method} | " + " | ".join(cells) + " |")
    lines += ["", "The paper's relative findings, checked:", "", "| paper | finding | evidence | reproduced |",
              "|---|---|---|---|"]  # fmt: skip
    for source, claim, evidence, ok in rows:
        lines.append(f"| {source} | {claim} | {evidence} | {'yes' if ok else '**no**'} |")
    reproduced = sum(ok for *_, ok in rows)
    command = f"--rounds {rounds} --datasets {args.datasets} --workers {args.workers}"
    lines += ["", f"{reproduced} of {len(rows)} checks reproduce. Command: `.venv/bin/python benchmarks/fedprox_paper.py {command}`.", ""]
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        for path in figures(results, rounds, args.datasets, ROOT / "benchmarks" / "figures"):
            print(f"wrote {path}", file=sys.stderr)
        with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as handle:
            handle.write(section)


if __name__ == "__main__":
    main()
