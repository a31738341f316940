"""What the log needs from storage: write-once objects under string keys, read back and listed.

A store never overwrites. `put_immutable` creates a key or fails with `ObjectExistsError`; it
is the only write operation, so the log built on it can only be extended. Stores that keep
history (S3 with versioning) also report it through `key_history`, so a verifier can flag any
key that was ever written twice or deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "KeyHistory",
    "ObjectExistsError",
    "ObjectMissingError",
    "ObjectStore",
    "StoreError",
    "check_key",
]


class StoreError(RuntimeError):
    """Storage failed (unreachable, misconfigured, refused)."""


class ObjectExistsError(StoreError):
    """A write-once key already holds an object."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} already exists and is immutable")
        self.key = key


class ObjectMissingError(StoreError):
    """A key that should exist does not."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} does not exist")
        self.key = key


@dataclass(frozen=True)
class KeyHistory:
    """Every version a versioned store holds for one key (oldest first)."""

    key: str
    versions: tuple[str, ...]
    delete_markers: tuple[str, ...] = field(default=())

    @property
    def tampered(self) -> bool:
        return len(self.versions) > 1 or bool(self.delete_markers)


@runtime_checkable
class ObjectStore(Protocol):
    """Write-once object storage. Keys are '/'-separated relative paths of [A-Za-z0-9._-]."""

    @property
    def description(self) -> str:
        """Where the objects live, for messages (a directory, s3://bucket/prefix)."""
        ...

    def put_immutable(self, key: str, data: bytes) -> None:
        """Create `key` holding `data`; raise `ObjectExistsError` if it exists."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes of `key`; raise `ObjectMissingError` if absent."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`, sorted."""
        ...

    def key_history(self, prefix: str) -> list[KeyHistory] | None:
        """Version history of every key under `prefix`, or None if the store keeps no history."""
        ...


_KEY_PART = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def check_key(key: str) -> None:
    """Refuse keys that could escape a directory or collide after normalisation."""
    parts = key.split("/")
    if not key or any(not part or part in (".", "..") or not set(part) <= _KEY_PART for part in parts):
        raise StoreError(f"invalid object key {key!r}")
