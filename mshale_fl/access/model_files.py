"""Published model files as Mishale serves them: found by version, checked against the registry.

The training server writes `mshale1_v<N>.pt` into `MSHALE_HOME/models/` (federation/runs.py);
the predict worker reads the same folder (a shared volume when they run on different hosts;
`MSHALE_ACCESS_MODELS_DIR` points elsewhere). Nothing here trusts a file: every load recomputes the
weights' digest and compares it with the registry's, so a file edited or swapped on disk is
refused (`ModelUnavailable`), never used for a prediction or served as a download.

A loaded file is cached per version together with its size and modification time, and reloaded
when either changes, so checking is paid once per file version, not once per request.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mshale_fl.errors import UserFacingError
from mshale_fl.federation.runs import RunStore

if TYPE_CHECKING:
    from mshale_fl.training.model import Mshale1

__all__ = ["ModelFile", "ModelFiles", "ModelUnavailable", "load_verified_model", "model_file_name"]


class ModelUnavailable(UserFacingError):
    """A registered version whose file is missing, unreadable, or not the registered weights."""


def model_file_name(version: int) -> str:
    """`mshale1_v<N>.pt`: the name the training server publishes version N under."""
    return RunStore(Path(".")).published_model_path(version).name


@dataclass(frozen=True)
class ModelFile:
    version: int
    data: bytes
    file_sha256: str
    """SHA-256 of the file's bytes (a transfer check; the registry's digest is of the weights)."""
    model: Mshale1


def load_verified_model(data: bytes, *, version: int, sha256: str, source: str) -> Mshale1:
    """The model in `data` if it is a valid mshale1 file of `version` whose weights have digest `sha256`.

    Raises `ModelUnavailable` naming what is wrong. `load_model` itself refuses a file whose
    weights do not match the digest written inside it; this adds the registry's digest and version.
    """
    from mshale_fl.training.model import ModelFileError, load_model, model_digest

    with tempfile.TemporaryDirectory(prefix="mshale-model-") as directory:
        path = Path(directory) / model_file_name(version)
        path.write_bytes(data)
        try:
            model, metadata = load_model(path)
        except ModelFileError as error:
            raise ModelUnavailable(f"{source}: {str(error).replace(str(path), 'the file')}") from None
    digest = model_digest(model)
    if digest != sha256:
        raise ModelUnavailable(
            f"{source}: the weights have SHA-256 {digest}, but version {version} is registered with {sha256}"
        )
    if metadata.version != version:
        raise ModelUnavailable(f"{source}: the file says it is version {metadata.version}, not {version}")
    return model


class ModelFiles:
    """The published model files in one folder; thread-safe (predictions and downloads share it)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._cache: dict[int, tuple[tuple[int, int], str, ModelFile]] = {}
        self._lock = threading.Lock()

    def path(self, version: int) -> Path:
        return self.directory / model_file_name(version)

    def get(self, version: int, sha256: str) -> ModelFile:
        """Version `version`'s file and model, checked against the registered `sha256`."""
        path = self.path(version)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise ModelUnavailable(f"the file of model version {version} ({path.name}) is missing") from None
        stamp = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(version)
            if cached is not None and cached[0] == stamp and cached[1] == sha256:
                return cached[2]
            data = path.read_bytes()
            model = load_verified_model(
                data, version=version, sha256=sha256, source=f"the file of model version {version}"
            )
            loaded = ModelFile(version, data, hashlib.sha256(data).hexdigest(), model)
            # Keyed on the stamp taken before reading: a write racing the read changes the stamp,
            # so the next call reads and checks again.
            self._cache[version] = (stamp, sha256, loaded)
            return loaded

    def forget(self, version: int) -> None:
        with self._lock:
            self._cache.pop(version, None)
