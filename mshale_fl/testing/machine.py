"""What machine a benchmark ran on, for the sections it writes to BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def describe() -> str:
    """One line: CPU model, usable cores, memory, Python version."""
    cores = len(os.sched_getaffinity(0))
    return (
        f"{cpu_model()}, nproc {cores} ({os.cpu_count()} CPUs), {memory_gib()} RAM, "
        f"Python {platform.python_version()}"
    )
