"""Seconds per local round with DP-SGD beside plain training of the same model and data, same run.

    .venv/bin/python benchmarks/dp_overhead.py [--examples 2000] [--epochs 5] [--batch-size 32] [--repeats 7]
                                               [--threads 1] [--no-write]

One local round = `train_locally` on `mshale1` (223 -> 64 -> 32 -> 1) with FedProx mu = 0.01:

- plain: `dp=False` (shuffled minibatches, hand-written Linear-chain gradients, SGD, proximal step)
  -- the baseline;
- plain, autograd: `dp=False` on the model wrapped so it is not recognised as a Linear chain;
- plain, textbook: DataLoader(shuffle=True), `loss.backward()`, `torch.optim.SGD` (what the Opacus
  examples start from);
- ours: `dp=True` (Poisson sampling, per-sample clipping through the Linear-chain identity, noise);
- ours, torch.func: the same DP step through the generic `vmap(grad)` fallback (the model wrapped
  so it is not recognised as a Linear chain);
- Opacus hooks: `PrivacyEngine.make_private(grad_sample_mode="hooks")`, Opacus' default, with its
  Poisson DataLoader, the same epochs, lr and proximal step;
- Opacus ghost: `grad_sample_mode="ghost"` (fast gradient clipping, two backward passes).

Variants run interleaved, `--repeats` times each, after one warm-up, single-threaded, timed in
process CPU time (`time.process_time`: robust to other load on a shared machine); the table reports
medians and the median of the per-repeat ratios to plain. Appends a section to
BENCHMARKS.md and writes benchmarks/figures/dp_overhead.png unless `--no-write`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mshale_fl.training.local import LocalTrainingConfig, train_locally
from mshale_fl.training.losses import LOSSES
from mshale_fl.training.model import initial_model, load_parameters, parameters_of

NOISE, CLIP, LR, MU = 1.0, 1.0, 0.05, 0.01


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.uniform(0, 1, size=(n, 223)).astype(np.float32)
    weights = rng.normal(size=223) / np.sqrt(223)
    targets = 1 / (1 + np.exp(-4 * (features - 0.5) @ weights))
    return features, targets.astype(np.float32)


class Wrapped(nn.Module):
    """mshale1 behind a module that is not an nn.Sequential: forces the torch.func path."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = initial_model(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def ours(x, y, epochs, batch_size, *, dp: bool, functorch: bool = False) -> float:
    model = Wrapped() if functorch else initial_model(0)
    config = LocalTrainingConfig(epochs=epochs, batch_size=batch_size, lr=LR, mu=MU, noise_multiplier=NOISE,
                                 max_grad_norm=CLIP, seed=1, dp=dp)  # fmt: skip
    start = time.process_time()
    train_locally(model, x, y, parameters_of(model), config)
    return time.process_time() - start


def textbook_round(x, y, epochs, batch_size) -> float:
    """Plain training as most PyTorch code writes it: DataLoader, loss.backward(), torch.optim.SGD."""
    start = time.process_time()
    model = initial_model(0)
    anchors = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=batch_size, shuffle=True)
    for _ in range(epochs):
        for inputs, targets in loader:
            optimizer.zero_grad()
            LOSSES["mse"](model(inputs), targets).mean().backward()
            optimizer.step()
            with torch.no_grad():
                for param, anchor in zip(model.parameters(), anchors, strict=True):
                    param.lerp_(anchor, LR * MU)
    return time.process_time() - start


def opacus_round(x, y, epochs, batch_size, mode: str) -> float:
    from opacus import PrivacyEngine

    start = time.process_time()
    model = initial_model(0)
    load_parameters(model, parameters_of(model))  # what train_locally does first
    anchors = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=batch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Secure RNG turned off": the same (seeded) RNG class as ours
        engine = PrivacyEngine(accountant="rdp")
        if mode == "ghost":
            criterion = nn.MSELoss()
            model, optimizer, criterion, loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, criterion=criterion,
                noise_multiplier=NOISE, max_grad_norm=CLIP, grad_sample_mode="ghost",
            )  # fmt: skip
        else:
            model, optimizer, loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader,
                noise_multiplier=NOISE, max_grad_norm=CLIP, grad_sample_mode="hooks",
            )  # fmt: skip
        params = list(model.parameters())
        for _ in range(epochs):
            for inputs, targets in loader:
                optimizer.zero_grad()
                if mode == "ghost":
                    loss = criterion(model(inputs).reshape(-1), targets)
                else:
                    loss = LOSSES["mse"](model(inputs), targets).mean()
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for param, anchor in zip(params, anchors, strict=True):
                        param.lerp_(anchor, LR * MU)
    return time.process_time() - start


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    except OSError:
        ram = "unknown"
    return {"nproc": str(len(os.sched_getaffinity(0))), "cpu": cpu, "ram": ram, "python": platform.python_version()}


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


VARIANTS = {
    "plain (dp=False)": lambda a: ours(*a, dp=False),
    "plain, autograd path (dp=False, model not a chain)": lambda a: ours(*a, dp=False, functorch=True),
    "plain, textbook PyTorch loop (DataLoader, backward, optim.SGD)": lambda a: textbook_round(*a),
    "ours: DP-SGD, Linear-chain clipping": lambda a: ours(*a, dp=True),
    "ours: DP-SGD, torch.func fallback": lambda a: ours(*a, dp=True, functorch=True),
    "Opacus hooks (default)": lambda a: opacus_round(*a, mode="hooks"),
    "Opacus ghost clipping": lambda a: opacus_round(*a, mode="ghost"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: the model is tiny)")
    parser.add_argument("--no-write", action="store_true", help="print only; no BENCHMARKS.md section, no figure")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = data(args.examples)
    arguments = (x, y, args.epochs, args.batch_size)
    info = machine()
    load_before = load()
    started = datetime.now(UTC)
    for run in VARIANTS.values():  # warm-up: imports, allocator, first-call costs
        run(arguments)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, run in VARIANTS.items():
            times[name].append(run(arguments))
    load_after = load()
    plain = times["plain (dp=False)"]
    rows = []
    for name, values in times.items():
        ratios = [v / p for v, p in zip(values, plain, strict=True)]
        rows.append((name, statistics.median(values), statistics.median(ratios), min(ratios), max(ratios)))
    steps = args.epochs * -(-args.examples // args.batch_size)
    lines = [
        "",
        f"## DP-SGD overhead per local round (`benchmarks/dp_overhead.py`) — {started:%Y-%m-%d %H:%M} UTC",
        "",
        (
            f"Machine: nproc {info['nproc']} ({info['cpu']}), {info['ram']} RAM, Python {info['python']}, "
            f"torch {torch.__version__} ({args.threads} intra-op thread{'s' if args.threads > 1 else ''}), "
            f"opacus {__import__('opacus').__version__}. Load average before / after: {load_before} / {load_after} "
            "(shared machine: the ratios, measured interleaved in the same run, are the result)."
        ),
        (
            f"One local round of `mshale1` on {args.examples} examples x 223 features: {args.epochs} epochs, batch "
            f"{args.batch_size} (DP: {steps} steps, Poisson sampling at rate 1/{-(-args.examples // args.batch_size)}), "
            f"lr {LR}, FedProx mu {MU}, noise multiplier {NOISE}, max grad norm {CLIP}. {args.repeats} interleaved "
            "repeats after a warm-up; process CPU time, single-threaded; medians, and the median (min-max) of the "
            "per-repeat ratios to plain training."
        ),
        "",
        "| local round | seconds (median) | ratio to plain | ratio range |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds, ratio, low, high in rows:
        bold = "**" if name.startswith("ours: DP-SGD, Linear") else ""
        lines.append(f"| {name} | {seconds:.3f} | {bold}{ratio:.2f}x{bold} | {low:.2f}–{high:.2f} |")
    lines += [
        "",
        (
            "Command: `.venv/bin/python benchmarks/dp_overhead.py "
            f"--examples {args.examples} --epochs {args.epochs} --batch-size {args.batch_size} --repeats {args.repeats} "
            f"--threads {args.threads}`. Figure: `benchmarks/figures/dp_overhead.png`."
        ),
        "",
    ]
    section = "\n".join(lines)
    print(section)
    if not args.no_write:
        with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as handle:
            handle.write(section)
        figure(rows, ROOT / "benchmarks" / "figures" / "dp_overhead.png", info, args)


def figure(rows, path: Path, info: dict[str, str], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    names = [r[0] for r in rows]
    ratios = [r[2] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    colours = ["#888888", "#aaaaaa", "#cccccc", "#1f77b4", "#6baed6", "#d62728", "#ff9896"]
    bars = ax.barh(names[::-1], ratios[::-1], color=colours[: len(rows)][::-1])
    ax.axvline(3.0, color="black", linestyle="--", linewidth=1)
    ax.text(3.05, -0.45, "3x target", fontsize=8)
    for bar, row in zip(bars, rows[::-1], strict=True):
        ax.text(bar.get_width() + 0.05, bar.get_y() + bar.get_height() / 2, f"{row[2]:.2f}x ({row[1]:.2f} s)",
                va="center", fontsize=8)  # fmt: skip
    ax.set_xlabel("time per local round / plain training (median of interleaved repeats)")
    ax.set_title(f"Local round of mshale1: {args.examples} examples, {args.epochs} epochs, batch {args.batch_size}, "
                 f"CPU time, 1 thread (nproc {info['nproc']})", fontsize=9)  # fmt: skip
    ax.set_xlim(0, max(ratios) * 1.3)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
