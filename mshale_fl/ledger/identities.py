"""Partners' identity keys: the Ed25519 public key each partner signs its secure-aggregation keys with.

Registered on first authenticated contact (trust on first use): the first `query.dp_plan` reply a
partner sends over its own broker credentials carries its identity public key, and the training
server records it here. From then on a different key for that partner is refused
(`IdentityKeyMismatch`) until an operator resets it (`mshale-fl partners reset-identity`), for
example after the partner lost its key. The server passes these keys to every partner of a round, so
no one (a relaying broker, a compromised server process) can substitute a partner's round keys without
a signature check failing; partners additionally pin the keys they have seen (secagg/identity.py).

Table created by migration 4 (store/migrations.py); released table shapes are frozen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, Connection, DateTime, ForeignKey, LargeBinary, String, Table, delete, select

from mshale_fl.ledger._sql import as_utc, insert_if_absent, now_utc
from mshale_fl.ledger.errors import LedgerError
from mshale_fl.ledger.tables import PARTNER_ID
from mshale_fl.store.schema import metadata

IDENTITY_KEY_BYTES = 32

partner_identity_keys = Table(
    "partner_identity_keys",
    metadata,
    Column("partner_id", PARTNER_ID, ForeignKey("partners.id"), primary_key=True),
    Column("public_key", LargeBinary(IDENTITY_KEY_BYTES), nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
)

IDENTITY_TABLES = ("partner_identity_keys",)


class IdentityKeyMismatch(LedgerError):
    """A partner presented an identity key other than the one registered for it."""


@dataclass(frozen=True)
class IdentityKey:
    partner_id: str
    public_key: bytes
    registered_at: datetime

    @property
    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.public_key).hexdigest()[:16]


def register_identity_key(connection: Connection, partner_id: str, public_key: bytes) -> bool:
    """Record `public_key` for the partner on first sight; True if it was new.

    Raises `IdentityKeyMismatch` when another key is already registered.
    """
    if len(public_key) != IDENTITY_KEY_BYTES:
        raise IdentityKeyMismatch(
            f"an identity key is {IDENTITY_KEY_BYTES} bytes (raw Ed25519), not {len(public_key)}"
        )
    inserted = insert_if_absent(
        connection,
        partner_identity_keys,
        {"partner_id": partner_id, "public_key": public_key, "registered_at": now_utc()},
    )
    if inserted:
        return True
    registered = identity_key(connection, partner_id)
    if registered is not None and registered.public_key != public_key:
        raise IdentityKeyMismatch(
            f"partner {partner_id!r} presented identity key {IdentityKey(partner_id, public_key, now_utc()).fingerprint}, "
            f"but {registered.fingerprint} is registered; if the partner replaced its key on purpose, an operator "
            f"resets it with `mshale-fl partners reset-identity {partner_id}`"
        )
    return False


def identity_key(connection: Connection, partner_id: str) -> IdentityKey | None:
    row = connection.execute(
        select(partner_identity_keys).where(partner_identity_keys.c.partner_id == partner_id)
    ).first()
    return None if row is None else IdentityKey(row.partner_id, bytes(row.public_key), as_utc(row.registered_at))


def identity_keys(connection: Connection, partner_ids: Iterable[str]) -> dict[str, bytes]:
    ids = list(partner_ids)
    rows = connection.execute(
        select(partner_identity_keys.c.partner_id, partner_identity_keys.c.public_key).where(
            partner_identity_keys.c.partner_id.in_(ids)
        )
    )
    return {row.partner_id: bytes(row.public_key) for row in rows}


def reset_identity_key(connection: Connection, partner_id: str) -> bool:
    """Forget the partner's identity key (the next contact registers a new one); True if one was removed."""
    return connection.execute(
        delete(partner_identity_keys).where(partner_identity_keys.c.partner_id == partner_id)
    ).rowcount == 1


__all__ = [
    "IDENTITY_KEY_BYTES",
    "IDENTITY_TABLES",
    "IdentityKey",
    "IdentityKeyMismatch",
    "identity_key",
    "identity_keys",
    "partner_identity_keys",
    "register_identity_key",
    "reset_identity_key",
]
