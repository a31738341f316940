"""`mshale-fl predict`, `model list`, `model pull`, `model card` and `worker predict` as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mshale_fl.access.model_files import model_file_name
from mshale_fl.agents.partner.extract import extract_corpus
from mshale_fl.audit.keys import create_signing_key
from mshale_fl.demo.processes import ProcessGroup
from mshale_fl.training.model import load_model

from .world import AccessWorld

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "lab-protocols"
ORIGIN = "mshale.test/access-cli"
LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \[")  # structlog's console lines (stderr)


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mshale_fl.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def folders(tmp_path: Path) -> dict[int, Path]:
    corpus = tmp_path / "corpus"
    shutil.copytree(EXAMPLES, corpus)
    extract_corpus(corpus, tmp_path / "tier1", tier=1)
    extract_corpus(corpus, tmp_path / "tier2", tier=2)
    return {1: tmp_path / "tier1", 2: tmp_path / "tier2"}


def test_partners_predict_list_and_pull_through_the_cli(
    world: AccessWorld, folders: dict[int, Path], tmp_path: Path
) -> None:
    tier1, tier2, tier3 = world.register(1), world.register(2), world.register(3)
    for lab in (tier1, tier2, tier3):
        world.contribute(lab)
    sha = world.save_model(1, parent=0)
    world.train(1, [tier3])
    signer = create_signing_key(world.home / "audit" / "signing.key", ORIGIN)
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("MSHALE_")},
        "MSHALE_HOME": str(world.home),
        "MSHALE_BROKER_URL": world.broker_url,
        "MSHALE_LEDGER_URL": str(world.engine.url.render_as_string(hide_password=False)),
        "MSHALE_AUDIT_ORIGIN": ORIGIN,
        "COLUMNS": "250",
    }
    with ProcessGroup(env, tmp_path / "logs") as workers:
        workers.start("audit", "worker", "audit")
        workers.start("predict", "worker", "predict")
        workers.start("predict-2", "worker", "predict")  # scaled out: two compete on the queues
        asyncio.run(world.announce(1, sha, parent=0, wait=False))
        deadline = time.monotonic() + 90
        while not world._registered(1):
            assert not workers.failed(), [child.tail() for child in workers.failed()]
            assert time.monotonic() < deadline, [child.tail() for child in workers.children]
            time.sleep(0.5)

        def as_lab(lab: object, **extra: str) -> dict[str, str]:
            return {**env, "MSHALE_API_KEY": lab.api_key, **extra}  # type: ignore[attr-defined]

        specs = run_cli("predict", "--specs", str(folders[1]), "--json", env=as_lab(tier1))
        assert specs.returncode == 0, specs.stderr
        result = json.loads(specs.stdout)
        assert result["summary"] == {
            "protocols": 5,
            "requests": 2,
            "predicted": 2,
            "denied": 0,
            "unanswered": 0,
            "withheld": 3,
        }
        assert {row["source"] for row in result["predictions"]} == {"pcr-colony-screen.txt", "plasmid-miniprep.md"}
        assert all(row["model_version"] == 1 and 0 <= row["efficiency"] <= 1 for row in result["predictions"])
        assert {row["reason"] for row in result["withheld"]} == {
            "efficiency_not_as_spec", "internal_at_most_vectors", "full_ip_never_leaves",
        }  # fmt: skip

        denied = run_cli("predict", "--vectors", str(folders[2]), env=as_lab(tier1))
        assert denied.returncode == 1, denied.stderr
        assert "tier.insufficient" in denied.stdout and "move to Tier 2" in denied.stdout
        assert "proprietary-lysis.md" in denied.stdout and "full_ip_never_leaves" in denied.stdout

        one_vector = folders[2] / "vectors" / "pcr-colony-screen.txt.vector.json"
        vector = run_cli("predict", "--vectors", str(one_vector), "--json", env=as_lab(tier2))
        assert vector.returncode == 0, vector.stderr
        assert json.loads(vector.stdout)["summary"]["predicted"] == 1

        listing = run_cli("model", "list", "--json", env=as_lab(tier3))
        assert listing.returncode == 0, listing.stderr
        versions = json.loads(listing.stdout)["versions"]
        assert [(v["version"], v["you_contributed"], v["download"]["allowed"]) for v in versions] == [(1, True, True)]
        table = run_cli("model", "list", env=as_lab(tier2))
        assert (
            table.returncode == 0 and "tier.insufficient" in table.stdout and "predictions left today" in table.stdout
        )

        pulled_dir = tmp_path / "pulled"
        pulled = run_cli("model", "pull", "--version", "latest", "--output", str(pulled_dir), env=as_lab(tier3))
        assert pulled.returncode == 0, pulled.stderr
        assert "matches the registry and the audit log" in pulled.stdout
        model, metadata = load_model(pulled_dir / model_file_name(1))
        assert metadata.version == 1
        assert (pulled_dir / "model-1.md").read_text().startswith("# Model version 1\n")

        refused = run_cli("model", "pull", "--version", "1", "--output", str(tmp_path / "no"), env=as_lab(tier2))
        one_line_error(refused, 1, "tier.insufficient", "To get access:")
        assert not (tmp_path / "no").exists()

        card = run_cli("model", "card", "--version", "1", "--output", str(tmp_path / "cards"), env=env)
        assert card.returncode == 0, card.stderr
        assert (
            json.loads((tmp_path / "cards" / "model-1.json").read_text())["contributors"][0]["partner_id"] == tier3.id
        )
        assert not workers.failed()
        codes = workers.stop()
    assert codes == {"audit": 0, "predict": 0, "predict-2": 0}
    assert signer.verifier.name == ORIGIN


def test_usage_mistakes_are_one_line(tmp_path: Path, folders: dict[int, Path]) -> None:
    env = {
        **os.environ,
        "MSHALE_HOME": str(tmp_path),
        "MSHALE_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/",
        "COLUMNS": "250",
    }
    env.pop("MSHALE_API_KEY", None)
    key = "mshale_lab-a_0123456789abcdef_" + "A" * 43
    one_line_error(run_cli("predict", "--specs", str(folders[1]), env=env), 2, "no API key")
    one_line_error(
        run_cli("predict", "--specs", str(tmp_path), "--api-key", key, env=env),
        2,
        "not inside an extraction output folder",
    )
    one_line_error(
        run_cli("predict", "--specs", str(folders[1]), "--api-key", key, env=env), 2, "cannot reach the Mishale broker"
    )
    one_line_error(
        run_cli("model", "pull", "--output", str(tmp_path / "m"), "--api-key", key, env=env), 2, "no audit verifier key"
    )
