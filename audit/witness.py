"""The partner's side of the log: remember the last checkpoint seen, accept only extensions.

A partner that keeps its own copy of the latest checkpoint and checks every newer one with a
consistency proof catches a log that was rewritten, forked (shown different histories), or
rolled back, without trusting Mishale: the signature proves who signed, the consistency proof
proves that the new tree contains the old one unchanged.

The state is one file holding the last accepted signed note, verbatim; it is re-verified on
load, so a file that was edited is refused rather than trusted.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mshale_fl.audit.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from mshale_fl.audit.merkle import (
    ConsistencyError,
    ProofError,
    TreeSizeError,
    verify_consistency,
)
from mshale_fl.audit.note import NoteVerifier

__all__ = ["CheckpointWitness", "ForkError", "RollbackError", "WitnessError"]


class WitnessError(ValueError):
    """A new checkpoint was refused."""


class RollbackError(WitnessError):
    """The new checkpoint is for a smaller tree than one already seen."""


class ForkError(WitnessError):
    """The new checkpoint does not extend the one already seen: the log was rewritten or forked."""


class CheckpointWitness:
    def __init__(self, path: Path | str, verifier: NoteVerifier, *, origin: str | None = None) -> None:
        self.path = Path(path)
        self.verifier = verifier
        self.origin = origin or verifier.name
        self._latest = self._load()

    @property
    def latest(self) -> Checkpoint | None:
        """The last checkpoint accepted (None before the first)."""
        return self._latest

    def _load(self) -> Checkpoint | None:
        try:
            note = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return open_checkpoint(note, self.verifier, origin=self.origin)
        except CheckpointError as exc:
            raise WitnessError(f"the stored checkpoint in {self.path} does not verify: {exc}") from exc

    def update(self, note: bytes | str, proof: Sequence[bytes] = ()) -> Checkpoint:
        """Accept `note` if it is validly signed and extends the last checkpoint (per `proof`).

        The first checkpoint is accepted on its signature alone (trust on first use). Raises
        `RollbackError`, `ForkError` or `WitnessError`; the stored checkpoint is unchanged then.
        """
        try:
            new = open_checkpoint(note, self.verifier, origin=self.origin)
        except CheckpointError as exc:
            raise WitnessError(str(exc)) from exc
        old = self._latest
        if old is not None:
            if new.size < old.size:
                raise RollbackError(f"the log went back from size {old.size} to {new.size}")
            try:
                verify_consistency(old.size, new.size, proof, old.root, new.root)
            except TreeSizeError as exc:
                raise RollbackError(str(exc)) from exc
            except ConsistencyError as exc:
                raise ForkError(f"checkpoint {new.size} does not extend checkpoint {old.size}: {exc}") from exc
            except ProofError as exc:
                raise WitnessError(f"consistency proof from {old.size} to {new.size}: {exc}") from exc
            if new.size == old.size:
                return old
        self._save(new)
        self._latest = new
        return new

    def _save(self, checkpoint: Checkpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(checkpoint.note)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
