"""The partner agent's memory on disk: what it sent for which file, the audit witness, whether it halted.

    <home>/agent/state.json       this module: one record per corpus file, the audit position, the halt
    <home>/agent/agent.lock       held (flock) by the running daemon; holds its pid
    <home>/agent/witness.note     the last audit checkpoint accepted (audit/witness.py)
    <home>/agent/receipts/        verified audit receipts of this partner's submissions, one JSON each
    <home>/agent/outbox/          the last step's extraction output (specs, vectors, manifest: local only)
    <home>/agent/.mshale/salt     the secret salt of content hashes (keep it, back it up)

A file's record holds the SHA-256 of the bytes that were extracted (the agent reads each file once
per step into a snapshot, so the hash is of exactly what was sent), the signature the scan saw, and
the outcome: `accepted`, `rejected`, `withheld` (the policy keeps it local: full-ip, ...),
`unreadable`, or `pending` (sent, no receipt yet: sent again later, which is safe because
submission ids are derived from content). A file is looked at again when its signature changes
and then sent again only if its bytes changed, or when the config's `fingerprint` (tier, labels,
agreements) changed. `state.json` is rewritten atomically (`write_atomic`) after every step, so a
crash loses at most the step in flight, whose files are then simply sent again.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mshale_fl.agents.partner.watch import FileSignature
from mshale_fl.errors import UserFacingError
from mshale_fl.fileio import write_atomic

STATE_VERSION = 1
STATE_FILE = "state.json"
LOCK_FILE = "agent.lock"
WITNESS_FILE = "witness.note"
RECEIPTS_FOLDER = "receipts"
OUTBOX_FOLDER = "outbox"
STAGING_FOLDER = "staging"

FINAL_STATUSES = frozenset({"accepted", "rejected", "withheld", "unreadable"})
"""Outcomes that stand until the file or the config changes."""
PENDING = "pending"


class AgentStateError(UserFacingError):
    """The state folder cannot be used (damaged state, another partner's, another agent running)."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class FileRecord:
    sha256: str
    size: int
    mtime_ns: int
    inode: int
    status: str
    fingerprint: str
    sensitivity: str | None = None
    content_hash: str | None = None
    """The spec's salted content hash (local only; the same text has the same hash)."""
    tier: int | None = None
    submission_id: str | None = None
    reasons: list[str] = field(default_factory=list)
    audit: str | None = None
    """`verified` once the submission's audit receipt verified, `pending` until then, None if nothing was sent."""
    updated_at: str = field(default_factory=utc_now)

    @property
    def signature(self) -> FileSignature:
        return FileSignature(self.size, self.mtime_ns, self.inode)

    def is_current(self, signature: FileSignature, fingerprint: str) -> bool:
        """Nothing to do: same file as last time, same config, and a final outcome."""
        return self.signature == signature and self.fingerprint == fingerprint and self.status in FINAL_STATUSES


@dataclass
class AgentState:
    path: Path
    partner_id: str
    files: dict[str, FileRecord] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    halted: dict[str, Any] | None = None
    daemon: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path, partner_id: str) -> AgentState:
        path = Path(state_dir) / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path, partner_id)
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise AgentStateError(
                f"the agent state {path} cannot be read ({error}); move it away to start afresh "
                "(every file is then submitted again, which creates no duplicate contribution)"
            ) from None
        if not isinstance(data, dict) or data.get("state_version") != STATE_VERSION:
            raise AgentStateError(f"{path} is not an agent state of version {STATE_VERSION}; move it away to start afresh")
        if data.get("partner_id") != partner_id:
            raise AgentStateError(
                f"{path} belongs to partner {data.get('partner_id')!r}, not {partner_id!r}: give each partner its own home"
            )
        try:
            files = {source: FileRecord(**record) for source, record in (data.get("files") or {}).items()}
        except TypeError as error:
            raise AgentStateError(f"{path} has a malformed file record ({error}); move it away to start afresh") from None
        return cls(path, partner_id, files, dict(data.get("audit") or {}), data.get("halted"), dict(data.get("daemon") or {}))

    @classmethod
    def read(cls, state_dir: Path) -> dict[str, Any] | None:
        """The state as stored, for `agent status` (None if the agent never ran with this home)."""
        path = Path(state_dir) / STATE_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise AgentStateError(f"the agent state {path} cannot be read ({error})") from None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state_version": STATE_VERSION,
            "partner_id": self.partner_id,
            "files": {source: asdict(record) for source, record in sorted(self.files.items())},
            "audit": self.audit,
            "halted": self.halted,
            "daemon": self.daemon,
        }

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.as_dict(), indent=1, sort_keys=True) + "\n")

    # -- questions the daemon asks ------------------------------------------------------------------

    def full_ip_hashes(self) -> set[str]:
        """Content hashes of every protocol labelled full-ip: a text with one of them never leaves under another label."""
        return {r.content_hash for r in self.files.values() if r.sensitivity == "full-ip" and r.content_hash}

    def contributed(self, tier: int) -> dict[str, FileRecord]:
        """content hash -> an accepted record at `tier` (the same text from another file need not be sent again)."""
        return {r.content_hash: r for r in self.files.values()
                if r.status == "accepted" and r.tier == tier and r.content_hash}  # fmt: skip

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.files.values():
            counts[record.status] = counts.get(record.status, 0) + 1
        return dict(sorted(counts.items()))


class AgentLock:
    """One daemon per state folder: an exclusive `flock` on `agent.lock`, released when the process ends."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._descriptor: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise AgentStateError(
                f"another agent (pid {running_pid(self.path.parent) or '?'}) already runs with state folder "
                f"{self.path.parent}; stop it first, or give this one its own home"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None


def running_pid(state_dir: Path) -> int | None:
    """The pid of the daemon holding the lock of `state_dir`, or None if none runs."""
    path = Path(state_dir) / LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(descriptor, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


__all__ = [
    "AgentLock",
    "AgentState",
    "AgentStateError",
    "FINAL_STATUSES",
    "FileRecord",
    "OUTBOX_FOLDER",
    "PENDING",
    "RECEIPTS_FOLDER",
    "STAGING_FOLDER",
    "STATE_FILE",
    "WITNESS_FILE",
    "running_pid",
    "utc_now",
]
