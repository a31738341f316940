"""The model RPC's wire messages: `model list` and `model pull` over RabbitMQ (not event types).

Like the audit receipts (schemas/rpc.py), these are reads answered straight back to the caller,
so they travel on `mshale.events` under four-word routing keys outside the event namespace,
`<partner-id>.rpc.model.list` and `<partner-id>.rpc.model.download`, to the queue
`mshale.rpc.model` (broker/topology.py `MODEL_RPC`), with `reply_to = amq.rabbitmq.reply-to`. The
broker-checked `user_id` names the partner; nothing in the body does.

What *is* an event is the decision: a download that is granted or denied is published as
`access.granted` / `access.denied` (so the audit log records it) before the reply goes out.

    list      {"v": 1}
              -> {"v": 1, "status": "ok", "partner_id": "lab-a", "tier": 3,
                  "actions": [ActionAccess...], "versions": [VersionAccess...]}
    download  {"v": 1, "download_id": "<uuid>", "version": 3 | "latest", "offset": 0}
              -> {"v": 1, "status": "ok", "version": 3, "sha256": "<registry digest>",
                  "file_size": 68565, "file_sha256": "<sha256 of the file bytes>", "offset": 0,
                  "data": "<base64 of file[offset:offset+chunk]>",
                  "card": {...}, "published_event": {...}, "receipt": {...}}   (the last three at offset 0)

A model file is ~70 kB today, one chunk; the chunked form keeps any larger model under RabbitMQ's
message size limit and each reply small. The partner asks for the next offset with the same
`download_id` and the resolved version until it has `file_size` bytes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mshale_fl.broker.topology import MODEL_RPC
from mshale_fl.schemas.payloads import Reason

__all__ = [
    "MODEL_RPC_QUEUE",
    "ActionAccess",
    "ModelDownloadReply",
    "ModelDownloadRequest",
    "ModelListReply",
    "ModelListRequest",
    "VersionAccess",
    "model_rpc_method",
    "model_rpc_routing_key",
]

WIRE_VERSION = 1
MODEL_RPC_QUEUE = MODEL_RPC.name
METHODS = ("list", "download")
MAX_CHUNK_BASE64 = 12 * 1024 * 1024


def model_rpc_routing_key(partner_id: str, method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown model RPC method {method!r}; known: {', '.join(METHODS)}")
    return f"{partner_id}.rpc.model.{method}"


def model_rpc_method(routing_key: str) -> str | None:
    """The method a request's routing key names (None if it is not a model RPC key)."""
    parts = routing_key.split(".")
    if len(parts) == 4 and parts[1:3] == ["rpc", "model"] and parts[3] in METHODS:
        return parts[3]
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Status = Literal["ok", "denied", "bad_request", "refused", "pending", "unavailable"]
"""ok · denied: the policy refuses (see `denial`) · bad_request: the request does not parse ·
refused: no broker-checked user id · pending: the version's publication is not yet in the audit
log, try again shortly · unavailable: Mishale cannot serve it now (see `detail`)."""


class ActionAccess(_Strict):
    """One action and whether the partner may take it now; if not, every reason and what would grant it."""

    action: str
    allowed: bool
    reasons: list[Reason] = []
    remedy: str | None = None
    quota_remaining: int | None = Field(default=None, description="Predictions left today (predict actions)")


class VersionAccess(_Strict):
    """A registered model version as a partner sees it: facts, its own part, and its download access.

    Other partners' ids and epsilons are not listed here (a Tier 1 partner learns only how many
    trained it); the model card that comes with a granted download lists them.
    """

    version: int
    parent_version: int | None
    sha256: str
    rounds: int
    metrics: dict[str, float]
    published_at: datetime
    contributors: int
    you_contributed: bool
    your_epsilon: float | None = None
    download: ActionAccess


class ModelListRequest(_Strict):
    v: Literal[1] = WIRE_VERSION


class ModelListReply(_Strict):
    v: Literal[1] = WIRE_VERSION
    status: Status
    detail: str | None = Field(default=None, max_length=1_000)
    partner_id: str | None = None
    tier: int | None = None
    actions: list[ActionAccess] = []
    versions: list[VersionAccess] = []


class ModelDownloadRequest(_Strict):
    v: Literal[1] = WIRE_VERSION
    download_id: uuid.UUID = Field(description="Chosen by the partner, the same for every chunk of one download")
    version: Annotated[int, Field(ge=0, le=1_000_000)] | Literal["latest"]
    offset: Annotated[int, Field(ge=0)] = 0


class ModelDownloadReply(_Strict):
    v: Literal[1] = WIRE_VERSION
    status: Status
    detail: str | None = Field(default=None, max_length=1_000)
    version: int | None = None
    sha256: str | None = Field(default=None, description="The registry's digest of the weights (model_digest)")
    file_size: int | None = None
    file_sha256: str | None = Field(default=None, description="SHA-256 of the whole file's bytes (transfer check)")
    offset: int = 0
    data: str = Field(default="", max_length=MAX_CHUNK_BASE64, description="base64 of the chunk at `offset`")
    denial: ActionAccess | None = None
    card: dict[str, Any] | None = Field(default=None, description="The model card (cards.card_json), offset 0")
    published_event: dict[str, Any] | None = Field(default=None, description="The model.published event, offset 0")
    receipt: dict[str, Any] | None = Field(
        default=None, description="Audit receipt of the model.published event (audit.receipts.Receipt), offset 0"
    )
