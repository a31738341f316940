"""The agent when things go wrong: without a broker it keeps retrying and records nothing as sent; a second
agent on the same state folder is refused in one line; SIGTERM while it waits for receipts stops it in its
grace period, exit 0, with the unfinished step left to be sent again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tier1.conftest import Register
from tier1.support import FULL_IP, OWN_PUBLISHED

from mshale_fl.ledger.api_keys import generate_api_key

from .conftest import Bus
from .support import FAST, AgentProcess, agent_env, cli, file_status, state, write_config, write_key

NOWHERE = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1


def test_without_a_broker_the_agent_retries_records_nothing_as_sent_and_stops_cleanly(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "miniprep.md").write_text(OWN_PUBLISHED, encoding="utf-8")
    (corpus / "lysis.md").write_text(FULL_IP, encoding="utf-8")
    home = tmp_path / "home"
    api_key = generate_api_key("lab-a")[1]
    config = write_config(tmp_path / "partner.toml", corpus="corpus", tier=1, api_key_file="api-key",
                          sections={"agent": FAST, "sensitivity": {"default": "published"}})  # fmt: skip
    write_key(tmp_path / "api-key", api_key)
    agent = AgentProcess(config, agent_env(NOWHERE, home), tmp_path / "agent.log").start()
    try:
        failure = agent.wait_logged("agent.submit_failed")
        assert "cannot reach the Mishale broker" in failure["error"] and failure["level"] == "error"
        agent.wait_for(lambda: len([e for e in agent.log() if e.get("event") == "agent.submit_failed"]) >= 2,
                       what="a retry")  # fmt: skip
        assert file_status(home, "lysis.md") == "withheld"  # decided locally, no broker needed
        assert file_status(home, "miniprep.md") is None  # not sent, so not recorded: sent when the broker is back

        second = cli("agent", "run", "--config", str(config), env=agent_env(NOWHERE, home))
        assert second.returncode == 2 and second.stderr.count("\n") == 1
        assert second.stderr.startswith(f"error: another agent (pid {agent.process.pid}) already runs")

        assert agent.stop(timeout=30) == 0, agent.tail()
    finally:
        agent.kill()
    assert state(home)["daemon"]["stopped_at"]
    text = "\n".join(str(entry) for entry in agent.log())
    assert api_key not in text and api_key not in (home / "agent" / "state.json").read_text()


@pytest.mark.rabbitmq
def test_sigterm_while_waiting_for_receipts_abandons_the_step_without_losing_state(
    tmp_path: Path, broker_url: str, register: Register, bus: Bus
) -> None:
    lab = register(tier=1)  # no validator runs: the receipts never come
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "miniprep.md").write_text(OWN_PUBLISHED, encoding="utf-8")
    home = tmp_path / "home"
    config = write_config(tmp_path / "partner.toml", corpus="corpus", tier=1, api_key_file="api-key",
                          sections={"agent": {**FAST, "receipt_timeout": 120, "shutdown_grace": 1},
                                    "sensitivity": {"default": "published"}})  # fmt: skip
    write_key(tmp_path / "api-key", lab.key.api_key.get_secret_value())
    agent = AgentProcess(config, agent_env(broker_url, home), tmp_path / "agent.log").start()
    try:
        agent.wait_for(lambda: bus.events("spec.submitted"), what="the submission on the bus")
        started = time.monotonic()
        assert agent.stop(timeout=30) == 0, agent.tail()
        assert time.monotonic() - started < 15  # the grace, not the receipt timeout
    finally:
        agent.kill()
    events = [entry.get("event") for entry in agent.log()]
    assert "agent.finishing_sending" in events and "agent.sending_abandoned" in events and events[-1] == "agent.stopped"
    assert file_status(home, "miniprep.md") is None  # not recorded: sent again (same id) at the next start
    assert state(home)["daemon"]["stopped_at"]
