"""The agent verifies Mishale's audit checkpoints, keeps the receipts, and halts when the log is forked.

Real processes: `worker validate`, `worker audit` (honest, then one serving a log rewritten with the
same signing key) and the agent. After the fork nothing more is submitted, also not a new file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tier1.conftest import Register
from tier1.support import OWN_PUBLISHED, worker_env, worker_process

from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.keys import load_signing_key
from mshale_fl.audit.note import NoteVerifier
from mshale_fl.audit.receipts import Receipt, verify_receipt
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.testing.samples import sample_event

from .conftest import Bus
from .support import FAST, AgentProcess, WorkerProcess, agent_env, cli, file_status, state, write_config, write_key

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

SECOND = """# Marsh-wren plasmid digest
1. Mix 1 µg plasmid DNA with 2 µl buffer and 1 µl enzyme in 20 µl.
2. Incubate at 37 °C for 60 min.
"""


def test_the_agent_verifies_checkpoints_and_halts_when_the_log_is_forked(
    tmp_path: Path, broker_url: str, ledger_url: str, register: Register, bus: Bus
) -> None:
    lab = register(tier=1)
    mishale_home = tmp_path / "mishale"
    keygen = cli("audit", "keygen", env=worker_env(broker_url, ledger_url, mishale_home))
    assert keygen.returncode == 0, keygen.stderr
    verifier_key = keygen.stdout.strip()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "miniprep.md").write_text(OWN_PUBLISHED, encoding="utf-8")
    home = tmp_path / "home"
    config = write_config(tmp_path / "partner.toml", corpus="corpus", tier=1, api_key_file="api-key",
                          sections={"agent": FAST, "sensitivity": {"default": "published"},
                                    "audit": {"verifier_key": verifier_key, "check_seconds": 0.5, "receipt_wait": 5}})  # fmt: skip
    write_key(tmp_path / "api-key", lab.key.api_key.get_secret_value())
    agent = AgentProcess(config, agent_env(broker_url, home), tmp_path / "agent.log")
    honest = WorkerProcess(["worker", "audit"], worker_env(broker_url, ledger_url, mishale_home), tmp_path / "audit-1.log")
    forged: WorkerProcess | None = None
    try:
        with worker_process("validate", broker_url, ledger_url, tmp_path / "validator"):
            agent.start()
            agent.wait_for(lambda: state(home)["files"].get("miniprep.md", {}).get("audit") == "verified",
                           what="the submission's audit receipt verified")  # fmt: skip
            submission_id = state(home)["files"]["miniprep.md"]["submission_id"]
            receipt = Receipt.from_json((home / "agent" / "receipts" / f"{submission_id}.json").read_text())
            record, checkpoint = verify_receipt(receipt, NoteVerifier.from_key(verifier_key))
            assert record.event_id == submission_id and record.partner_id == lab.partner.id
            seen = agent.wait_for(lambda: state(home)["audit"].get("checkpoint_size"), what="a checkpoint")
            assert seen >= checkpoint.size
            assert honest.stop() == 0, honest.tail()

            # The operator, holding the signing key, serves a log rewritten from scratch: the partner's
            # event is still in it, but the history before it differs, and the tree is larger.
            (mine,) = bus.events("spec.submitted")
            signer = load_signing_key(mishale_home / "audit" / "signing.key")
            rewritten = AuditAppender(LocalStore(tmp_path / "forged" / "log"), signer, index_path=None)
            rewritten.append_batch([sample_event("model.published", seed=100 + n) for n in range(40)] + [mine])
            rewritten.close()
            forged = WorkerProcess(
                ["worker", "audit"],
                worker_env(broker_url, ledger_url, tmp_path / "forged")
                | {"MSHALE_AUDIT_LOCAL_DIR": str(tmp_path / "forged" / "log"),
                   "MSHALE_AUDIT_KEY_FILE": str(mishale_home / "audit" / "signing.key")},
                tmp_path / "audit-2.log",
            )  # fmt: skip
            fork = agent.wait_logged("agent.audit_fork", timeout=60)
            assert fork["level"] == "critical" and "does not extend" in fork["error"]
            assert state(home)["halted"]["reason"] == "audit_fork"
            witness = (home / "agent" / "witness.note").read_bytes()
            assert witness.splitlines()[1] == str(seen).encode()  # it kept the honest checkpoint, refused the forged one

            # Halted: a new file is not submitted.
            (corpus / "digest.md").write_text(SECOND, encoding="utf-8")
            time.sleep(3)
            assert file_status(home, "digest.md") is None
            assert agent.stop() == 0, agent.tail()
    finally:
        agent.kill()
        honest.stop()
        if forged is not None:
            assert forged.stop() == 0, forged.tail()
    assert [event.event_id for event in bus.events("spec.submitted")] == [mine.event_id]

    env = agent_env(broker_url, home)
    status = json.loads(cli("agent", "status", "--config", str(config), "--json", env=env).stdout)
    assert status["halted"]["reason"] == "audit_fork" and status["audit"]["checkpoint_size"] == seen
    text = cli("agent", "status", "--config", str(config), env=env).stdout
    assert "HALTED" in text and "does not extend" in text
    reset = cli("agent", "reset-witness", "--config", str(config), env=env)
    assert reset.returncode == 0 and "halt cleared" in reset.stdout
    assert json.loads(cli("agent", "status", "--config", str(config), "--json", env=env).stdout)["halted"] is None
    assert not (home / "agent" / "witness.note").exists() and list((home / "agent").glob("witness.note.*.old"))

