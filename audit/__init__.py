"""The audit transparency log: every event, in an RFC 9162 Merkle tree, with signed checkpoints.

Public API (see README.md beside this file for the design):

- `merkle`: `hash_leaf`, `hash_children`, `MerkleTree`, `verify_inclusion`, `verify_consistency`
- `records`: `record_for_event(event) -> AuditRecord`, `parse_record(bytes)`
- `checkpoint`: `sign_checkpoint`, `open_checkpoint`, `Checkpoint`
- `note`: `NoteSigner`, `NoteVerifier` (C2SP signed notes, Ed25519)
- `appender`: `AuditAppender(store, signer).append_batch(events) -> Checkpoint`, `.receipt(event_id)`
- `receipts`: `Receipt`, `verify_receipt`
- `witness`: `CheckpointWitness` (the partner keeps the last checkpoint, accepts only extensions)
- `verify`: `verify_log(store, verifier) -> VerificationReport`
- `stores`: `LocalStore`, `S3Store`
- `receipt_rpc` (imports the broker, so not re-exported here): `ReceiptClient.fetch_receipt`,
  `fetch_receipt`, `ReceiptResponder`, `answer_receipt_request`
- `replay_check`: `StreamLogComparison`, `LogCursor`, `Mismatch` (used by `mshale-fl audit replay`)
"""

from mshale_fl.audit.appender import AuditAppender, LogConflictError, LogIntegrityError
from mshale_fl.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    sign_checkpoint,
)
from mshale_fl.audit.merkle import (
    MerkleTree,
    ProofError,
    verify_consistency,
    verify_inclusion,
)
from mshale_fl.audit.note import NoteSigner, NoteVerifier
from mshale_fl.audit.receipts import Receipt, ReceiptError, verify_receipt
from mshale_fl.audit.records import AuditRecord, parse_record, record_for_event
from mshale_fl.audit.stores import LocalStore, S3Store
from mshale_fl.audit.verify import VerificationReport, verify_log
from mshale_fl.audit.witness import (
    CheckpointWitness,
    ForkError,
    RollbackError,
    WitnessError,
)

__all__ = [
    "AuditAppender",
    "AuditRecord",
    "Checkpoint",
    "CheckpointError",
    "CheckpointWitness",
    "ForkError",
    "LocalStore",
    "LogConflictError",
    "LogIntegrityError",
    "MerkleTree",
    "NoteSigner",
    "NoteVerifier",
    "ProofError",
    "Receipt",
    "ReceiptError",
    "RollbackError",
    "S3Store",
    "VerificationReport",
    "WitnessError",
    "open_checkpoint",
    "parse_record",
    "record_for_event",
    "sign_checkpoint",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "verify_receipt",
]
