"""The predict worker (`mshale-fl worker predict`): predictions, model downloads, and the model registry.

Start N of them to scale: they compete on the `predict` quorum queue and on the `mshale.rpc.model`
request queue, and share the ledger (PostgreSQL for many workers; SQLite for one host).

    partner (its own broker user)                     predict worker
      publish <p>.prediction.requested  ------------>  mshale.predict (quorum; also gets *.model.published)
        user_id=<p>, reply_to=amq.rabbitmq.reply-to      inbox transaction: policy, quota charge, prediction
                                                         publish prediction.ready | access.denied (confirmed)
      consume amq.rabbitmq.reply-to (no-ack)  <-------  then reply: the same event, same correlation id
      publish <p>.rpc.model.download|list  --------->  mshale.rpc.model (classic, TTL)
                                              <-------  decision published as access.granted | access.denied
                                                         (confirmed), then the reply (bytes in chunks)

Why a prediction request is an event and a download request is not: `prediction.requested` is in
the contract (the request itself is logged and kept on the stream, like a submission), and its
answer is the grant or denial. A download or a list is a read over RPC, like an audit receipt;
what is logged for a download is its decision (`access.granted` / `access.denied`).

Every answer is published to `mshale.events` with confirms *before* the caller hears it, so the
audit worker appends every grant and every denial; a prediction is never handed out unlogged. The
answer is recorded in the inbox with the quota charge, in one transaction: a request redelivered
(or sent again by the partner with the same event id) gets the same answer and is charged once.

Malformed requests never stop the worker: a body that does not parse is dead-lettered with its
reason (`x-mshale-reason: invalid_event`) by the consumer runtime, and if it came from a partner
with a `reply_to`, that partner first gets an `access.denied` whose reasons name each invalid field
(the validator's codes: `vector.length`, `spec.unknown_field`, ...) so it is not left waiting.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, ClassVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError
from sqlalchemy import Connection, Engine

from mshale_fl.access.answers import ANSWER_NAMESPACE, DEFAULT_MAX_REQUEST_AGE, answer_prediction, model_list
from mshale_fl.access.config import AccessSettings
from mshale_fl.access.downloads import DownloadService
from mshale_fl.access.model_files import ModelFiles
from mshale_fl.access.policy import DEFAULT_POLICY, AccessPolicy
from mshale_fl.access.proofs import ProofsUnavailable, configured_proofs
from mshale_fl.access.wire import MODEL_RPC_QUEUE, ModelListReply, ModelListRequest, model_rpc_method
from mshale_fl.agents.mishale.registry_handler import register_published_model, wait_until_settled
from mshale_fl.broker import (
    ConsumerStats,
    Delivery,
    InboxProcessor,
    PermanentError,
    Publisher,
    connect,
    current_delivery,
    declare_configured_topology,
    run_worker,
)
from mshale_fl.broker.publisher import encode_event
from mshale_fl.broker.topology import MODEL_RPC, declare_rpc_queue
from mshale_fl.config import Settings
from mshale_fl.ledger import open_ledger
from mshale_fl.logging import configure_logging, get_logger
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.payloads import AccessDenied, Reason

log = get_logger(__name__)

__all__ = [
    "AnswerChannel",
    "ModelResponder",
    "PredictHandler",
    "PredictProcessor",
    "build_predict_worker",
    "run_predict_worker",
    "serve_predict",
]

CONTENT_TYPE = "application/json"
PARTNER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
MAX_REASONS = 100


class AnswerChannel:
    """Publishes answers to `mshale.events` (confirmed) and replies to RPC callers (best effort)."""

    def __init__(self, publisher: Publisher, reply_channel: AbstractChannel) -> None:
        self.publisher = publisher
        self.reply_channel = reply_channel

    async def publish(self, events: Sequence[EventEnvelope[Any]]) -> None:
        await self.publisher.publish_many(list(events))

    async def reply(self, reply_to: str, correlation_id: str | None, body: bytes) -> None:
        # Not mandatory, not confirmed (as the receipt RPC): the caller retries, and RabbitMQ before
        # 3.12 returns mandatory publishes to direct reply-to as unroutable although it delivers them.
        try:
            await self.reply_channel.default_exchange.publish(
                aio_pika.Message(body, content_type=CONTENT_TYPE, correlation_id=correlation_id),
                routing_key=reply_to,
                mandatory=False,
            )
        except Exception as error:  # the caller is gone or the channel closed: it asks again
            log.info("access.reply_lost", error=f"{type(error).__name__}: {error}"[:200])


class PredictHandler:
    """Answers `prediction.requested` and registers `model.published`, inside the inbox transaction."""

    consumer_name: ClassVar[str] = "predict"

    def __init__(self, models: ModelFiles, *, policy: AccessPolicy, max_request_age: timedelta) -> None:
        self.models = models
        self.policy = policy
        self.max_request_age = max_request_age

    def handle(self, event: EventEnvelope[Any], connection: Connection) -> Sequence[EventEnvelope[Any]]:
        if event.type == "model.published":
            return register_published_model(connection, event)
        if event.type != "prediction.requested":
            raise PermanentError("predict.unexpected_event", f"the predict worker does not handle {event.type!r}")
        delivery = current_delivery()
        answer = answer_prediction(
            connection,
            event,
            models=self.models,
            policy=self.policy,
            sender=delivery.user_id if delivery is not None else None,
            verify_sender=delivery is not None,  # outside the runtime (tests, tools) there is no transport
            max_request_age=self.max_request_age,
        )
        log.info(
            "access.prediction_answered",
            partner_id=event.partner_id,
            request_id=str(event.event_id),
            outcome=answer.type,
            items=len(event.payload.specs) + len(event.payload.vectors),
            reasons=[reason.code for reason in getattr(answer.payload, "reasons", [])],
        )
        return [answer]


class PredictProcessor(InboxProcessor):
    """`PredictHandler` through the inbox; answers are published before the caller is answered."""

    def __init__(
        self,
        engine: Engine,
        models: ModelFiles,
        *,
        policy: AccessPolicy = DEFAULT_POLICY,
        max_request_age: timedelta = DEFAULT_MAX_REQUEST_AGE,
        settle_wait_s: float = 300.0,
    ) -> None:
        super().__init__(PredictHandler(models, policy=policy, max_request_age=max_request_age), engine)
        self.settle_wait_s = settle_wait_s
        self.answers: AnswerChannel | None = None
        """Set by `serve_predict`; without it the runtime publishes the answers and nobody is replied to."""

    async def process(self, event: EventEnvelope[Any]) -> Sequence[EventEnvelope[Any]]:
        if event.type == "model.published":
            await wait_until_settled(self.engine, event.payload.model_version, timeout=self.settle_wait_s)
        outputs = list(await super().process(event))
        if not outputs or self.answers is None:
            return outputs
        # Logged before answered. If publishing fails the delivery is retried, and the inbox gives
        # back the same answer (same event id, no second quota charge).
        await self.answers.publish(outputs)
        delivery = current_delivery()
        if delivery is not None and delivery.reply_to:
            await self.answers.reply(delivery.reply_to, delivery.correlation_id, encode_event(outputs[0]))
        return []

    async def reject_invalid(self, body: bytes, delivery: Delivery, error: ValueError) -> Sequence[EventEnvelope[Any]]:
        """Deny a malformed prediction request to the partner waiting for it (then the runtime dead-letters it)."""
        sender = delivery.user_id
        if (
            self.answers is None
            or not delivery.reply_to
            or not delivery.routing_key.endswith(".prediction.requested")
            or not sender
            or not PARTNER_ID.match(sender)
        ):
            return []
        from mshale_fl.agents.mishale.validate import reasons_from_error

        request_id = _claimed_event_id(body) or uuid.UUID(int=0)
        reasons = reasons_from_error(error)
        if len(reasons) > MAX_REASONS:
            reasons = [
                *reasons[: MAX_REASONS - 1],
                Reason(code="reasons.truncated", message=f"{len(reasons) - MAX_REASONS + 1} more"),
            ]
        denial = new_event(
            "access.denied",
            AccessDenied(
                request_id=request_id,
                action="predict",
                reasons=reasons,
                remedy="fix the fields named and send the request again (`mshale-fl predict` builds valid requests)",
            ),
            partner_id=sender,
            event_id=uuid.uuid5(ANSWER_NAMESPACE, f"invalid/{sender}/{request_id}"),
        )
        await self.answers.publish([denial])
        await self.answers.reply(delivery.reply_to, delivery.correlation_id, encode_event(denial))
        log.info("access.invalid_request_denied", partner_id=sender, request_id=str(request_id),
                 reasons=[reason.code for reason in reasons][:10])  # fmt: skip
        return []


def _claimed_event_id(body: bytes) -> uuid.UUID | None:
    try:
        data = json.loads(body)
        return uuid.UUID(data["event_id"]) if isinstance(data, dict) and isinstance(data.get("event_id"), str) else None
    except (ValueError, UnicodeDecodeError, KeyError):
        return None


class ModelResponder:
    """Answers `<p>.rpc.model.list` and `<p>.rpc.model.download` from `mshale.rpc.model`."""

    def __init__(
        self,
        connection: AbstractConnection,
        downloads: DownloadService,
        answers: AnswerChannel,
        *,
        policy: AccessPolicy = DEFAULT_POLICY,
        prefetch: int = 16,
    ) -> None:
        self.connection = connection
        self.downloads = downloads
        self.answers = answers
        self.policy = policy
        self.prefetch = prefetch
        self.answered = 0
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        self._channel = await self.connection.channel(publisher_confirms=False)
        await self._channel.set_qos(prefetch_count=self.prefetch)
        self._queue = await declare_rpc_queue(self._channel, MODEL_RPC)
        self._tag = await self._queue.consume(self._on_request, no_ack=False)
        log.info("access.model_rpc_serving", queue=MODEL_RPC_QUEUE)

    async def stop(self) -> None:
        if (
            self._queue is not None
            and self._tag is not None
            and self._channel is not None
            and not self._channel.is_closed
        ):
            try:
                await asyncio.wait_for(self._queue.cancel(self._tag), timeout=5)
            except Exception as error:  # the channel may be gone already; the broker requeues anyway
                log.debug("access.model_rpc_cancel_failed", error=repr(error))
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_request(self, message: AbstractIncomingMessage) -> None:
        try:
            body = await self._answer(model_rpc_method(message.routing_key or ""), message.user_id, message.body)
            if message.reply_to:
                await self.answers.reply(message.reply_to, message.correlation_id, body)
            self.answered += 1
        except Exception as error:  # one bad request must not stop the responder; the caller retries
            log.warning("access.model_rpc_failed", error=f"{type(error).__name__}: {error}"[:300])
        finally:
            try:
                await message.ack()
            except Exception as error:  # channel gone: the request is requeued and answered again
                log.debug("access.model_rpc_ack_lost", error=repr(error))

    async def _answer(self, method: str | None, requester: str | None, body: bytes) -> bytes:
        if method == "download":
            answer = await asyncio.to_thread(self.downloads.answer, requester, body)
            reply = answer.reply
            if answer.audit_event is not None:
                try:
                    await self.answers.publish([answer.audit_event])
                except Exception as error:  # never hand out (or refuse) anything the log does not show
                    log.error("access.decision_unpublished", error=f"{type(error).__name__}: {error}"[:300])
                    reply = type(reply)(
                        status="unavailable", detail="the decision could not be recorded in the audit log; try again"
                    )
            return reply.model_dump_json().encode()
        if method == "list":
            return (await asyncio.to_thread(self._list, requester, body)).model_dump_json().encode()
        return ModelListReply(status="bad_request", detail="unknown model RPC method").model_dump_json().encode()

    def _list(self, requester: str | None, body: bytes) -> ModelListReply:
        try:
            ModelListRequest.model_validate_json(body)
        except ValidationError as error:
            return ModelListReply(status="bad_request", detail=str(error.errors()[0]["msg"])[:1000])
        if not requester:
            return ModelListReply(status="refused", detail="the request carries no user_id; it identifies the partner")
        try:
            with self.downloads.engine.connect() as connection:
                return model_list(connection, requester, policy=self.policy)
        except Exception as error:
            log.error("access.model_list_failed", partner_id=requester, error=f"{type(error).__name__}: {error}"[:300])
            return ModelListReply(status="unavailable", detail="the ledger could not be read; try again later")


def build_predict_worker(
    settings: Settings, access: AccessSettings | None = None
) -> tuple[PredictProcessor, DownloadService]:
    """The processor and download service `mshale-fl worker predict` runs, from MSHALE_* and MSHALE_ACCESS_*."""
    access = access or AccessSettings()
    # torch and the featurizer take a moment to import; doing it inside the first transaction
    # would hold the ledger's write lock that long.
    import mshale_fl.agents.partner.featurize  # noqa: F401
    import mshale_fl.training.model  # noqa: F401

    engine = open_ledger(settings=settings)
    models = ModelFiles(access.resolved_models_dir(settings.home))
    policy = access.policy()
    try:
        proofs, problem = configured_proofs(), None
    except ProofsUnavailable as error:
        proofs, problem = None, f"this predict worker cannot read the audit log: {error}"
        log.warning("access.downloads_without_audit_proofs", problem=problem)
    processor = PredictProcessor(
        engine,
        models,
        policy=policy,
        max_request_age=timedelta(seconds=access.max_request_age_s),
        settle_wait_s=access.settle_wait_s,
    )
    downloads = DownloadService(
        engine, models, proofs, policy=policy, chunk_bytes=access.chunk_bytes, proofs_problem=problem
    )
    return processor, downloads


async def serve_predict(
    processor: PredictProcessor,
    downloads: DownloadService,
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
    shutdown_grace: float = 10.0,
) -> ConsumerStats:
    """Run the predict role (`run_worker`) with the answer channel and, beside it, the model RPC responder."""
    connection = await connect(settings.broker_url, name="mshale-fl worker predict answers")
    try:
        await declare_configured_topology(connection, settings)
        publisher = await Publisher.open(connection, window=settings.publish_window)
        answers = AnswerChannel(publisher, await connection.channel(publisher_confirms=False))
        processor.answers = answers
        responder = ModelResponder(connection, downloads, answers, policy=downloads.policy)
        await responder.start()
        try:
            return await run_worker(
                "predict",
                processor,
                settings,
                stop=stop,
                install_signal_handlers=install_signal_handlers,
                shutdown_grace=shutdown_grace,
                declare=False,
            )
        finally:
            await responder.stop()
            processor.answers = None
            await publisher.close()
    finally:
        await connection.close()


def run_predict_worker(settings: Settings) -> ConsumerStats:
    """`mshale-fl worker predict`: serve until SIGTERM/SIGINT, then close the ledger."""
    configure_logging(settings.log_level)
    processor, downloads = build_predict_worker(settings)
    try:
        stats = asyncio.run(serve_predict(processor, downloads, settings))
        log.info("worker.stopped", role="predict", **vars(stats))
        return stats
    finally:
        processor.close()
        processor.engine.dispose()
