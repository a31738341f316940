"""Receipts: what a partner keeps to prove, later and to anyone, that its event is in the log.

A receipt is the event's audit record, its position, the inclusion proof and the signed
checkpoint the proof leads to. Checking one needs only the log's verifier key: the signature
binds (size, root) to the log, the proof binds the record to the root, and the partner can
rebuild the record from its own copy of the event and compare the bytes.

    {"checkpoint": "<signed note>", "index": 41, "proof": ["<base64>", ...],
     "record": "<canonical JSON record>", "tree_size": 57, "v": 1}
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from mshale_fl.audit.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from mshale_fl.audit.merkle import ProofError, hash_leaf, verify_inclusion
from mshale_fl.audit.note import NoteVerifier, strict_b64decode
from mshale_fl.audit.records import (
    AuditRecord,
    RecordError,
    parse_record,
    record_for_event,
)

__all__ = ["Receipt", "ReceiptError", "verify_receipt"]

RECEIPT_VERSION = 1


class ReceiptError(ValueError):
    """A receipt is malformed or does not prove what it claims."""


@dataclass(frozen=True)
class Receipt:
    record: bytes
    index: int
    tree_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": RECEIPT_VERSION,
            "record": self.record.decode("utf-8"),
            "index": self.index,
            "tree_size": self.tree_size,
            "proof": [base64.b64encode(node).decode("ascii") for node in self.proof],
            "checkpoint": self.checkpoint.decode("utf-8"),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Receipt:
        try:
            if data.get("v") != RECEIPT_VERSION:
                raise ReceiptError(f"receipt version {data.get('v')!r} is not {RECEIPT_VERSION}")
            index, tree_size = data["index"], data["tree_size"]
            if not all(isinstance(n, int) and not isinstance(n, bool) for n in (index, tree_size)):
                raise ReceiptError("index and tree_size must be integers")
            return cls(
                record=data["record"].encode("utf-8"),
                index=index,
                tree_size=tree_size,
                proof=tuple(strict_b64decode(node) for node in data["proof"]),
                checkpoint=data["checkpoint"].encode("utf-8"),
            )
        except ReceiptError:
            raise
        except (KeyError, TypeError, AttributeError, binascii.Error, ValueError) as exc:
            raise ReceiptError(f"malformed receipt: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Receipt:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ReceiptError(f"receipt is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ReceiptError("receipt is not a JSON object")
        return cls.from_dict(data)


def verify_receipt(
    receipt: Receipt, verifier: NoteVerifier, *, event: Any = None, origin: str | None = None
) -> tuple[AuditRecord, Checkpoint]:
    """Check a receipt end to end; return the record and the checkpoint it is proven against.

    With `event` (an `EventEnvelope`), also check that the record is exactly the one this
    event produces, so the receipt cannot be for a look-alike. Raises `ReceiptError`.
    """
    try:
        checkpoint = open_checkpoint(receipt.checkpoint, verifier, origin=origin)
    except CheckpointError as exc:
        raise ReceiptError(f"receipt checkpoint: {exc}") from exc
    if checkpoint.size != receipt.tree_size:
        raise ReceiptError(f"receipt is for tree size {receipt.tree_size} but its checkpoint is for {checkpoint.size}")
    try:
        record = parse_record(receipt.record)
    except RecordError as exc:
        raise ReceiptError(f"receipt record: {exc}") from exc
    try:
        verify_inclusion(hash_leaf(receipt.record), receipt.index, receipt.tree_size, receipt.proof, checkpoint.root)
    except ProofError as exc:
        raise ReceiptError(f"inclusion proof: {exc}") from exc
    if event is not None and record_for_event(event).to_bytes() != receipt.record:
        raise ReceiptError(f"the receipt's record is not the record of event {event.event_id}")
    return record, checkpoint
