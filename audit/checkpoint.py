"""Checkpoints in the C2SP tlog-checkpoint format: a signed note over (origin, size, root).

    mshale.example/audit
    20852163
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

    — mshale.example/audit Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Z...

We write no extension lines (the spec does not recommend them) and accept none, so the signed
bytes of a checkpoint are fully determined by (origin, size, root).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mshale_fl.audit.merkle import HASH_SIZE
from mshale_fl.audit.note import (
    NoteError,
    NoteSigner,
    NoteVerifier,
    open_note,
    parse_note,
)

if TYPE_CHECKING:
    from mshale_fl.schemas.payloads import AuditCheckpoint

__all__ = ["Checkpoint", "CheckpointError", "open_checkpoint", "parse_checkpoint_text", "sign_checkpoint"]

_ORIGIN = re.compile(r"^[\x21-\x7e]{1,200}$")
_SIZE = re.compile(r"^(0|[1-9][0-9]{0,19})$")


class CheckpointError(ValueError):
    """A checkpoint is malformed, unsigned, signed by the wrong key, or for another log."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    note: bytes
    """The complete signed note, verbatim (what is stored and published)."""

    @property
    def root_hex(self) -> str:
        return self.root.hex()

    def to_payload(self) -> AuditCheckpoint:
        """The `audit.checkpoint` event payload announcing this checkpoint."""
        from mshale_fl.schemas.payloads import AuditCheckpoint

        return AuditCheckpoint(
            origin=self.origin, tree_size=self.size, root_hash=self.root.hex(), note=self.note.decode("utf-8")
        )


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    if not _ORIGIN.match(origin):
        raise CheckpointError(f"origin {origin!r} must be 1-200 printable ASCII characters without spaces")
    if size < 0 or size >= 2**64:
        raise CheckpointError(f"tree size {size} is out of range")
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"root hash must be {HASH_SIZE} bytes, got {len(root)}")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode('ascii')}\n"


def parse_checkpoint_text(text: str) -> tuple[str, int, bytes]:
    """Parse the note text of a checkpoint into (origin, size, root)."""
    lines = text.split("\n")
    if lines[-1] != "" or len(lines) < 4:
        raise CheckpointError("checkpoint text must be at least three newline-terminated lines")
    lines = lines[:-1]
    if len(lines) != 3:
        raise CheckpointError(f"checkpoint has {len(lines) - 3} extension lines; this log writes and accepts none")
    origin, size_text, root_text = lines
    if not _ORIGIN.match(origin):
        raise CheckpointError(f"checkpoint origin {origin!r} is not 1-200 printable ASCII characters")
    if not _SIZE.match(size_text) or int(size_text) >= 2**64:
        raise CheckpointError(f"checkpoint tree size {size_text!r} is not a decimal without leading zeroes")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError("checkpoint root hash is not valid base64") from exc
    if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != root_text:
        raise CheckpointError(f"checkpoint root hash must be the canonical base64 of {HASH_SIZE} bytes")
    return origin, int(size_text), root


def sign_checkpoint(signer: NoteSigner, size: int, root: bytes, origin: str | None = None) -> Checkpoint:
    """Sign (origin, size, root); the origin defaults to the signer's key name, as the spec advises."""
    origin = signer.name if origin is None else origin
    note = signer.sign_text(checkpoint_text(origin, size, root))
    return Checkpoint(origin=origin, size=size, root=bytes(root), note=note)


def open_checkpoint(
    note: bytes | str, verifier: NoteVerifier | list[NoteVerifier], *, origin: str | None = None
) -> Checkpoint:
    """Verify the signature(s) of a checkpoint note and parse it.

    `origin` defaults to the verifier's key name: a checkpoint of another log signed by the
    same key is refused rather than silently mixed in.
    """
    data = note.encode("utf-8") if isinstance(note, str) else bytes(note)
    try:
        opened = open_note(data, verifier)
    except NoteError as exc:
        raise CheckpointError(f"checkpoint signature: {exc}") from exc
    found_origin, size, root = parse_checkpoint_text(opened.text)
    if origin is None and isinstance(verifier, NoteVerifier):
        origin = verifier.name
    if origin is not None and found_origin != origin:
        raise CheckpointError(f"checkpoint is for log {found_origin!r}, expected {origin!r}")
    return Checkpoint(origin=found_origin, size=size, root=root, note=data)


def peek_checkpoint(note: bytes) -> Checkpoint:
    """Parse a checkpoint WITHOUT verifying its signature (for reports about bad checkpoints only)."""
    try:
        parsed = parse_note(note)
    except NoteError as exc:
        raise CheckpointError(f"checkpoint is not a signed note: {exc}") from exc
    origin, size, root = parse_checkpoint_text(parsed.text)
    return Checkpoint(origin=origin, size=size, root=root, note=bytes(note))
