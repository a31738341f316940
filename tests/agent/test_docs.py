"""The agent's docs, sample config and systemd unit say what the code does."""

from __future__ import annotations

import configparser
import tomllib
from pathlib import Path

from pydantic import BaseModel

from mshale_fl.agents.partner.agent_config import AgentFile

ROOT = Path(__file__).resolve().parents[2]


def config_keys() -> list[tuple[str | None, str]]:
    keys: list[tuple[str | None, str]] = []
    for name, field in AgentFile.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend((name, inner) for inner in annotation.model_fields)
        else:
            keys.append((None, name))
    return keys


def test_every_config_key_is_documented_and_in_the_sample() -> None:
    doc = (ROOT / "docs" / "agent.md").read_text()
    sample = (ROOT / "examples" / "partner.toml").read_text()
    for section, key in config_keys():
        if section is None:
            assert f"| `{key}` |" in doc, key
        else:
            assert f"`[{section}] {key}" in doc or (f"`[{section}]" in doc and f"`{key}`" in doc), (section, key)
        assert f"{key} =" in sample, (section, key)  # set or shown commented out
    tomllib.loads(sample)


def test_the_systemd_unit_runs_the_agent_and_does_not_restart_on_a_config_mistake() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "deploy" / "mshale-agent.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("mshale-fl agent run --config /etc/mshale/partner.toml")
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"
    assert int(service["TimeoutStopSec"]) > 10 + 15  # shutdown_grace + the training node's bye
    assert unit["Install"]["WantedBy"] == "multi-user.target"
