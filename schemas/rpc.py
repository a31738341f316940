"""RPC messages: requests a partner makes and the replies it gets straight back (not events).

They are deliberately *not* event types. A receipt request is a read, not something that
happened: if it were an event type, the topology would bind it to the audit queue and to the
stream (both bind every type), and every lookup would become a log entry and a replayed event.
So the request travels on `mshale.events` (the only exchange a partner may write to) under a
routing key outside the event namespace, `<partner-id>.rpc.audit.receipt` (four words; event
bindings are `*.<type>`, three words), and the reply goes straight back to the caller.

    request  {"v": 1, "event_id": "<uuid>", "known_size": 41 | null}
    reply    {"v": 1, "status": "ok", "detail": null,
              "receipt": {...Receipt.to_dict()...},
              "consistency_from": 41 | null, "consistency_proof": ["<base64>", ...]}
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "RECEIPT_QUEUE",
    "RECEIPT_ROUTING_SUFFIX",
    "RPC_VERSION",
    "ReceiptReply",
    "ReceiptRequest",
    "ReceiptStatus",
    "receipt_routing_key",
]

RPC_VERSION = 1
RECEIPT_ROUTING_SUFFIX = "rpc.audit.receipt"
RECEIPT_QUEUE = "mshale.rpc.audit.receipt"
"""Declared and bound (`*.rpc.audit.receipt` on `mshale.events`) by every audit worker; proposed
for broker/topology.py."""

ReceiptStatus = Literal["ok", "not_found", "pending", "bad_request", "refused", "unavailable"]
"""ok: receipt attached · not_found: not in the log (yet), or not the requester's event ·
pending: logged but not yet under a signed checkpoint · bad_request: the request does not parse ·
refused: the request carries no broker-checked user id · unavailable: the log could not be read."""


def receipt_routing_key(partner_id: str) -> str:
    return f"{partner_id}.{RECEIPT_ROUTING_SUFFIX}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReceiptRequest(_Strict):
    v: Literal[1] = RPC_VERSION
    event_id: uuid.UUID
    known_size: int | None = Field(
        default=None, ge=0, description="Size of the last checkpoint the partner accepted (for a consistency proof)"
    )


class ReceiptReply(_Strict):
    v: Literal[1] = RPC_VERSION
    status: ReceiptStatus
    detail: str | None = Field(default=None, max_length=1_000)
    receipt: dict[str, Any] | None = Field(default=None, description="`Receipt.to_dict()` when status is ok")
    consistency_from: int | None = Field(default=None, ge=0)
    consistency_proof: list[str] = Field(default_factory=list, description="base64 hashes, known_size -> tree_size")
