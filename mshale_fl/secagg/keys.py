"""Round keys, signed key advertisements and the secrets derived from X25519 agreements.

Every partner makes two X25519 key pairs per round: `c` to encrypt Shamir shares to its neighbours
and `s` whose pairwise agreements seed the masks. It signs both public keys, bound to the round and to
its own id, with its long-term Ed25519 identity key, which the coordinator registered when the partner
joined. A server that swaps in its own keys (to learn shares or masks) is caught because it cannot
produce the signature.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from mshale_fl.secagg.errors import KeySubstitutionError, SecAggError

_DOMAIN = b"mshale-fl/secagg/v1"
_NONCE_BYTES = 12


def raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@dataclass(frozen=True)
class KeyAdvertisement:
    """A partner's two round public keys, signed with its registered identity key."""

    partner_id: str
    encryption_public_key: bytes
    masking_public_key: bytes
    signature: bytes


def _advertisement_transcript(
    round_id: bytes, partner_id: str, c_pk: bytes, s_pk: bytes
) -> bytes:
    pid = partner_id.encode()
    # Length prefixes make the transcript unambiguous, so no two different fields sign the same bytes.
    parts = [_DOMAIN, b"advertise", round_id, pid, c_pk, s_pk]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


@dataclass
class RoundKeys:
    """A partner's fresh key pairs for one round."""

    encryption_key: X25519PrivateKey
    masking_key: X25519PrivateKey

    @classmethod
    def generate(cls) -> RoundKeys:
        return cls(X25519PrivateKey.generate(), X25519PrivateKey.generate())

    def advertise(
        self, partner_id: str, round_id: bytes, identity: Ed25519PrivateKey
    ) -> KeyAdvertisement:
        c_pk = raw_public(self.encryption_key.public_key())
        s_pk = raw_public(self.masking_key.public_key())
        signature = identity.sign(
            _advertisement_transcript(round_id, partner_id, c_pk, s_pk)
        )
        return KeyAdvertisement(partner_id, c_pk, s_pk, signature)


def verify_advertisement(
    advertisement: KeyAdvertisement,
    round_id: bytes,
    identity_public_key: Ed25519PublicKey,
) -> None:
    """Raise `KeySubstitutionError` unless the keys carry the partner's identity signature for this round."""
    transcript = _advertisement_transcript(
        round_id,
        advertisement.partner_id,
        advertisement.encryption_public_key,
        advertisement.masking_public_key,
    )
    try:
        identity_public_key.verify(advertisement.signature, transcript)
    except InvalidSignature:
        raise KeySubstitutionError(
            f"the round keys advertised for partner {advertisement.partner_id!r} are not signed by its "
            "registered identity key; the server or the network substituted them"
        ) from None


def _pair_info(purpose: bytes, round_id: bytes, a: str, b: str) -> bytes:
    low, high = sorted((a, b))
    parts = [_DOMAIN, purpose, round_id, low.encode(), high.encode()]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _derive(private: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # a low-order point gives an all-zero secret
        raise SecAggError(f"key agreement failed: {exc}") from None
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
        shared
    )


def pairwise_mask_seed(
    masking_key: X25519PrivateKey,
    peer_masking_public: bytes,
    round_id: bytes,
    me: str,
    peer: str,
) -> bytes:
    """The 32-byte seed both partners of a pair derive for their shared mask."""
    return _derive(
        masking_key, peer_masking_public, _pair_info(b"mask", round_id, me, peer)
    )


def pairwise_aead_key(
    encryption_key: X25519PrivateKey,
    peer_encryption_public: bytes,
    round_id: bytes,
    me: str,
    peer: str,
) -> bytes:
    return _derive(
        encryption_key, peer_encryption_public, _pair_info(b"aead", round_id, me, peer)
    )


def _share_aad(round_id: bytes, sender: str, recipient: str) -> bytes:
    # Direction matters: a ciphertext from u to v must not be accepted as one from v to u.
    parts = [_DOMAIN, b"share", round_id, sender.encode(), recipient.encode()]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def encrypt_for(
    key: bytes, round_id: bytes, sender: str, recipient: str, plaintext: bytes
) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(
        nonce, plaintext, _share_aad(round_id, sender, recipient)
    )


def decrypt_from(
    key: bytes, round_id: bytes, sender: str, recipient: str, ciphertext: bytes
) -> bytes:
    nonce, body = ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, body, _share_aad(round_id, sender, recipient))
    except InvalidTag:
        raise SecAggError(
            f"the encrypted shares from {sender!r} to {recipient!r} failed authentication"
        ) from None


def _survivors_transcript(round_id: bytes, survivors: frozenset[str]) -> bytes:
    parts = [_DOMAIN, b"survivors", round_id, *(p.encode() for p in sorted(survivors))]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def sign_survivors(
    identity: Ed25519PrivateKey, round_id: bytes, survivors: frozenset[str]
) -> bytes:
    """A partner's statement that, in this round, exactly `survivors` sent masked input."""
    return identity.sign(_survivors_transcript(round_id, survivors))


def survivors_signature_valid(
    signature: bytes,
    round_id: bytes,
    survivors: frozenset[str],
    identity_public_key: Ed25519PublicKey,
) -> bool:
    try:
        identity_public_key.verify(
            signature, _survivors_transcript(round_id, survivors)
        )
    except InvalidSignature:
        return False
    return True


def confirmed_survivors(
    signatures: Mapping[str, bytes],
    round_id: bytes,
    survivors: frozenset[str],
    registry: Mapping[str, Ed25519PublicKey],
    enough: int,
) -> set[str]:
    """Survivors whose signature of `survivors` is valid, checking until `enough` are found.

    The unmasking rule needs only "at least t survivors signed this set", so verifying the rest would
    add n - t signature checks per partner and prove nothing more. The transcript is built once.
    """
    transcript = _survivors_transcript(round_id, survivors)
    confirmed: set[str] = set()
    for partner in sorted(signatures):
        if len(confirmed) >= enough:
            break
        if partner not in survivors or partner not in registry:
            continue
        try:
            registry[partner].verify(signatures[partner], transcript)
        except InvalidSignature:
            continue
        confirmed.add(partner)
    return confirmed
