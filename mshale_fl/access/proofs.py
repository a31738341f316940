"""Audit receipts of `model.published` events: the proof a partner checks a downloaded model against.

A download is checked twice by the partner: against the registry's digest (in the reply) and
against the audit log, whose signed checkpoints Mishale cannot rewrite without every witness
noticing. For the second, the reply carries the version's `model.published` event and its
inclusion receipt; the partner rebuilds the record from the event, checks the receipt with the
log's verifier key, and compares the event's digest with the weights.

The predict worker reads the receipt from the audit store itself (read-only, like `mshale-fl audit
proof`): the audit worker's receipt RPC answers a partner only about its own events, and a
`model.published` event is the system's. Finding an entry scans the log once (O(n)), so receipts
are cached per event: a receipt stays valid forever (later checkpoints extend, never replace, the
tree it proves against).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from mshale_fl.audit.note import KeyFormatError, NoteVerifier
from mshale_fl.audit.reader import ReceiptNotAvailable, receipt_from_store
from mshale_fl.audit.receipts import Receipt
from mshale_fl.audit.stores.base import ObjectStore, StoreError
from mshale_fl.errors import UserFacingError

__all__ = ["ProofPending", "ProofsUnavailable", "PublicationProofs", "configured_proofs", "configured_verifier"]


class ProofPending(LookupError):
    """The event is not (yet) in the log under a signed checkpoint: the audit worker may be behind."""


class ProofsUnavailable(UserFacingError):
    """The audit log cannot be read (no verifier key, store unreachable)."""


class PublicationProofs:
    """Receipts for events of the audit log at `store`, verified against `verifier`, cached per event."""

    def __init__(
        self, open_store: Callable[[], ObjectStore], verifier: NoteVerifier, *, origin: str | None = None
    ) -> None:
        self._open_store = open_store
        self.verifier = verifier
        self.origin = origin or verifier.name
        self._cache: dict[uuid.UUID, Receipt] = {}
        self._lock = threading.Lock()

    def receipt(self, event_id: uuid.UUID) -> Receipt:
        """The receipt of `event_id`; raises `ProofPending` or `ProofsUnavailable`."""
        with self._lock:
            cached = self._cache.get(event_id)
            if cached is not None:
                return cached
            try:
                receipt = receipt_from_store(self._open_store(), self.verifier, event_id, origin=self.origin)
            except ReceiptNotAvailable as error:
                raise ProofPending(str(error)) from None
            except StoreError as error:
                raise ProofsUnavailable(f"the audit log cannot be read: {error}") from None
            self._cache[event_id] = receipt
            return receipt


def configured_verifier(verifier_key: str | None = None) -> NoteVerifier:
    """The log's verifier: `verifier_key` (or MSHALE_AUDIT_VERIFIER_KEY), else the local signing key's.

    Raises `ProofsUnavailable` naming how to provide one.
    """
    from mshale_fl.audit.config import AuditSettings
    from mshale_fl.audit.keys import KeyFileError, load_signing_key

    settings = AuditSettings()
    text = verifier_key or settings.verifier_key
    if text:
        try:
            return NoteVerifier.from_key(text)
        except KeyFormatError as error:
            raise ProofsUnavailable(f"invalid audit verifier key: {error}") from None
    try:
        return load_signing_key(settings.resolved_key_file()).verifier
    except KeyFileError:
        raise ProofsUnavailable(
            "no audit verifier key: pass --verifier-key or set MSHALE_AUDIT_VERIFIER_KEY "
            "(Mishale gives it out; an operator prints it with `mshale-fl audit pubkey`)"
        ) from None


def configured_proofs() -> PublicationProofs:
    """Proofs from the audit store configured by MSHALE_AUDIT_* (raises `ProofsUnavailable`)."""
    from mshale_fl.audit.config import AuditSettings, open_store

    settings = AuditSettings()
    verifier = configured_verifier()
    # The origin is the key's name (the appender refuses a key named otherwise than its origin).
    return PublicationProofs(lambda: open_store(settings), verifier)
