"""Self-describing API keys: the key names its partner, so `submit` needs nothing else."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, update

from mshale_fl.ledger import register_partner, verify_api_key
from mshale_fl.ledger.api_keys import MalformedApiKey, generate_api_key, key_id_of, partner_id_from_key
from mshale_fl.ledger.tables import api_keys

from .support import unique_partner_id


def test_a_key_names_its_partner_and_key_id() -> None:
    key_id, key = generate_api_key("lab-a")
    assert key.startswith(f"mshale_lab-a_{key_id}_") and len(key_id) == 16
    assert partner_id_from_key(key) == "lab-a" and key_id_of(key) == key_id
    assert partner_id_from_key(f"  {key}\n") == "lab-a"  # pasted with whitespace
    # The secret may contain '_' and '-': the split still holds, because partner ids never contain '_'.
    tricky = f"mshale_lab-b-2_{'0' * 16}_{'_-' * 21}A"
    assert partner_id_from_key(tricky) == "lab-b-2" and key_id_of(tricky) == "0" * 16
    with pytest.raises(ValueError):
        generate_api_key("lab_a")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "empty"),
        ("sk-live-1234567890", "malformed"),
        (f"mshale_Lab-A_{'0' * 16}_{'A' * 43}", "malformed"),  # partner ids are lower case
        (f"mshale_lab-a_{'0' * 15}_{'A' * 43}", "malformed"),
        (f"mshale_{'0' * 16}_{'A' * 43}", "issued before keys named their partner"),
    ],
)
def test_a_malformed_key_is_a_clear_error_that_never_repeats_it(key: str, message: str) -> None:
    with pytest.raises(MalformedApiKey, match=message) as error:
        partner_id_from_key(key)
    assert not key or key not in str(error.value)


def test_the_partner_id_in_a_key_cannot_be_swapped(engine: Engine) -> None:
    alice = register_partner(engine, unique_partner_id(), tier=1, broker=None)
    bob = register_partner(engine, unique_partner_id(), tier=1, broker=None)
    key = alice.key.api_key.get_secret_value()
    with engine.begin() as connection:
        assert verify_api_key(connection, key) == alice.partner.id
        assert verify_api_key(connection, key.replace(alice.partner.id, bob.partner.id, 1)) is None
        # Even if the stored row were moved to bob, the key still names alice: refused.
        connection.execute(update(api_keys).where(api_keys.c.key_id == alice.key.key_id).values(partner_id=bob.partner.id))
        assert verify_api_key(connection, key) is None
