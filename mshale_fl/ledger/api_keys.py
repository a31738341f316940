"""Partner API keys: generated once, shown once, stored only as a slow salted hash.

A key looks like `mshale_<partner id>_<key id>_<secret>`. It is self-describing: the partner agent
learns from the key alone which partner it acts for (its broker user name and routing-key prefix),
so `mshale-fl submit --api-key KEY` needs no partner id. Partner ids never contain `_` (see
`partners.PARTNER_ID_PATTERN`), so the key splits unambiguously even though the URL-safe secret
may contain `_`. Neither the partner id nor the key id (16 hex characters) is secret: the key id is
stored in clear so verification finds the one row to check instead of hashing against every row.
The hash covers the whole key, partner id included, so editing the partner id breaks the key.
The hash is scrypt (memory-hard, so a stolen table costs an attacker memory as well as time per
guess) with a per-key random salt; its parameters are stored with it so they can be raised later
without invalidating existing keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from pydantic import SecretStr
from sqlalchemy import Connection, insert, select, update

from mshale_fl.ledger._sql import now_utc
from mshale_fl.ledger.errors import LedgerError
from mshale_fl.ledger.tables import api_keys, partners

KEY_PREFIX = "mshale"
_KEY_PATTERN = re.compile(r"^mshale_([a-z0-9][a-z0-9-]{1,62})_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_LEGACY_KEY_PATTERN = re.compile(r"^mshale_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
"""Keys issued before keys named their partner: still verified, but they cannot drive `submit`."""

SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_DKLEN = 32
ALGORITHM = f"scrypt$n={SCRYPT_N}$r={SCRYPT_R}$p={SCRYPT_P}"


@dataclass(frozen=True)
class IssuedKey:
    """A freshly issued key. `api_key` is a SecretStr so a stray repr or log line cannot leak it."""

    partner_id: str
    key_id: str
    api_key: SecretStr


class MalformedApiKey(LedgerError):
    """The string given as an API key does not have the shape of one (the message never repeats it)."""


def generate_api_key(partner_id: str) -> tuple[str, str]:
    """(key id, full key) for the partner; 256 bits of secret."""
    if "_" in partner_id or not partner_id:
        raise ValueError("a partner id in an API key must be non-empty and contain no '_'")
    key_id = secrets.token_hex(8)
    return key_id, f"{KEY_PREFIX}_{partner_id}_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(api_key: str) -> str | None:
    match = _KEY_PATTERN.match(api_key)
    if match:
        return match.group(2)
    legacy = _LEGACY_KEY_PATTERN.match(api_key)
    return legacy.group(1) if legacy else None


def partner_id_from_key(api_key: str) -> str:
    """The partner an API key was issued to, read from the key itself (no lookup, no verification).

    Raises `MalformedApiKey` with a message that describes the problem without echoing the key.
    """
    key = api_key.strip()
    match = _KEY_PATTERN.match(key)
    if match:
        return match.group(1)
    if _LEGACY_KEY_PATTERN.match(key):
        raise MalformedApiKey(
            "this API key was issued before keys named their partner; ask Mishale for a new key "
            "(`mshale-fl partners add` prints keys of the form mshale_<partner id>_<key id>_<secret>)"
        )
    if not key:
        raise MalformedApiKey("the API key is empty; pass --api-key or set MSHALE_API_KEY")
    raise MalformedApiKey(
        f"the API key is malformed ({len(key)} characters): expected mshale_<partner id>_<16 hex key id>_<43-character "
        "secret>, exactly as `mshale-fl partners add` printed it"
    )


def _parse_algorithm(algorithm: str) -> tuple[int, int, int]:
    name, *params = algorithm.split("$")
    if name != "scrypt":
        raise ValueError(f"unknown API key hash algorithm {name!r}")
    values = dict(param.split("=", 1) for param in params)
    return int(values["n"]), int(values["r"]), int(values["p"])


def hash_api_key(api_key: str, salt: bytes, algorithm: str = ALGORITHM) -> str:
    n, r, p = _parse_algorithm(algorithm)
    digest = hashlib.scrypt(
        api_key.encode(), salt=salt, n=n, r=r, p=p, dklen=_SCRYPT_DKLEN, maxmem=256 * r * n + 1024 * 1024
    )
    return digest.hex()


def issue_api_key(connection: Connection, partner_id: str) -> IssuedKey:
    """Create and store (hashed) a new key for the partner; the only time the key is available."""
    key_id, api_key = generate_api_key(partner_id)
    salt = secrets.token_bytes(16)
    connection.execute(
        insert(api_keys).values(
            key_id=key_id,
            partner_id=partner_id,
            algorithm=ALGORITHM,
            salt=salt.hex(),
            key_hash=hash_api_key(api_key, salt),
            created_at=now_utc(),
        )
    )
    return IssuedKey(partner_id=partner_id, key_id=key_id, api_key=SecretStr(api_key))


def verify_api_key(connection: Connection, api_key: str) -> str | None:
    """The partner the key belongs to, if the key is valid, unrevoked and its partner active."""
    key_id = key_id_of(api_key)
    if key_id is None:
        return None
    match = _KEY_PATTERN.match(api_key)
    row = connection.execute(
        select(api_keys.c.partner_id, api_keys.c.algorithm, api_keys.c.salt, api_keys.c.key_hash)
        .join(partners, partners.c.id == api_keys.c.partner_id)
        .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None), partners.c.status == "active")
    ).first()
    if row is None or (match is not None and match.group(1) != row.partner_id):
        return None
    candidate = hash_api_key(api_key, bytes.fromhex(row.salt), row.algorithm)
    return row.partner_id if hmac.compare_digest(candidate, row.key_hash) else None


def revoke_api_keys(connection: Connection, partner_id: str) -> int:
    return connection.execute(
        update(api_keys)
        .where(api_keys.c.partner_id == partner_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now_utc())
    ).rowcount
