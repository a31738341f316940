from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mshale_fl.secagg.errors import KeySubstitutionError, SecAggError
from mshale_fl.secagg.keys import (
    RoundKeys,
    confirmed_survivors,
    decrypt_from,
    encrypt_for,
    pairwise_aead_key,
    pairwise_mask_seed,
    sign_survivors,
    verify_advertisement,
)

ROUND = b"round-1"


def test_both_sides_derive_the_same_distinct_secrets() -> None:
    alice, bob = RoundKeys.generate(), RoundKeys.generate()
    a_ad = alice.advertise("alice", ROUND, Ed25519PrivateKey.generate())
    b_ad = bob.advertise("bob", ROUND, Ed25519PrivateKey.generate())
    seed_a = pairwise_mask_seed(
        alice.masking_key, b_ad.masking_public_key, ROUND, "alice", "bob"
    )
    seed_b = pairwise_mask_seed(
        bob.masking_key, a_ad.masking_public_key, ROUND, "bob", "alice"
    )
    assert seed_a == seed_b and len(seed_a) == 32
    aead_a = pairwise_aead_key(
        alice.encryption_key, b_ad.encryption_public_key, ROUND, "alice", "bob"
    )
    aead_b = pairwise_aead_key(
        bob.encryption_key, a_ad.encryption_public_key, ROUND, "bob", "alice"
    )
    assert aead_a == aead_b and aead_a != seed_a
    other_round = pairwise_mask_seed(
        alice.masking_key, b_ad.masking_public_key, b"r2", "alice", "bob"
    )
    assert other_round != seed_a


def test_genuine_advertisement_verifies() -> None:
    identity = Ed25519PrivateKey.generate()
    ad = RoundKeys.generate().advertise("alice", ROUND, identity)
    verify_advertisement(ad, ROUND, identity.public_key())


def test_substituted_keys_are_detected() -> None:
    identity = Ed25519PrivateKey.generate()
    ad = RoundKeys.generate().advertise("alice", ROUND, identity)
    attacker = RoundKeys.generate().advertise(
        "alice", ROUND, Ed25519PrivateKey.generate()
    )
    forged = [
        replace(ad, masking_public_key=attacker.masking_public_key),
        replace(ad, encryption_public_key=attacker.encryption_public_key),
        attacker,  # fully re-signed by a key that is not alice's registered identity
        replace(ad, partner_id="bob"),
    ]
    for candidate in forged:
        with pytest.raises(KeySubstitutionError, match="not signed"):
            verify_advertisement(candidate, ROUND, identity.public_key())
    with pytest.raises(KeySubstitutionError):  # replayed from another round
        verify_advertisement(ad, b"round-2", identity.public_key())


def test_share_ciphertexts_are_bound_to_direction_and_round() -> None:
    key = bytes(range(32))
    ct = encrypt_for(key, ROUND, "alice", "bob", b"shares")
    assert decrypt_from(key, ROUND, "alice", "bob", ct) == b"shares"
    for args in [(ROUND, "bob", "alice"), (b"r2", "alice", "bob")]:
        with pytest.raises(SecAggError, match="failed authentication"):
            decrypt_from(key, *args, ct)
    tampered = ct[:-1] + bytes([ct[-1] ^ 1])
    with pytest.raises(SecAggError):
        decrypt_from(key, ROUND, "alice", "bob", tampered)


def test_confirmed_survivors_counts_only_valid_signatures_of_survivors_and_stops_at_enough() -> None:
    identities = {p: Ed25519PrivateKey.generate() for p in "abcdef"}
    registry = {p: k.public_key() for p, k in identities.items()}
    survivors = frozenset("abcde")
    signatures = {p: sign_survivors(identities[p], ROUND, survivors) for p in "abcde"}
    signatures["b"] = sign_survivors(identities["b"], ROUND, frozenset("abcd"))  # another set
    signatures["c"] = sign_survivors(identities["c"], b"other-round", survivors)  # another round
    signatures["f"] = sign_survivors(identities["f"], ROUND, survivors)  # not a survivor
    signatures["e"] = sign_survivors(identities["a"], ROUND, survivors)  # someone else's key
    assert confirmed_survivors(signatures, ROUND, survivors, registry, enough=5) == {"a", "d"}
    # Without a registered key a signature counts for nothing.
    assert confirmed_survivors(signatures, ROUND, survivors, {"a": registry["a"]}, enough=5) == {"a"}
    # Verification stops once `enough` partners are confirmed.
    all_good = {p: sign_survivors(identities[p], ROUND, survivors) for p in "abcde"}
    assert len(confirmed_survivors(all_good, ROUND, survivors, registry, enough=3)) == 3
