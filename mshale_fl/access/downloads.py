"""Serving model downloads (Mishale side): decide, prove, chunk; the decision is an event to audit.

`DownloadService.answer(requester, body)` returns the reply *and* the `access.granted` /
`access.denied` event that records the decision. The caller publishes that event with confirms
before it sends the reply, so no model leaves without its grant in the audit log, and no refusal
goes unrecorded. Event ids derive from (partner, download id, version), so the chunks and retries
of one download publish one grant (the audit log keeps an event id once).

Per request: the version is resolved (`latest` = the newest registered); the policy decides
(`model.download`: Tier 3, an active training agreement, a recent training contribution, and the
partner among the version's contributors); the file is read and checked against the registry
(`ModelFiles`); at offset 0 the reply also carries the model card, the `model.published` event the
version was registered from, and its audit receipt (`PublicationProofs`), which is what lets the
partner check the weights against the audit log and not only against Mishale's word.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Engine

from mshale_fl.access.answers import action_access
from mshale_fl.access.cards import card_json
from mshale_fl.access.model_files import ModelFiles, ModelUnavailable
from mshale_fl.access.policy import (
    DEFAULT_POLICY,
    AccessAction,
    AccessDecision,
    AccessPolicy,
    AccessReason,
    decide_access,
)
from mshale_fl.access.proofs import ProofPending, ProofsUnavailable, PublicationProofs
from mshale_fl.access.registry import get_model_version, latest_model_version, publication_of
from mshale_fl.access.wire import ModelDownloadReply, ModelDownloadRequest
from mshale_fl.logging import get_logger
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.payloads import AccessDenied, AccessGranted

log = get_logger(__name__)

__all__ = ["DOWNLOAD_NAMESPACE", "DownloadAnswer", "DownloadService"]

DOWNLOAD_NAMESPACE = uuid.UUID("c4a1e9d2-7b3f-5e80-9d16-2f8b0a7c3e51")
ACTION = AccessAction.MODEL_DOWNLOAD.value


@dataclass(frozen=True)
class DownloadAnswer:
    reply: ModelDownloadReply
    audit_event: EventEnvelope[Any] | None = None
    """Publish (confirmed) before sending `reply`; if that fails, send `unavailable` instead."""


def decision_event_id(kind: str, partner_id: str, download_id: uuid.UUID, version: int | str) -> uuid.UUID:
    return uuid.uuid5(DOWNLOAD_NAMESPACE, f"{kind}/{partner_id}/{download_id}/{version}")


class DownloadService:
    """Answers download requests from the ledger, the model files and the audit log; thread-safe."""

    def __init__(
        self,
        engine: Engine,
        models: ModelFiles,
        proofs: PublicationProofs | None,
        *,
        policy: AccessPolicy = DEFAULT_POLICY,
        chunk_bytes: int = 256 * 1024,
        proofs_problem: str | None = None,
    ) -> None:
        self.engine = engine
        self.models = models
        self.proofs = proofs
        self.proofs_problem = proofs_problem or "this predict worker cannot read the audit log"
        self.policy = policy
        self.chunk_bytes = chunk_bytes

    def answer(self, requester: str | None, body: bytes, *, at: datetime | None = None) -> DownloadAnswer:
        """The reply to one download request and the event recording its decision; never raises."""
        try:
            request = ModelDownloadRequest.model_validate_json(body)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:5])
            return DownloadAnswer(ModelDownloadReply(status="bad_request", detail=problems[:1000]))
        if not requester:
            return DownloadAnswer(
                ModelDownloadReply(
                    status="refused",
                    detail="the request carries no user_id; it identifies the partner (the broker checks it)",
                )
            )
        try:
            with self.engine.connect() as connection:
                return self._answer(connection, requester, request, at)
        except Exception as error:  # the ledger is unreachable, a file unreadable: say so, keep serving
            log.error("access.download_failed", partner_id=requester, error=f"{type(error).__name__}: {error}"[:300])
            return DownloadAnswer(
                ModelDownloadReply(status="unavailable", detail="the request could not be served; try again later")
            )

    def _answer(
        self, connection: Connection, partner_id: str, request: ModelDownloadRequest, at: datetime | None
    ) -> DownloadAnswer:
        version: int | None
        if request.version == "latest":
            latest = latest_model_version(connection)
            version = latest.version if latest is not None else None
        else:
            version = request.version
        if version is None:
            reason = AccessReason(
                "model.unknown", "no model version is registered yet", "wait until Mishale publishes one"
            )
            return self._denied(partner_id, request, AccessDecision(False, (reason,), reason.remedy))
        decision = decide_access(
            connection, partner_id, AccessAction.MODEL_DOWNLOAD, model_version=version, at=at, policy=self.policy
        )
        if not decision.allowed:
            return self._denied(partner_id, request, decision, version=version)

        model = get_model_version(connection, version)
        try:
            file = self.models.get(version, model.sha256)
        except ModelUnavailable as error:
            log.error("access.model_unavailable", model_version=version, error=str(error))
            return DownloadAnswer(
                ModelDownloadReply(
                    status="unavailable", version=version, detail=f"{error}; Mishale must restore it"[:1000]
                )
            )
        size = len(file.data)
        if request.offset > size:
            return DownloadAnswer(
                ModelDownloadReply(
                    status="bad_request",
                    version=version,
                    detail=f"offset {request.offset} is past the end ({size} bytes)",
                )
            )
        extras: dict[str, Any] = {}
        if request.offset == 0:
            proof = self._proof(connection, version)
            if isinstance(proof, ModelDownloadReply):
                return DownloadAnswer(proof)
            extras = proof
        grant = new_event(
            "access.granted",
            AccessGranted(request_id=request.download_id, action=ACTION, model_version=version, sha256=model.sha256),
            partner_id=partner_id,
            event_id=decision_event_id("access.granted", partner_id, request.download_id, version),
            correlation_id=request.download_id,
        )
        chunk = file.data[request.offset : request.offset + self.chunk_bytes]
        reply = ModelDownloadReply(
            status="ok",
            version=version,
            sha256=model.sha256,
            file_size=size,
            file_sha256=file.file_sha256,
            offset=request.offset,
            data=base64.b64encode(chunk).decode("ascii"),
            card=json.loads(card_json(model)) if request.offset == 0 else None,
            **extras,
        )
        return DownloadAnswer(reply, grant)

    def _proof(self, connection: Connection, version: int) -> dict[str, Any] | ModelDownloadReply:
        """The version's `model.published` event and its audit receipt, or the reply saying why not."""
        published = publication_of(connection, version)
        if published is None:
            return ModelDownloadReply(
                status="unavailable",
                version=version,
                detail=f"version {version} was registered without its model.published event, so it cannot be "
                "checked against the audit log",
            )
        if self.proofs is None:
            return ModelDownloadReply(status="unavailable", version=version, detail=self.proofs_problem[:1000])
        try:
            receipt = self.proofs.receipt(published.event_id)
        except ProofPending:
            return ModelDownloadReply(
                status="pending",
                version=version,
                detail=f"the publication of version {version} is not yet under a signed audit checkpoint; try again shortly",
            )
        except ProofsUnavailable as error:
            log.error("access.audit_log_unreadable", error=str(error))
            return ModelDownloadReply(status="unavailable", version=version, detail=str(error)[:1000])
        return {"published_event": published.model_dump(mode="json"), "receipt": receipt.to_dict()}

    def _denied(
        self, partner_id: str, request: ModelDownloadRequest, decision: AccessDecision, *, version: int | None = None
    ) -> DownloadAnswer:
        payload = AccessDenied(
            request_id=request.download_id,
            action=ACTION,
            reasons=[reason.as_reason() for reason in decision.reasons],
            remedy=decision.remedy or "-",
        )
        event = new_event(
            "access.denied",
            payload,
            partner_id=partner_id,
            event_id=decision_event_id(
                "access.denied", partner_id, request.download_id, version if version is not None else request.version
            ),
            correlation_id=request.download_id,
        )
        reply = ModelDownloadReply(status="denied", version=version, denial=action_access(ACTION, decision))
        return DownloadAnswer(reply, event)
