"""How `join` finds its identity and broker, and the mistakes `serve` and `join` turn into one line."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from mshale_fl.cli.train_cmd import join, partner_broker_url, resolve_partner_id
from mshale_fl.errors import UserFacingError
from mshale_fl.ledger.api_keys import generate_api_key
from mshale_fl.ledger.broker_identity import broker_password


def test_the_partner_id_comes_from_the_api_key() -> None:
    _key_id, key = generate_api_key("lab-a")
    assert resolve_partner_id(key, None) == "lab-a"
    assert resolve_partner_id(key, "lab-a") == "lab-a"
    with pytest.raises(UserFacingError, match="does not match the API key"):
        resolve_partner_id(key, "lab-b")


def test_without_a_key_the_partner_id_must_be_given() -> None:
    assert resolve_partner_id(None, "lab-a") == "lab-a"
    with pytest.raises(UserFacingError, match="no partner id"):
        resolve_partner_id(None, None)
    with pytest.raises(UserFacingError, match="is not a partner id"):
        resolve_partner_id(None, "Lab_A")


def test_the_partner_logs_in_as_itself_on_the_server_given() -> None:
    _key_id, key = generate_api_key("lab-a")
    url = partner_broker_url("amqp://guest:guest@localhost:5672/prod", "lab-a", key, "broker.mishale.example:5671")
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.path) == ("broker.mishale.example", 5671, "/prod")
    assert parts.username == "lab-a" and unquote(parts.password or "") == broker_password(key)


def test_without_a_key_the_configured_credentials_are_used() -> None:
    url = partner_broker_url("amqp://guest:secret@localhost:5672/vh", "lab-a", None, "10.0.0.5:5672")
    assert url == "amqp://guest:secret@10.0.0.5:5672/vh"
    assert partner_broker_url("amqp://guest:secret@localhost:5672/vh", "lab-a", None, None) == url.replace(
        "10.0.0.5", "localhost"
    )
    with pytest.raises(UserFacingError, match="HOST:PORT"):
        partner_broker_url("amqp://localhost/", "lab-a", None, "host:port")


def test_join_is_for_tier_3(tmp_path: Path) -> None:
    with pytest.raises(UserFacingError, match="Tier 3"):
        join(server=None, corpus=tmp_path, tier=2, dp_epsilon=0.5, partner_id="lab-a", heartbeat=5.0)


def test_join_refuses_an_untrainable_corpus_before_connecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSHALE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MSHALE_BROKER_URL", "amqp://guest:guest@127.0.0.1:1/")  # nothing listens: never reached
    from mshale_fl.config import get_settings

    get_settings.cache_clear()
    try:
        (tmp_path / "empty").mkdir()
        with pytest.raises(UserFacingError, match="no Tier 3 protocols with outcomes"):
            join(server=None, corpus=tmp_path / "empty", tier=3, dp_epsilon=0.5, partner_id="lab-a", heartbeat=5.0)
        with pytest.raises(UserFacingError, match="does not exist"):
            join(server=None, corpus=tmp_path / "missing", tier=3, dp_epsilon=0.5, partner_id="lab-a", heartbeat=5.0)
    finally:
        get_settings.cache_clear()
