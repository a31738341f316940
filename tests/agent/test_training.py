"""A Tier 3 agent joins training: `mshale-fl serve` (one short round, secure aggregation as by default),
the agent and a second partner running `mshale-fl join`, all as real processes.

Secure aggregation needs at least two partners, hence the second one. The agent runs the `join`
command's node (PartnerNode + the partner ClientApp) as the partner's own broker user; its labels
and agreements come from the agent config, not from the corpus.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from tier1.conftest import Register
from tier1.support import worker_env
from tier2.submission_support import training_agreement

from mshale_fl.demo.corpora import write_corpus
from mshale_fl.federation import protocol as p
from mshale_fl.federation import secagg_protocol as s
from mshale_fl.ledger import register_partner
from mshale_fl.training.model import ModelMetadata, initial_model, load_model, model_digest, save_model

from .conftest import Bus
from .support import FAST, AgentProcess, WorkerProcess, agent_env, state, write_config, write_key

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def test_a_tier_3_agent_trains_in_a_securely_aggregated_round_served_by_mshale_fl_serve(
    tmp_path: Path, broker_url: str, ledger_url: str, engine: Engine, register: Register, bus: Bus
) -> None:
    lab = register(tier=3, agreements=[training_agreement()])
    other = f"{lab.partner.id}-b"  # the second partner: `join` as the operator's broker user, as in tests/federation
    register_partner(engine, other, tier=3, broker=None, agreements=[training_agreement()])
    corpus = write_corpus(tmp_path / "corpus", 16, seed=7)
    (corpus / "mshale.toml").unlink()  # the agent config alone says what may train
    other_corpus = write_corpus(tmp_path / "other-corpus", 16, seed=8)
    model = tmp_path / "models" / "mshale1_v0.pt"
    model.parent.mkdir()
    save_model(model, initial_model(seed=0), ModelMetadata(version=0))
    home = tmp_path / "home"
    config = write_config(tmp_path / "partner.toml", corpus="corpus", tier=3, api_key_file="api-key", sections={
        "agent": FAST, "training": {"dp_epsilon": 1.0, "heartbeat_seconds": 0.5},
        "agreements": {"irb": True, "federated_training": True},
    })  # fmt: skip
    write_key(tmp_path / "api-key", lab.key.api_key.get_secret_value())
    agent = AgentProcess(config, agent_env(broker_url, home), tmp_path / "agent.log")
    server_home = tmp_path / "server"
    server = WorkerProcess(
        ["serve", "--model", str(model), "--rounds", "1", "--min-clients", "2", "--dp-epsilon", "1.0",
         "--round-timeout", "60", "--plan-timeout", "20", "--batch-size", "8", "--local-epochs", "1"],
        worker_env(broker_url, ledger_url, server_home), tmp_path / "serve.log",
    )  # fmt: skip
    joined = WorkerProcess(
        ["join", "--corpus", str(other_corpus), "--partner-id", other, "--dp-epsilon", "1.0", "--heartbeat", "0.5"],
        worker_env(broker_url, ledger_url, tmp_path / "other-home"), tmp_path / "join.log",
    )  # fmt: skip
    try:
        agent.start()
        agent.wait_logged("agent.training_ready", timeout=120)
        assert server.process.wait(240) == 0, server.tail()
        agent.wait_logged("node.replied", timeout=30)
        # Tier 3 without a DPA submits specs, and efficiency protocols never leave as specs.
        assert {record["status"] for record in state(home)["files"].values()} == {"withheld"}
        assert agent.stop() == 0, agent.tail()
        assert joined.stop() == 0, joined.tail()
    finally:
        agent.kill()
        server.stop()
        joined.stop()
    published, metadata = load_model(server_home / "models" / "mshale1_v1.pt")
    assert metadata.version == 1 and f"published model version 1 ({model_digest(published)})" in server.tail()
    updates = {event.partner_id: event for event in bus.events("update.masked")}
    assert set(updates) == {lab.partner.id, other} and updates[lab.partner.id].payload.round == 1
    assert not bus.events("spec.submitted") and not bus.events("vectors.submitted")
    logged = [entry.get("event") for entry in agent.log()]
    assert logged.index("node.joined") < logged.index("node.replied") < logged.index("node.stopped")
    stages = {entry.get("message_type") for entry in agent.log() if entry.get("event") == "node.replied"}
    assert stages >= {p.TRAIN_MESSAGE_TYPE, s.SHARE_KEYS_MESSAGE_TYPE, s.MASKED_INPUT_MESSAGE_TYPE, s.UNMASK_MESSAGE_TYPE}
