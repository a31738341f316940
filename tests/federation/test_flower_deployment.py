"""The same ServerApp and ClientApp under Flower's own deployment: flower-superlink, two
flower-supernodes and `flwr run` (no RabbitMQ, no ledger: the apps do not depend on our grid).

Flower's deployment polls every few seconds and starts a process per message, so this test is
the slowest of the suite for one round; it runs once, with two partners.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mshale_fl.training.model import load_model

from .corpora import write_corpus
from .harness import write_base_model

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "mshale-flower-app"
version = "1.0.0"
description = "mshale-fl apps under Flower's deployment (test)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "mshale"

[tool.flwr.app.components]
serverapp = "mshale_fl.agents.mishale.server_app:app"
clientapp = "mshale_fl.agents.partner.client_app:app"

[tool.flwr.app.config]
rounds = 1
min-clients = 2
dp-epsilon = 1.0
batch-size = 8
round-timeout = 120
plan-timeout = 60
model = "{model}"
home = "{home}"
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_apps_run_under_flowers_own_deployment(tmp_path: Path) -> None:
    model = write_base_model(tmp_path / "mshale1_v0.pt")
    server_home = tmp_path / "server"
    # The app is only its pyproject.toml: both components are installed with mshale-fl.
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text(PYPROJECT.format(model=model, home=server_home))
    flwr_home = tmp_path / "flwr"
    flwr_home.mkdir()
    link = _free_port()
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    env = {**os.environ, "FLWR_HOME": str(flwr_home), "PATH": f"{BIN}:{os.environ['PATH']}"}
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, args: list[str]) -> subprocess.Popen[bytes]:
        # A session of its own: the SuperLink and SuperNodes start helper processes, stopped with them.
        return subprocess.Popen(
            args, env=env, cwd=tmp_path, stdout=(logs / f"{name}.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    processes = [
        start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
                            "--port", str(link)]),
    ]  # fmt: skip
    try:
        for partner in ("lab-a", "lab-b"):
            corpus = write_corpus(tmp_path / "corpora" / partner, 24, seed=len(partner) + ord(partner[-1]))
            config = f"partner-id='{partner}' corpus='{corpus}' dp-epsilon=0.5 home='{tmp_path / partner}'"
            processes.append(
                start(partner, [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                                "--port", str(_free_port()), "--node-config", config])
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while (logs / "superlink.log").read_text().count("Activated node_id") < 2:
            assert time.monotonic() < deadline, (logs / "superlink.log").read_text()[-3000:]
            assert all(p.poll() is None for p in processes)
            time.sleep(0.5)
        run = subprocess.run(
            [str(BIN / "flwr"), "run", ".", "test", "--stream"],
            env=env,
            cwd=app,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
            try:
                os.killpg(process.pid, signal.SIGKILL)  # helpers (flower-superexec) left in the session
            except ProcessLookupError:
                pass

    published, metadata = load_model(server_home / "models" / "mshale1_v1.pt")
    assert (metadata.version, metadata.parent, metadata.rounds) == (1, 0, 1)
    (state_file,) = (server_home / "federation" / "runs").glob("*/state.json")
    (record,) = json.loads(state_file.read_text())["rounds"]
    assert record["participants"] == ["lab-a", "lab-b"] and not record["failed"]
    for partner in ("lab-a", "lab-b"):
        spent = json.loads((tmp_path / partner / "privacy" / partner / "model-1.json").read_text())
        assert len(spent["history"]) == 1  # each partner's accountant recorded its one DP round
