"""Read-only access to a log for one-off questions (the CLI's `audit proof`): scan, then answer.

A scan reads every entry once (O(n)); the appender answers the same questions from its index
in O(log n), so this is for auditors and operators, not for the hot path.
"""

from __future__ import annotations

import uuid

from mshale_fl.audit.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from mshale_fl.audit.log import TransparencyLog
from mshale_fl.audit.merkle import MerkleTree, hash_leaf
from mshale_fl.audit.note import NoteVerifier
from mshale_fl.audit.receipts import Receipt
from mshale_fl.audit.records import RecordError, parse_record
from mshale_fl.audit.stores.base import ObjectStore

__all__ = ["ReceiptNotAvailable", "receipt_from_store"]


class ReceiptNotAvailable(LookupError):
    """The event is not in the log, or not yet covered by a valid checkpoint."""


def receipt_from_store(
    store: ObjectStore, verifier: NoteVerifier, event_id: uuid.UUID | str, *, origin: str | None = None
) -> Receipt:
    wanted = event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id))
    log = TransparencyLog(store)
    tree = MerkleTree()
    found: tuple[int, bytes] | None = None
    for start, records in log.iter_bundles():
        for offset, data in enumerate(records):
            if found is None:
                try:
                    if parse_record(data).event_uuid == wanted:
                        found = (start + offset, data)
                except RecordError:
                    pass  # `audit verify` reports bad records; here we only look for one event
            tree.append(hash_leaf(data))
    if found is None:
        raise ReceiptNotAvailable(f"event {wanted} is not in the log at {store.description}")
    position, record = found
    checkpoint = _latest_matching_checkpoint(log, verifier, tree, origin)
    if checkpoint is None or checkpoint.size <= position:
        raise ReceiptNotAvailable(
            f"event {wanted} is entry {position} but no valid checkpoint covers it yet; try again after the next append"
        )
    return Receipt(
        record=record,
        index=position,
        tree_size=checkpoint.size,
        proof=tuple(tree.inclusion_proof(position, checkpoint.size)),
        checkpoint=checkpoint.note,
    )


def _latest_matching_checkpoint(
    log: TransparencyLog, verifier: NoteVerifier, tree: MerkleTree, origin: str | None
) -> Checkpoint | None:
    for size in reversed(log.checkpoint_sizes()):
        if size > tree.size:
            continue
        try:
            checkpoint = open_checkpoint(log.read_checkpoint(size), verifier, origin=origin)
        except CheckpointError:
            continue
        if checkpoint.size == size and tree.root(size) == checkpoint.root:
            return checkpoint
    return None
