"""Where the training server keeps partners' identity keys (see ledger/identities.py for the policy).

`LedgerIdentities` is the real registry (`mshale-fl serve`); `MemoryIdentities` keeps first-seen keys
for one process (Flower's own deployment and tests). Both register on first sight and refuse a
different key afterwards, returning the refusal as a reason string the server logs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import Engine

from mshale_fl.ledger.identities import IdentityKeyMismatch, identity_keys, register_identity_key


class IdentityRegistry(Protocol):
    def register(self, partner_id: str, public_key: bytes) -> str | None:
        """Register (first sight) or check the partner's key; the reason it is refused, or None."""

    def keys(self, partner_ids: Iterable[str]) -> dict[str, bytes]: ...


class LedgerIdentities:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, partner_id: str, public_key: bytes) -> str | None:
        try:
            with self.engine.begin() as connection:
                register_identity_key(connection, partner_id, public_key)
        except IdentityKeyMismatch as error:
            return str(error)
        return None

    def keys(self, partner_ids: Iterable[str]) -> dict[str, bytes]:
        with self.engine.connect() as connection:
            return identity_keys(connection, partner_ids)


class MemoryIdentities:
    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def register(self, partner_id: str, public_key: bytes) -> str | None:
        with self._lock:
            known = self._keys.setdefault(partner_id, public_key)
        if known != public_key:
            return f"partner {partner_id!r} presented an identity key other than the one it used before"
        return None

    def keys(self, partner_ids: Iterable[str]) -> dict[str, bytes]:
        with self._lock:
            return {p: self._keys[p] for p in partner_ids if p in self._keys}


__all__ = ["IdentityRegistry", "LedgerIdentities", "MemoryIdentities"]
