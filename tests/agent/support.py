"""The agent as a real process: config files, start, wait for what it logs or records, stop with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

FAST = {"poll_seconds": 0.3, "settle_seconds": 0.4, "receipt_timeout": 20, "retry_seconds": 2, "shutdown_grace": 5}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def write_config(path: Path, *, sections: dict[str, dict[str, Any]] | None = None, **top: Any) -> Path:
    """A partner.toml: top-level keys, then `[section]` tables."""
    lines = [f"{key} = {toml_value(value)}" for key, value in top.items()]
    for name, values in (sections or {}).items():
        lines.append(f"\n[{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_key(path: Path, api_key: str) -> Path:
    path.write_text(api_key + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def agent_env(broker_url: str, home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MSHALE_")}
    env.update({"MSHALE_BROKER_URL": broker_url, "MSHALE_HOME": str(home), "COLUMNS": "250", **extra})
    return env


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mshale_fl.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


class AgentProcess:
    """`mshale-fl agent run --config FILE` with its log (JSON lines: stderr is not a terminal) in a file."""

    def __init__(self, config: Path, env: dict[str, str], log_path: Path) -> None:
        self.config = config
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(self) -> AgentProcess:
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mshale_fl.cli", "agent", "run", "--config", str(self.config)],
            env=self.env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        handle.close()
        return self

    def log(self) -> list[dict[str, Any]]:
        """What this run logged so far, one dict per JSON line (other lines kept as {"text": ...})."""
        text = self.log_path.read_bytes()[self._offset :].decode("utf-8", errors="replace")
        entries = []
        for line in text.splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                entries.append({"text": line})
        return entries

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_for(self, check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the agent exited ({self.process.returncode}) while waiting for {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not seen within {timeout} s:\n{self.tail()}")
            time.sleep(0.1)

    def wait_logged(self, event: str, timeout: float = 60, **fields: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for entry in self.log():
                if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items()):
                    return entry
            return None

        return self.wait_for(found, timeout, what=f"log {event} {fields or ''}")

    def stop(self, timeout: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"the agent did not stop within {timeout} s of SIGTERM:\n{self.tail()}") from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def state(home: Path) -> dict[str, Any]:
    path = home / "agent" / "state.json"
    return json.loads(path.read_text()) if path.exists() else {"files": {}, "audit": {}}


def file_status(home: Path, source: str) -> str | None:
    record = state(home)["files"].get(source)
    return record["status"] if record else None


class WorkerProcess:
    """`mshale-fl worker ROLE` (or any command) as a real process with its own environment and log."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        handle = log_path.open("ab")
        self.log_path = log_path
        self.process = subprocess.Popen([sys.executable, "-m", "mshale_fl.cli", *args], env=env, stdout=handle,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        handle.close()

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
