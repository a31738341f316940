"""The extraction output folder: spec files, the manifest, and readers for them.

    <output>/manifest.json                      every protocol: label, what may leave and why; unreadable files
    <output>/specs/<source path>.spec.json      one ProtocolSpec per protocol (canonical JSON)
    <output>/vectors/<source path>.vector.json  tier 2 only: its FeatureVector (canonical JSON)

Canonical JSON (sorted keys, no spaces, ASCII, one trailing newline) makes the same corpus give
byte-identical files. Every file is written atomically (`mshale_fl.fileio.write_atomic`): into a
temporary file in the same folder,
flushed and fsynced, then `os.replace`d over the target, so a crash, Ctrl-C or a failing
serializer leaves either the previous file or the complete new one, never a partial file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mshale_fl.schemas.feature_vector import FeatureVector
from mshale_fl.schemas.protocol_spec import ProtocolSpec

MANIFEST_NAME = "manifest.json"
SPECS_FOLDER = "specs"
SPEC_SUFFIX = ".spec.json"
VECTORS_FOLDER = "vectors"
VECTOR_SUFFIX = ".vector.json"
MANIFEST_VERSION = 1


def canonical_json(data: Any) -> bytes:
    return (json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False) + "\n").encode()


def spec_bytes(spec: ProtocolSpec) -> bytes:
    return canonical_json(spec.model_dump(mode="json"))


def vector_bytes(vector: FeatureVector) -> bytes:
    """Canonical JSON of a vector; its values are multiples of 1/8 at most, so exact in JSON."""
    return canonical_json(vector.model_dump(mode="json"))


def spec_path(output: Path, source: str) -> Path:
    """Where the spec of the protocol at `source` (relative to the corpus root) is written."""
    return Path(output) / SPECS_FOLDER / f"{source}{SPEC_SUFFIX}"


def vector_path(output: Path, source: str) -> Path:
    """Where the tier 2 vector of the protocol at `source` is written (beside its spec's folder)."""
    return Path(output) / VECTORS_FOLDER / f"{source}{VECTOR_SUFFIX}"


def read_spec(path: Path) -> ProtocolSpec:
    """Parse and validate one spec file (strict: an unknown field or a free-text value is rejected)."""
    return ProtocolSpec.model_validate_json(Path(path).read_bytes())


def read_manifest(output: Path) -> dict[str, Any]:
    """The manifest of an extraction output folder."""
    path = Path(output) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: run `mshale-fl extract` first") from None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise ValueError(f"{path} is not an extraction manifest of version {MANIFEST_VERSION}")
    return manifest


def remove_stale_specs(output: Path, keep: set[Path]) -> list[Path]:
    """Delete spec files left by earlier runs for protocols that are gone, so none is sent by mistake."""
    return _remove_stale(Path(output) / SPECS_FOLDER, SPEC_SUFFIX, keep)


def remove_stale_vectors(output: Path, keep: set[Path]) -> list[Path]:
    """Delete vector files not written by this run (protocols gone, or a tier 1 run over a tier 2 folder)."""
    return _remove_stale(Path(output) / VECTORS_FOLDER, VECTOR_SUFFIX, keep)


def _remove_stale(folder: Path, suffix: str, keep: set[Path]) -> list[Path]:
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.rglob(f"*{suffix}")):
        if path not in keep:
            path.unlink()
            removed.append(path)
    return removed
