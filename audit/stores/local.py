"""A directory as a write-once object store (the default audit store).

Each object is written to a temporary file, flushed to disk, then hard-linked to its final
name: `link` fails if the name exists, so creation is atomic and exclusive (two writers racing
for one key cannot both win, and a crash never leaves a half-written object under a real
name). Files are then made read-only. None of this stops someone with write access to the
directory from editing files; that is what the signed checkpoints and `audit verify` catch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mshale_fl.audit.stores.base import (
    KeyHistory,
    ObjectExistsError,
    ObjectMissingError,
    StoreError,
    check_key,
)

__all__ = ["LocalStore"]


class LocalStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def description(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        check_key(key)
        return self.root.joinpath(*key.split("/"))

    def put_immutable(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path.exists():
            raise ObjectExistsError(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp_name, 0o444)
            try:
                os.link(temp_name, path)
            except FileExistsError:
                raise ObjectExistsError(key) from None
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc
        finally:
            try:
                os.unlink(temp_name)
            except FileNotFoundError:
                pass
        _fsync_directory(path.parent)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectMissingError(key) from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc

    def list_keys(self, prefix: str) -> list[str]:
        directory, _, _ = prefix.rpartition("/")
        base = self.root.joinpath(*directory.split("/")) if directory else self.root
        if not base.is_dir():
            return []
        keys = []
        for folder, subfolders, files in os.walk(base):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            relative = Path(folder).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith("."):
                    continue  # temporary files of writes in progress (or interrupted)
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return keys

    def key_history(self, prefix: str) -> list[KeyHistory] | None:
        return None  # a plain directory keeps no versions


def _fsync_directory(directory: Path) -> None:
    # Makes the new name durable; not possible on every platform, and harmless to skip there.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
