"""The agent as a real process against the real broker and a real `worker validate` (Tiers 1 and 2).

It submits what the corpus holds, then each new file and each changed file; an unchanged file is not
sent again after a restart; a full-ip protocol never reaches the bus in any form; a broker that drops
every connection does not stop it; SIGTERM ends it with exit 0.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tier1.conftest import Register
from tier1.support import FULL_IP, INTERNAL, OWN_PUBLISHED, worker_process
from tier2.submission_support import dpa

from mshale_fl.testing.broker import close_vhost_connections

from .conftest import Bus
from .support import FAST, AgentProcess, agent_env, cli, file_status, state, write_config, write_key

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

LABEL_RULES = {"default": "full-ip", "rules": [{"glob": "published/**", "label": "published"},
                                                {"glob": "internal/**", "label": "internal"}]}  # fmt: skip
SECOND = """# Marsh-wren plasmid digest
1. Mix 1 µg plasmid DNA with 2 µl buffer and 1 µl enzyme in 20 µl.
2. Incubate at 37 °C for 60 min.
3. Heat at 65 °C for 20 min.
"""
THIRD = """# Fernhollow agarose gel
1. Dissolve 1 g agarose in 100 ml TAE buffer by heating.
2. Run the gel at 100 V for 40 min.
"""
FULL_IP_WORDS = ("kestrelwood", "zanthoxylum", "brackenridge")


def test_the_agent_submits_new_and_changed_files_once_and_never_a_full_ip_one(
    tmp_path: Path, broker_url: str, vhost: str, ledger_url: str, register: Register,
    bus: Bus,
) -> None:  # fmt: skip
    lab = register(tier=1)
    corpus = tmp_path / "corpus"
    for name, text in {"published/miniprep.md": OWN_PUBLISHED, "secret/lysis.md": FULL_IP, "internal/beads.md": INTERNAL}.items():
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_text(text, encoding="utf-8")
    home = tmp_path / "home"
    config = write_config(tmp_path / "partner.toml", corpus="corpus", tier=1, api_key_file="api-key",
                          sections={"agent": FAST, "sensitivity": LABEL_RULES})  # fmt: skip
    write_key(tmp_path / "api-key", lab.key.api_key.get_secret_value())
    agent = AgentProcess(config, agent_env(broker_url, home), tmp_path / "agent.log")

    with worker_process("validate", broker_url, ledger_url, tmp_path / "mishale"):
        try:
            agent.start()
            agent.wait_logged("agent.caught_up")
            assert file_status(home, "published/miniprep.md") == "accepted"
            assert file_status(home, "secret/lysis.md") == file_status(home, "internal/beads.md") == "withheld"
            assert state(home)["files"]["secret/lysis.md"]["reasons"][0].startswith("full_ip_never_leaves")
            first_id = state(home)["files"]["published/miniprep.md"]["submission_id"]

            # A new file dropped in, written in two goes (the agent waits until it settles).
            (corpus / "published" / "digest.md").write_text(SECOND.split("2.")[0], encoding="utf-8")
            (corpus / "published" / "digest.md").write_text(SECOND, encoding="utf-8")
            agent.wait_for(lambda: file_status(home, "published/digest.md") == "accepted", what="the new file accepted")

            # A changed file is sent again, as a new submission.
            (corpus / "published" / "miniprep.md").write_text(OWN_PUBLISHED + "7. Store the DNA at -20 °C.\n", encoding="utf-8")
            agent.wait_for(lambda: state(home)["files"]["published/miniprep.md"]["submission_id"] != first_id,
                           what="the changed file sent again")  # fmt: skip
            assert file_status(home, "published/miniprep.md") == "accepted"

            # The broker drops every connection (as in a restart): the agent keeps going.
            asyncio.run(close_vhost_connections(vhost))
            (corpus / "published" / "gel.md").write_text(THIRD, encoding="utf-8")
            agent.wait_for(lambda: file_status(home, "published/gel.md") == "accepted", timeout=90,
                           what="a file after the broker dropped the connections")  # fmt: skip
            assert agent.stop() == 0, agent.tail()
            assert agent.log()[-1]["event"] == "agent.stopped"

            # Restarted: nothing unchanged is sent again.
            agent.start()
            agent.wait_logged("agent.caught_up")
            asyncio.run(asyncio.sleep(2))  # several more scans
            assert agent.stop() == 0, agent.tail()
            assert not [entry for entry in agent.log() if entry.get("event") == "agent.file"]
        finally:
            agent.kill()

    submitted = bus.events("spec.submitted")
    assert len(submitted) == len({e.event_id for e in submitted}) == 4  # miniprep, digest, miniprep changed, gel
    assert {e.partner_id for e in submitted} == {lab.partner.id}
    assert len(bus.events("submission.accepted")) == 4 and not bus.events("submission.rejected")
    secret_hash = state(home)["files"]["secret/lysis.md"]["content_hash"]
    internal_hash = state(home)["files"]["internal/beads.md"]["content_hash"]
    for message in bus.seen:
        body = message.body.decode("utf-8").lower()
        assert secret_hash not in body and internal_hash not in body
        assert not any(word in body for word in FULL_IP_WORDS)

    status = cli("agent", "status", "--config", str(config), "--json", env=agent_env(broker_url, home))
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert summary["running"] is False and summary["partner_id"] == lab.partner.id
    assert summary["counts"] == {"accepted": 3, "withheld": 2}
    text = cli("agent", "status", "--config", str(config), env=agent_env(broker_url, home))
    assert "3 accepted, 2 withheld" in text.stdout and "full_ip_never_leaves" in text.stdout


def test_a_tier_2_agent_sends_vectors_and_applies_its_rules_across_the_whole_corpus(
    tmp_path: Path, broker_url: str, ledger_url: str, register: Register, bus: Bus
) -> None:
    lab = register(tier=2, agreements=[dpa()])
    corpus = tmp_path / "corpus"
    for name, text in {"published/miniprep.md": OWN_PUBLISHED, "secret/lysis.md": FULL_IP, "internal/beads.md": INTERNAL}.items():
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_text(text, encoding="utf-8")
    home = tmp_path / "home"
    config = write_config(tmp_path / "partner.toml", corpus="corpus", tier=2, api_key_file="api-key",
                          sections={"agent": FAST, "sensitivity": LABEL_RULES, "agreements": {"dpa": True}})  # fmt: skip
    write_key(tmp_path / "api-key", lab.key.api_key.get_secret_value())
    agent = AgentProcess(config, agent_env(broker_url, home), tmp_path / "agent.log")
    with worker_process("validate", broker_url, ledger_url, tmp_path / "mishale"):
        try:
            agent.start()
            agent.wait_logged("agent.caught_up")
            assert file_status(home, "published/miniprep.md") == file_status(home, "internal/beads.md") == "accepted"
            assert file_status(home, "secret/lysis.md") == "withheld"
            # Later, in another step: the full-ip text again under a published path (its front matter
            # left out), and a copy of a text already contributed. Neither is sent.
            (corpus / "published" / "lysis-copy.md").write_text(FULL_IP.split("---\n")[-1], encoding="utf-8")
            (corpus / "published" / "miniprep-copy.md").write_text(OWN_PUBLISHED, encoding="utf-8")
            agent.wait_for(lambda: file_status(home, "published/lysis-copy.md") and file_status(home, "published/miniprep-copy.md"),
                           what="both copies recorded")  # fmt: skip
            files = state(home)["files"]
            assert files["published/lysis-copy.md"]["status"] == "withheld"
            assert files["published/lysis-copy.md"]["reasons"][0].startswith("same_text_as_full_ip")
            assert files["published/miniprep-copy.md"]["status"] == "accepted"
            assert files["published/miniprep-copy.md"]["reasons"][0].startswith("already_contributed")
            assert files["published/miniprep-copy.md"]["submission_id"] == files["published/miniprep.md"]["submission_id"]
            assert agent.stop() == 0, agent.tail()
        finally:
            agent.kill()
    batches = bus.events("vectors.submitted")
    assert not bus.events("spec.submitted")
    assert sorted(len(batch.payload.vectors) for batch in batches) == [1, 1]  # one per label: published, internal
    secret_hash = state(home)["files"]["secret/lysis.md"]["content_hash"]
    assert all(secret_hash not in message.body.decode() for message in bus.seen)
    assert all(word not in message.body.decode().lower() for message in bus.seen for word in FULL_IP_WORDS)
