"""The log's signing key on disk: one file, created once, readable by its owner only.

The file holds the signer key in the Go sumdb/note encoding
(`PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>`), so it can be used by other C2SP tools,
and the verifier key derived from it is what partners and auditors are given.
"""

from __future__ import annotations

import os
from pathlib import Path

from mshale_fl.audit.note import KeyFormatError, NoteSigner

__all__ = ["KeyFileError", "create_signing_key", "load_signing_key"]


class KeyFileError(RuntimeError):
    """The key file is missing, already exists, unreadable or malformed."""


def create_signing_key(path: Path | str, name: str) -> NoteSigner:
    """Generate a new Ed25519 key named `name` and write it to `path` (which must not exist)."""
    path = Path(path)
    signer = NoteSigner.generate(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (signer.to_key() + "\n").encode("ascii")
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # link() refuses to replace an existing key: a signing key is never silently overwritten.
        os.link(temp, path)
    except FileExistsError:
        raise KeyFileError(f"a signing key already exists at {path}; refusing to replace it") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write the signing key to {path}: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)
    return signer


def load_signing_key(path: Path | str) -> NoteSigner:
    path = Path(path)
    try:
        text = path.read_text("ascii")
    except FileNotFoundError:
        raise KeyFileError(f"no signing key at {path}; create one with `mshale-fl audit keygen`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read the signing key at {path}: {exc}") from exc
    if path.stat().st_mode & 0o077:
        raise KeyFileError(f"the signing key at {path} is readable by others; run `chmod 600 {path}`")
    try:
        return NoteSigner.from_key(text)
    except KeyFormatError as exc:
        raise KeyFileError(f"the signing key at {path} is malformed: {exc}") from exc
