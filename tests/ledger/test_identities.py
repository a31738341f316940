"""Identity keys: registered on first sight, a different key refused until reset; the partner's own key file and pins."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mshale_fl.agents.mishale.identities import LedgerIdentities, MemoryIdentities
from mshale_fl.ledger.identities import (
    IdentityKeyMismatch,
    identity_key,
    identity_keys,
    register_identity_key,
    reset_identity_key,
)
from mshale_fl.secagg.errors import KeySubstitutionError
from mshale_fl.secagg.identity import PinnedPeers, load_or_create_identity, public_key_bytes

from .helpers import MakePartner


def test_first_key_is_registered_and_a_different_one_refused_until_reset(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner(tier=3).id
    first, second = b"\x01" * 32, b"\x02" * 32
    with engine.begin() as connection:
        assert register_identity_key(connection, partner, first) is True
        assert register_identity_key(connection, partner, first) is False  # the same key again: fine
    with engine.begin() as connection, pytest.raises(IdentityKeyMismatch, match="reset-identity"):
        register_identity_key(connection, partner, second)
    with engine.begin() as connection:
        assert identity_key(connection, partner).public_key == first  # type: ignore[union-attr]
        assert identity_keys(connection, [partner, "nobody"]) == {partner: first}
        assert reset_identity_key(connection, partner) is True
        assert register_identity_key(connection, partner, second) is True
    with engine.begin() as connection, pytest.raises(IdentityKeyMismatch, match="32 bytes"):
        register_identity_key(connection, partner, b"short")


@pytest.mark.parametrize("registry", ["ledger", "memory"])
def test_server_registries_report_a_changed_key_as_a_refusal(engine: Engine, make_partner: MakePartner, registry: str) -> None:
    partner = make_partner(tier=3).id
    identities = LedgerIdentities(engine) if registry == "ledger" else MemoryIdentities()
    assert identities.register(partner, b"\x01" * 32) is None
    assert identities.register(partner, b"\x01" * 32) is None
    refusal = identities.register(partner, b"\x03" * 32)
    assert refusal is not None and partner in refusal
    assert identities.keys([partner]) == {partner: b"\x01" * 32}


def test_the_partner_identity_key_is_created_once_and_private(tmp_path: Path) -> None:
    key = load_or_create_identity(tmp_path, "lab-a")
    again = load_or_create_identity(tmp_path, "lab-a")
    assert public_key_bytes(key) == public_key_bytes(again)
    path = tmp_path / "identity" / "lab-a.ed25519"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_bytes(load_or_create_identity(tmp_path, "lab-b")) != public_key_bytes(key)


def test_pins_accept_known_and_new_peers_and_refuse_a_changed_key(tmp_path: Path) -> None:
    pins = PinnedPeers(tmp_path, "lab-a")
    b, c = public_key_bytes(load_or_create_identity(tmp_path / "b", "lab-b")), b"\x05" * 32
    pins.check_and_pin({"lab-b": b})
    pins.check_and_pin({"lab-b": b, "lab-c": c})  # a new peer is pinned
    assert json.loads(pins.path.read_text()) == {"lab-b": b.hex(), "lab-c": c.hex()}
    with pytest.raises(KeySubstitutionError, match="lab-c"):
        pins.check_and_pin({"lab-b": b, "lab-c": b"\x06" * 32})
    assert json.loads(pins.path.read_text())["lab-c"] == c.hex()  # nothing changed by the refused round
