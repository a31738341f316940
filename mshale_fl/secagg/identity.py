"""A partner's long-term identity key and the peer keys it has pinned.

The identity key (Ed25519) signs the partner's per-round secure-aggregation keys. It is created on
first use under the partner's home (`identity/<partner-id>.ed25519`, PKCS#8 PEM, owner-only), never
leaves the machine, and its public half is registered with Mishale on first authenticated contact
(ledger/identities.py).

Peers' identity keys reach a partner from the server, which could lie. `PinnedPeers` keeps the first
key seen for each peer (`identity/<partner-id>.peers.json`) and refuses a round that presents a
different one, so a server that substitutes a peer's key after the first round is caught; a
substitution in the very first round is the trust-on-first-use gap (README.md, "Identity keys").
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mshale_fl.fileio import write_atomic
from mshale_fl.secagg.errors import KeySubstitutionError
from mshale_fl.secagg.keys import raw_public

_lock = threading.Lock()


def identity_dir(home: Path) -> Path:
    return Path(home) / "identity"


def load_or_create_identity(home: Path, partner_id: str) -> Ed25519PrivateKey:
    """The partner's identity key, created (owner-readable only) the first time it is needed."""
    path = identity_dir(home) / f"{partner_id}.ed25519"
    with _lock:
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} does not hold an Ed25519 private key")
            return key
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)

        def write(handle):  # type: ignore[no-untyped-def]
            os.fchmod(handle.fileno(), 0o600)
            handle.write(pem)

        write_atomic(path, write)
        return key


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return raw_public(public)


class PinnedPeers:
    """Peer identity keys this partner has seen, pinned on first sight."""

    def __init__(self, home: Path, partner_id: str) -> None:
        self.path = identity_dir(home) / f"{partner_id}.peers.json"

    def _load(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        return dict(json.loads(self.path.read_text()))

    def check_and_pin(self, registry: Mapping[str, bytes]) -> dict[str, Ed25519PublicKey]:
        """Raise `KeySubstitutionError` if any peer's key differs from the pinned one; pin new peers."""
        with _lock:
            pinned = self._load()
            changed = sorted(p for p, key in registry.items() if p in pinned and pinned[p] != key.hex())
            if changed:
                raise KeySubstitutionError(
                    f"the identity keys the server sent for {changed} differ from the keys this partner pinned "
                    f"earlier ({self.path}); refusing the round (a substituted key would let the server read "
                    "this partner's shares). If a peer really replaced its key, delete its entry from that file."
                )
            new = {p: key.hex() for p, key in registry.items() if p not in pinned}
            if new:
                write_atomic(self.path, json.dumps({**pinned, **new}, indent=2, sort_keys=True) + "\n")
        return {p: Ed25519PublicKey.from_public_bytes(key) for p, key in registry.items()}


__all__ = ["PinnedPeers", "identity_dir", "load_or_create_identity", "public_key_bytes"]
