"""The agent config: every mistake is one line naming the key and the fix; the sample config loads."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import SecretStr

from mshale_fl.agents.partner.agent_config import AgentConfigError, load_agent_config
from mshale_fl.config import Settings
from mshale_fl.ledger.api_keys import generate_api_key

from .support import agent_env, cli, write_config, write_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def key() -> str:
    return generate_api_key("lab-a")[1]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    return folder


def settings(tmp_path: Path, api_key: str | None = None) -> Settings:
    return Settings(home=tmp_path / "home", api_key=SecretStr(api_key) if api_key else None, partner_id=None)


def error_of(path: Path, tmp_path: Path, api_key: str | None = None) -> str:
    with pytest.raises(AgentConfigError) as caught:
        load_agent_config(path, settings(tmp_path, api_key))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_good_config_resolves_paths_key_and_partner(tmp_path: Path, corpus: Path, key: str) -> None:
    write_key(tmp_path / "api-key", key)
    path = write_config(tmp_path / "partner.toml", corpus="corpus", tier=1, api_key_file="api-key", home="state",
                        sections={"agent": {"poll_seconds": 1}, "sensitivity": {"default": "published"}})  # fmt: skip
    config = load_agent_config(path, settings(tmp_path))
    assert config.corpus == corpus.resolve() and config.home == tmp_path / "state"
    assert config.partner_id == "lab-a" and config.api_key == key and config.api_key_source == str(tmp_path / "api-key")
    assert config.agent.poll_seconds == 1 and config.submit_tier == 1
    assert key not in repr(config)


def test_the_key_may_come_from_the_environment(tmp_path: Path, corpus: Path, key: str) -> None:
    path = write_config(tmp_path / "partner.toml", corpus=str(corpus), tier=1)
    config = load_agent_config(path, settings(tmp_path, key))
    assert config.api_key_source == "MSHALE_API_KEY" and config.home == (tmp_path / "home").resolve()


@pytest.mark.parametrize(
    ("top", "sections", "needles"),
    [
        ({"tier": 1, "pol_seconds": 3}, {}, ["unknown key 'pol_seconds'"]),
        ({"tier": 1}, {"agent": {"pol_seconds": 3}}, ["unknown key 'agent.pol_seconds'", "did you mean 'poll_seconds'"]),
        ({"tier": 1}, {"trainig": {"dp_epsilon": 1}}, ["unknown key 'trainig'", "did you mean 'training'"]),
        ({"tier": 4}, {}, ["tier: must be 1 (specs), 2 (feature vectors) or 3 (federated training), got 4"]),
        ({"tier": "1"}, {}, ["tier: Input should be a valid integer"]),
        ({}, {}, ["'tier' is required"]),
        ({"tier": 1}, {"agent": {"poll_seconds": 0}}, ["agent.poll_seconds: Input should be greater than 0"]),
        ({"tier": 2}, {}, ["Data Processing Agreement", "dpa = true"]),
        ({"tier": 3}, {"agreements": {"dpa": True}}, ["federated_training = true"]),
        ({"tier": 1}, {"sensitivity": {"default": "secret"}}, ["sensitivity.default"]),
        ({"tier": 1}, {"audit": {"verifier_key": "not-a-key"}}, ["audit.verifier_key is not a verifier key", "audit pubkey"]),
    ],
)  # fmt: skip
def test_config_mistakes_are_one_line(tmp_path: Path, corpus: Path, key: str, top: dict, sections: dict,
                                      needles: list[str]) -> None:  # fmt: skip
    path = write_config(tmp_path / "partner.toml", corpus=str(corpus), **top, sections=sections)
    message = error_of(path, tmp_path, key)
    assert message.startswith(str(path)) or "Data Processing Agreement" in message
    for needle in needles:
        assert needle in message, message


def test_a_missing_corpus_or_key_names_the_fix(tmp_path: Path, corpus: Path, key: str) -> None:
    path = write_config(tmp_path / "partner.toml", corpus="nowhere", tier=1)
    assert f"corpus {tmp_path / 'nowhere'} does not exist" in error_of(path, tmp_path, key)
    path = write_config(tmp_path / "partner.toml", tier=1)
    assert "'corpus' is required" in error_of(path, tmp_path, key)
    path = write_config(tmp_path / "partner.toml", corpus=str(corpus), tier=1)
    assert "no API key: set api_key_file" in error_of(path, tmp_path) and "MSHALE_API_KEY" in error_of(path, tmp_path)
    path = write_config(tmp_path / "partner.toml", corpus=str(corpus), tier=1, api_key_file="missing-key")
    assert f"api_key_file {tmp_path / 'missing-key'} does not exist" in error_of(path, tmp_path, key)
    write_key(tmp_path / "bad-key", "not a key")
    path = write_config(tmp_path / "partner.toml", corpus=str(corpus), tier=1, api_key_file="bad-key")
    message = error_of(path, tmp_path, key)
    assert "cannot be used" in message and "not a key" not in message
    path = write_config(tmp_path / "partner.toml", corpus=str(corpus), tier=1, partner_id="lab-b")
    assert "partner_id 'lab-b' does not match the API key, which belongs to 'lab-a'" in error_of(path, tmp_path, key)
    assert "does not exist" in error_of(tmp_path / "absent.toml", tmp_path, key)
    (tmp_path / "broken.toml").write_text("tier = \n")
    assert "is not valid TOML" in error_of(tmp_path / "broken.toml", tmp_path, key)


def test_tier_3_submits_vectors_under_a_dpa_and_specs_otherwise(tmp_path: Path, corpus: Path, key: str) -> None:
    def submit_tier(**agreements: bool) -> int:
        path = write_config(tmp_path / "partner.toml", corpus=str(corpus), tier=3,
                            sections={"agreements": {"federated_training": True, **agreements}})  # fmt: skip
        return load_agent_config(path, settings(tmp_path, key)).submit_tier

    assert submit_tier(dpa=True) == 2 and submit_tier(irb=True) == 1


def test_the_sample_config_is_valid(tmp_path: Path, key: str) -> None:
    sample = (ROOT / "examples" / "partner.toml").read_text(encoding="utf-8")
    data = tomllib.loads(sample)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "partner.toml").write_text(sample.replace(f'corpus = "{data["corpus"]}"', 'corpus = "corpus"'))
    config = load_agent_config(tmp_path / "partner.toml", settings(tmp_path, generate_api_key(data["partner_id"])[1]))
    assert config.partner_id == data["partner_id"] and config.tier == data["tier"]


def test_a_bad_config_stops_the_daemon_with_one_line_and_exit_2(tmp_path: Path, corpus: Path) -> None:
    path = write_config(tmp_path / "partner.toml", corpus=str(corpus), tier=1, sections={"agent": {"pol_seconds": 1}})
    result = cli("agent", "run", "--config", str(path), env=agent_env("amqp://guest:guest@127.0.0.1:1/", tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: unknown key 'agent.pol_seconds' (did you mean 'poll_seconds'?)"
    ]
