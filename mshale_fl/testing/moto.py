"""`moto_server` (a real S3 API over HTTP) on a free loopback port, for tests of the S3 audit store."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class MotoServerError(RuntimeError):
    """moto_server is missing or did not start."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_moto_server(timeout: float = 30.0) -> Iterator[str]:
    """Start moto_server (installed beside this Python), yield its endpoint URL, stop it (only it) afterwards."""
    executable = Path(sys.executable).with_name("moto_server")
    if not executable.exists():
        raise MotoServerError(f"moto_server is not installed beside {sys.executable}")
    port = _free_port()
    process = subprocess.Popen(
        [str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise MotoServerError("moto_server did not start") from None
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


__all__ = ["MotoServerError", "running_moto_server"]
