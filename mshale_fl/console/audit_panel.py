"""The audit panel: the latest signed checkpoint, its signature, and a full verification of the log.

The signature of the newest checkpoint is checked on every refresh (one small object). The full
`verify_log` (every bundle, every checkpoint) is what an auditor trusts, but it reads the whole
log, so its result is kept and redone only when the log has grown *and* `verify_every` seconds
have passed since the last run; the page says when it last ran and up to which size.

The log is checked with the verifier key an auditor holds (`MSHALE_AUDIT_VERIFIER_KEY`), or, on
Mishale's own machine, the one derived from the signing key file. Nothing is written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mshale_fl.audit.checkpoint import CheckpointError, open_checkpoint
from mshale_fl.audit.config import AuditSettings, open_store
from mshale_fl.audit.keys import KeyFileError, load_signing_key
from mshale_fl.audit.log import TransparencyLog
from mshale_fl.audit.note import KeyFormatError, NoteVerifier
from mshale_fl.audit.stores.base import ObjectStore, StoreError
from mshale_fl.audit.verify import VerificationReport, verify_log
from mshale_fl.console.panels import SourceUnavailable

PROBLEMS_SHOWN = 5


def describe_store(settings: AuditSettings) -> str:
    if settings.store == "local":
        return f"local directory {settings.resolved_local_dir()}"
    return f"S3 bucket {settings.s3_bucket.replace('{region}', settings.s3_region)} ({settings.s3_region}), prefix {settings.s3_prefix}"


class AuditPanel:
    def __init__(
        self, settings: AuditSettings, *, verify_every: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.verify_every = verify_every
        self.clock = clock
        self.source = describe_store(settings)
        self._lock = threading.Lock()
        self._report: VerificationReport | None = None
        self._verified_for: tuple[int, int] | None = None
        """(latest checkpoint size, bundle count) the kept report was made for."""
        self._verified_with: str | None = None
        """The verifier key the kept report was made with (a new key makes it worthless at once)."""
        self._verified_at: datetime | None = None
        self._verified_clock = 0.0

    def _verifier(self) -> tuple[NoteVerifier, str]:
        if self.settings.verifier_key:
            try:
                return NoteVerifier.from_key(self.settings.verifier_key), "MSHALE_AUDIT_VERIFIER_KEY"
            except KeyFormatError as error:
                raise SourceUnavailable(f"MSHALE_AUDIT_VERIFIER_KEY is not a verifier key: {error}") from None
        key_file = self.settings.resolved_key_file()
        try:
            return load_signing_key(key_file).verifier, f"the signing key file {key_file}"
        except KeyFileError as error:
            raise SourceUnavailable(f"no key to verify the log with: {error}; or set MSHALE_AUDIT_VERIFIER_KEY") from None

    def _store(self) -> ObjectStore:
        if self.settings.store == "local" and not self.settings.resolved_local_dir().is_dir():
            raise SourceUnavailable(
                f"no audit log at {self.settings.resolved_local_dir()} (set MSHALE_HOME or MSHALE_AUDIT_LOCAL_DIR "
                "to the deployment's; the audit worker creates it)"
            )
        try:
            return open_store(self.settings)
        except (StoreError, ValueError) as error:
            raise SourceUnavailable(f"cannot open the audit store ({self.source}): {error}") from None

    def read(self) -> dict[str, Any]:
        store = self._store()
        verifier, verifier_source = self._verifier()
        log = TransparencyLog(store)
        try:
            sizes = log.checkpoint_sizes()
            bundles = len(log.bundle_starts())
            latest_size = max(sizes) if sizes else None
            note = log.read_checkpoint(latest_size) if latest_size is not None else None
        except StoreError as error:
            raise SourceUnavailable(f"cannot read the audit store ({self.source}): {error}") from None

        checkpoint: dict[str, Any] | None = None
        if latest_size is not None and note is not None:
            checkpoint = {"size": latest_size, "note": note.decode("utf-8", "replace")}
            try:
                opened = open_checkpoint(note, verifier, origin=verifier.name)
                checkpoint.update(signature_ok=True, signature_error=None, root=opened.root_hex, origin=opened.origin)
            except CheckpointError as error:
                checkpoint.update(signature_ok=False, signature_error=str(error), root=None, origin=None)

        report, verified_at, stale = self._verification(store, verifier, (latest_size or 0, bundles))
        return {
            "store": self.source,
            "verifier": verifier_source,
            "verifier_key": verifier.to_key(),
            "checkpoints": len(sizes),
            "latest_checkpoint": checkpoint,
            "verification": {
                "ok": report.ok,
                "summary": report.summary().splitlines()[0],
                "entries": report.entries,
                "checkpoints": report.checkpoints,
                "verified_size": report.verified_size,
                "verified_root": report.verified_root,
                "first_bad_position": report.first_bad_position,
                "problems": [
                    {"kind": problem.kind, "position": problem.position, "message": problem.message}
                    for problem in report.problems[:PROBLEMS_SHOWN]
                ],
                "problem_count": len(report.problems),
                "warnings": [
                    {"kind": warning.kind, "position": warning.position, "message": warning.message}
                    for warning in report.warnings[:PROBLEMS_SHOWN]
                ],
                "verified_at": verified_at.isoformat(),
                "log_grew_since": stale,
            },
        }

    def _verification(
        self, store: ObjectStore, verifier: NoteVerifier, shape: tuple[int, int]
    ) -> tuple[VerificationReport, datetime, bool]:
        """The kept report, or a new one if the log changed and the last run is old enough."""
        with self._lock:
            key = verifier.to_key()
            due = (
                self._report is None
                or key != self._verified_with
                or (shape != self._verified_for and self.clock() - self._verified_clock >= self.verify_every)
            )
            if due:
                self._report = verify_log(store, verifier, origin=verifier.name)
                self._verified_for = shape
                self._verified_with = key
                self._verified_at = datetime.now(UTC)
                self._verified_clock = self.clock()
            assert self._report is not None and self._verified_at is not None
            return self._report, self._verified_at, shape != self._verified_for


__all__ = ["AuditPanel", "describe_store"]
