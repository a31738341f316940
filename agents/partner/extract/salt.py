"""The partner's secret salt for content hashes: created once, kept locally, never transmitted.

It lives in `.mshale/salt` beside the output folder (`<output>/../.mshale/salt`, which is the
default `MSHALE_HOME` when specs are written to `./specs`), outside the folder that `submit`
reads. It is 32 random bytes stored as hex, readable by its owner only. It is created with an
atomic link so two extractions started at once still agree on one salt. Keep it (and back it up):
with a new salt, the same protocol gets a new content hash and counts as a new contribution.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from pathlib import Path

from mshale_fl.errors import UserFacingError

SALT_BYTES = 32
SALT_DIRECTORY = ".mshale"
SALT_FILE = "salt"
_HEX = re.compile(r"^[0-9a-f]{64}$")


class SaltError(UserFacingError, ValueError):
    """The salt file exists but is not a salt; refusing to guess (hashes would change)."""


def salt_path(output: Path) -> Path:
    return Path(output).resolve().parent / SALT_DIRECTORY / SALT_FILE


def _read(path: Path) -> bytes:
    text = path.read_text(encoding="ascii", errors="replace").strip()
    if not _HEX.match(text):
        raise SaltError(f"{path} is not a salt (expected {SALT_BYTES * 2} hex digits); restore it from a backup")
    return bytes.fromhex(text)


def load_or_create_salt(output: Path) -> bytes:
    """The salt for extractions into `output`, created on first use."""
    path = salt_path(output)
    if path.exists():
        return _read(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".salt.", suffix=".tmp")
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(SALT_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process created the salt first
        except FileExistsError:
            pass
    finally:
        Path(temporary).unlink(missing_ok=True)
    return _read(path)
