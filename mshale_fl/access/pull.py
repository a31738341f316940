"""Checking a downloaded model before it is kept: the partner trusts neither the channel nor Mishale.

`verify_download(downloaded, verifier, requested=...)` accepts the bytes only if all of these hold:

1. transfer: as many bytes as announced, with the announced SHA-256;
2. file: a valid mshale1 file (no pickled code runs: `weights_only`), whose weights match the digest
   written inside it, of the version asked for;
3. registry: the weights' digest (`model_digest`) is the one the registry reported;
4. audit log: the reply's `model.published` event names this version and this digest, and its
   receipt proves that exactly this event is in the log: the record rebuilt from the event is the
   receipt's record, the inclusion proof leads to the checkpoint's root, and the checkpoint is
   signed by the log's key (the partner's verifier key, never one sent in the reply).

Any failure raises `TamperedDownload` naming what did not match, and nothing is written.
`save_pulled_model` then writes the model file, its model card (JSON and Markdown), the
publication event and the receipt, each atomically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mshale_fl.access.cards import card_json, card_markdown
from mshale_fl.access.client import DownloadedFile
from mshale_fl.access.model_files import ModelUnavailable, load_verified_model, model_file_name
from mshale_fl.access.registry import ModelVersion, PrivacySpent, RegistryError
from mshale_fl.audit.note import NoteVerifier
from mshale_fl.audit.receipts import Receipt, ReceiptError, verify_receipt
from mshale_fl.errors import UserFacingError
from mshale_fl.fileio import write_atomic
from mshale_fl.schemas.events import EventEnvelope, parse_event

__all__ = ["PulledModel", "TamperedDownload", "save_pulled_model", "verify_download"]


class TamperedDownload(UserFacingError):
    """A download that is not what the registry and the audit log say version N is; it is refused.

    Exit status 1, like every check that fails (`audit verify`), not 2 (a mistake to fix).
    """

    exit_code = 1


@dataclass(frozen=True)
class PulledModel:
    version: int
    sha256: str
    data: bytes
    card: ModelVersion
    published_event: EventEnvelope[Any]
    receipt: Receipt
    log_size: int
    """Size of the signed checkpoint the receipt proves inclusion against."""


def verify_download(
    downloaded: DownloadedFile, verifier: NoteVerifier, *, requested: int | str, origin: str | None = None
) -> PulledModel:
    first, data = downloaded.first, downloaded.data
    version = first.version
    if version is None or first.sha256 is None or first.file_sha256 is None or first.file_size is None:
        raise TamperedDownload("the reply does not say which version, digest and size it serves")
    if requested != "latest" and version != requested:
        raise TamperedDownload(f"asked for model version {requested}, received version {version}")
    where = f"model version {version}"
    if len(data) != first.file_size or hashlib.sha256(data).hexdigest() != first.file_sha256:
        raise TamperedDownload(f"{where}: the bytes received are not the file announced (damaged in transfer)")
    try:
        load_verified_model(data, version=version, sha256=first.sha256, source=f"the downloaded {where}")
    except ModelUnavailable as error:
        raise TamperedDownload(f"{error}; the download is refused") from None

    if first.published_event is None or first.receipt is None:
        raise TamperedDownload(f"{where}: the reply carries no audit proof of its publication")
    try:
        published = parse_event(json.dumps(first.published_event))
    except ValueError:
        raise TamperedDownload(f"{where}: the publication event in the reply is not a valid event") from None
    if published.type != "model.published" or published.payload.model_version != version:
        raise TamperedDownload(f"{where}: the publication event in the reply is not the publication of this version")
    if published.payload.sha256 != first.sha256:
        raise TamperedDownload(
            f"{where}: the registry says SHA-256 {first.sha256}, but the audit log's model.published says "
            f"{published.payload.sha256}; the registry or the file was altered, so the download is refused"
        )
    try:
        receipt = Receipt.from_dict(first.receipt)
        record, checkpoint = verify_receipt(receipt, verifier, event=published, origin=origin)
    except ReceiptError as error:
        raise TamperedDownload(f"{where}: the audit receipt of its publication does not verify ({error})") from None
    if record.event_uuid != published.event_id:
        raise TamperedDownload(f"{where}: the audit receipt is for another event")
    card = _card(first.card, version=version, sha256=first.sha256, where=where)
    return PulledModel(version, first.sha256, data, card, published, receipt, checkpoint.size)


def _card(data: dict[str, Any] | None, *, version: int, sha256: str, where: str) -> ModelVersion:
    """The model card of the reply, as a `ModelVersion` (only its facts; it proves nothing by itself)."""
    try:
        assert data is not None
        card = ModelVersion(
            version=data["version"],
            parent_version=data["parent_version"],
            sha256=data["sha256"],
            rounds=data["rounds"],
            metrics={str(name): float(value) for name, value in data["metrics"].items()},
            published_at=datetime.fromisoformat(data["published_at"]),
            contributors={c["partner_id"]: PrivacySpent(c["epsilon"], c["delta"]) for c in data["contributors"]},
        )
    except (AssertionError, KeyError, TypeError, ValueError, AttributeError, RegistryError):
        raise TamperedDownload(f"{where}: the model card in the reply is malformed") from None
    if card.version != version or card.sha256 != sha256:
        raise TamperedDownload(f"{where}: the model card does not describe these weights")
    return card


def save_pulled_model(output: Path | str, pulled: PulledModel) -> dict[str, Path]:
    """Write the verified model and its papers into `output`; returns what was written, by kind."""
    output = Path(output)
    paths = {
        "model": output / model_file_name(pulled.version),
        "card_json": output / f"model-{pulled.version}.json",
        "card_markdown": output / f"model-{pulled.version}.md",
        "publication": output / f"model-{pulled.version}.published.json",
        "receipt": output / f"model-{pulled.version}.receipt.json",
    }
    write_atomic(paths["model"], pulled.data)
    write_atomic(paths["card_json"], card_json(pulled.card))
    write_atomic(paths["card_markdown"], card_markdown(pulled.card))
    write_atomic(paths["publication"], pulled.published_event.model_dump_json(indent=2) + "\n")
    write_atomic(paths["receipt"], pulled.receipt.to_json() + "\n")
    return paths
