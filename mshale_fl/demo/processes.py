"""A group of `mshale-fl` worker processes: started together, stopped cleanly, never left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] = field(repr=False)

    def tail(self, lines: int = 20) -> str:
        self.log_file.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies, even by SIGKILL (Linux).

    Without it, a demo killed from outside (a timeout, `kill -9`) leaves its workers running, and
    they go on consuming from the demo's queues and take the next demo's events.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ProcessGroup:
    """Starts `python -m mshale_fl.cli ...` children with one environment; stops them on exit.

    Children get SIGTERM (they finish in-flight work), then SIGKILL after `grace` seconds, so a
    demo or test never leaves a process behind even when it fails half-way; and SIGTERM when the
    process that started them dies, however it dies. Start them from a thread that lives as long
    as the group: Linux ties that signal to the thread.
    """

    def __init__(self, env: dict[str, str], log_dir: Path, *, grace: float = 20.0) -> None:
        self.env = {**os.environ, **env}
        self.log_dir = log_dir
        self.grace = grace
        self.children: list[WorkerProcess] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "mshale_fl.cli", *args],
            env={**self.env, **(env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop them in order
            preexec_fn=_terminate_with_parent,
        )
        child = WorkerProcess(name, process, log_path, log_file)
        self.children.append(child)
        return child

    def failed(self) -> list[WorkerProcess]:
        return [child for child in self.children if child.process.poll() not in (None, 0)]

    def stop(self) -> dict[str, int]:
        for child in self.children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        codes: dict[str, int] = {}
        for child in self.children:
            try:
                codes[child.name] = child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                codes[child.name] = child.process.wait()
            child.log_file.close()
        self.children.clear()
        return codes

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
