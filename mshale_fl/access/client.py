"""The partner's side of model access: predictions, the model list and downloads over RabbitMQ RPC.

The partner acts as its own broker user (the API key names it, as for `submit`), so the broker
checks `user_id` and Mishale knows who asks without any credential in the body. Replies come on
direct reply-to (`amq.rabbitmq.reply-to`): no queue of the partner's is needed, and the replies of
one connection reach only it.

- Predictions: each request is a `prediction.requested` event (its id is the correlation id).
  If no answer comes within `attempt_timeout`, the *same* event is sent again: Mishale's inbox
  answers a repeated request with the answer it recorded, without charging the quota twice.
- Model list and downloads: the RPC of `mshale_fl.access.wire`; a download asks for chunks at
  increasing offsets with one `download_id` until it has the whole file. Nothing received is
  trusted here; `pull.verify_download` checks it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractIncomingMessage
from aiormq.exceptions import AMQPError, ChannelAccessRefused, ChannelNotFoundEntity
from pydantic import BaseModel, ValidationError

from mshale_fl.access.wire import (
    ModelDownloadReply,
    ModelDownloadRequest,
    ModelListReply,
    ModelListRequest,
    model_rpc_routing_key,
)
from mshale_fl.agents.partner.submit import partner_broker_url
from mshale_fl.broker import EVENTS_EXCHANGE, BrokerUnavailableError, connect, redact_url
from mshale_fl.broker.errors import CREDENTIALS_HINT, VHOST_HINT
from mshale_fl.broker.publisher import PERSISTENT, encode_event
from mshale_fl.errors import UserFacingError
from mshale_fl.ledger.api_keys import partner_id_from_key
from mshale_fl.logging import get_logger
from mshale_fl.schemas.events import EventEnvelope, parse_event

log = get_logger(__name__)

__all__ = ["AccessClient", "AccessClientError", "DownloadedFile", "PredictionOutcome", "open_access_client"]

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
CONTENT_TYPE = "application/json"
ReplyT = TypeVar("ReplyT", bound=BaseModel)


class AccessClientError(UserFacingError):
    """The request could not be made or answered; the message is one line (never the key)."""


@dataclass(frozen=True)
class PredictionOutcome:
    """One request and what came back: `prediction.ready`, `access.denied`, or None (no answer in time)."""

    request: EventEnvelope[Any]
    answer: EventEnvelope[Any] | None


@dataclass
class DownloadedFile:
    """A download as received (unverified): the file bytes and the first reply (card, event, receipt)."""

    first: ModelDownloadReply
    data: bytes = field(repr=False)


class AccessClient:
    """Requests over one partner connection; `close()` when done (or use `open_access_client`)."""

    def __init__(self, connection: AbstractConnection, partner_id: str, *, attempt_timeout: float = 10.0) -> None:
        self.connection = connection
        self.partner_id = partner_id
        self.attempt_timeout = attempt_timeout
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._open_lock = asyncio.Lock()

    # -- predictions ---------------------------------------------------------------------------

    async def predict(
        self,
        requests: Sequence[EventEnvelope[Any]],
        *,
        timeout: float = 60.0,
        window: int = 16,
        progress: Callable[[int], None] | None = None,
    ) -> list[PredictionOutcome]:
        """Send each `prediction.requested` event (at most `window` in flight) and collect the answers."""
        for request in requests:
            if request.type != "prediction.requested" or request.partner_id != self.partner_id:
                raise ValueError(
                    f"not a prediction request of {self.partner_id}: {request.type} of {request.partner_id}"
                )
        deadline = asyncio.get_running_loop().time() + timeout
        slots = asyncio.Semaphore(window)
        done = 0

        async def one(request: EventEnvelope[Any]) -> PredictionOutcome:
            nonlocal done
            async with slots:
                answer = await self._ask(request, deadline)
            done += 1
            if progress is not None:
                progress(done)
            return PredictionOutcome(request, answer)

        return list(await asyncio.gather(*(one(request) for request in requests)))

    async def _ask(self, request: EventEnvelope[Any], deadline: float) -> EventEnvelope[Any] | None:
        loop = asyncio.get_running_loop()
        body = encode_event(request)
        while loop.time() < deadline:
            wait = min(self.attempt_timeout, deadline - loop.time())
            reply = await self._call(
                request.routing_key, body, wait, correlation_id=str(request.event_id), event=request
            )
            if reply is None:
                continue  # lost or slow: the same event again (answered once, charged once)
            try:
                answer = parse_event(reply)
            except ValueError:
                raise AccessClientError("Mishale's answer to a prediction request is not a valid event") from None
            if getattr(answer.payload, "request_id", None) != request.event_id:
                raise AccessClientError(f"the answer {answer.event_id} does not answer request {request.event_id}")
            return answer
        return None

    # -- the model RPC ---------------------------------------------------------------------------

    async def list_models(self, *, timeout: float = 30.0) -> ModelListReply:
        reply = await self._rpc("list", ModelListRequest(), ModelListReply, timeout)
        if reply.status != "ok":
            raise AccessClientError(f"Mishale could not list the models: {reply.status} ({reply.detail})")
        return reply

    async def download(
        self, version: int | str, *, timeout: float = 120.0, progress: Callable[[int, int], None] | None = None
    ) -> DownloadedFile | ModelDownloadReply:
        """The whole file of `version` (int or "latest"), or the reply that refused it (`denied`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        download_id = uuid.uuid4()
        request = ModelDownloadRequest(download_id=download_id, version=version)
        first: ModelDownloadReply | None = None
        chunks: list[bytes] = []
        received = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AccessClientError(f"the download of model version {version} did not finish within {timeout:g} s")
            reply = await self._rpc("download", request, ModelDownloadReply, remaining)
            if reply.status == "pending":
                await asyncio.sleep(min(0.5, max(deadline - loop.time(), 0)))
                continue
            if reply.status == "denied":
                return reply
            if reply.status != "ok":
                raise AccessClientError(
                    f"Mishale could not serve model version {version}: {reply.status} ({reply.detail})"
                )
            if first is None:
                first = reply
                request = ModelDownloadRequest(download_id=download_id, version=reply.version)  # "latest" resolved once
            elif (reply.version, reply.file_sha256, reply.file_size) != (
                first.version,
                first.file_sha256,
                first.file_size,
            ):
                raise AccessClientError("the model file changed on Mishale's side during the download; pull again")
            if reply.offset != received:
                raise AccessClientError(f"asked for offset {received}, got {reply.offset}")
            try:
                chunk = base64.b64decode(reply.data, validate=True)
            except (binascii.Error, ValueError):
                raise AccessClientError("a chunk of the download is not base64") from None
            if not chunk and received < (first.file_size or 0):
                raise AccessClientError("the download stopped short of the file size")
            chunks.append(chunk)
            received += len(chunk)
            if progress is not None and first.file_size is not None:
                progress(received, first.file_size)
            if first.file_size is None or received >= first.file_size:
                return DownloadedFile(first=first, data=b"".join(chunks))
            request = request.model_copy(update={"offset": received})

    async def _rpc(self, method: str, request: BaseModel, reply_type: type[ReplyT], timeout: float) -> ReplyT:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        body = request.model_dump_json().encode()
        while loop.time() < deadline:
            wait = min(self.attempt_timeout, deadline - loop.time())
            reply = await self._call(
                model_rpc_routing_key(self.partner_id, method), body, wait, correlation_id=uuid.uuid4().hex
            )
            if reply is None:
                continue
            try:
                return reply_type.model_validate_json(reply)
            except ValidationError as error:
                raise AccessClientError(
                    f"Mishale's {method} reply does not parse: {error.errors()[0]['msg']}"
                ) from None
        raise AccessClientError(
            f"no answer to the model {method} request within {timeout:g} s (is `mshale-fl worker predict` running?)"
        )

    # -- transport -------------------------------------------------------------------------------

    async def _call(
        self,
        routing_key: str,
        body: bytes,
        timeout: float,
        *,
        correlation_id: str,
        event: EventEnvelope[Any] | None = None,
    ) -> bytes | None:
        """Publish one request and wait up to `timeout` s for its reply (None if none came)."""
        exchange = await self._open()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        properties: dict[str, Any] = {}
        if event is not None:
            # As the Publisher sends events (the consumer runtime reads them the same way), plus the reply address.
            properties = {"message_id": str(event.event_id), "type": event.type, "timestamp": event.occurred_at,
                          "delivery_mode": PERSISTENT, "app_id": "mshale-fl"}  # fmt: skip
        else:
            # An RPC read is worthless after the caller gave up: let the broker drop it unanswered.
            properties = {"expiration": max(timeout, 0.001)}
        try:
            try:
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type=CONTENT_TYPE,
                        correlation_id=correlation_id,
                        reply_to=DIRECT_REPLY_TO,
                        user_id=self.partner_id,
                        **properties,
                    ),
                    routing_key=routing_key,
                )
            except ChannelAccessRefused as error:
                raise AccessClientError(
                    f"the broker refused a request of partner {self.partner_id!r} ({_first_line(error)}); "
                    "ask Mishale to refresh your broker permissions"
                ) from None
            try:
                return await asyncio.wait_for(future, timeout=max(timeout, 0.001))
            except TimeoutError:
                return None
        finally:
            self._waiting.pop(correlation_id, None)

    async def _open(self) -> AbstractExchange:
        async with self._open_lock:
            if self._exchange is None or self._channel is None or self._channel.is_closed:
                try:
                    # Direct reply-to: consume the pseudo-queue (no-ack) on the channel that publishes.
                    self._channel = await self.connection.channel(publisher_confirms=True)
                    replies = await self._channel.get_queue(DIRECT_REPLY_TO, ensure=False)
                    await replies.consume(self._on_reply, no_ack=True)
                    self._exchange = await self._channel.get_exchange(EVENTS_EXCHANGE, ensure=True)
                except ChannelNotFoundEntity:
                    raise AccessClientError(
                        f"the broker has no exchange {EVENTS_EXCHANGE!r}: Mishale's broker is not set up yet "
                        "(an operator runs `mshale-fl broker declare`)"
                    ) from None
                except AMQPError as error:
                    raise AccessClientError(f"the broker refused the reply channel: {_first_line(error)}") from None
            return self._exchange

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message.body)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = self._exchange = None


class _ClientContext:
    def __init__(self, api_key: str, broker_url: str, attempt_timeout: float) -> None:
        self.api_key = api_key.strip()
        self.broker_url = broker_url
        self.attempt_timeout = attempt_timeout
        self.connection: AbstractConnection | None = None
        self.client: AccessClient | None = None

    async def __aenter__(self) -> AccessClient:
        partner_id = partner_id_from_key(self.api_key)
        url = partner_broker_url(self.broker_url, partner_id, self.api_key)
        try:
            # Not robust: a CLI run should fail with one clear line, not reconnect in silence.
            self.connection = await connect(url, name=f"mshale-fl access {partner_id}", robust=False)
        except BrokerUnavailableError as error:
            if error.hint == CREDENTIALS_HINT:
                raise AccessClientError(
                    f"the broker refused the API key of partner {partner_id!r} (ACCESS_REFUSED): the key is unknown "
                    "or was revoked; ask Mishale for a new key"
                ) from None
            if error.hint == VHOST_HINT:
                raise AccessClientError(
                    f"the broker at {redact_url(url)} does not let partner {partner_id!r} open that virtual host; "
                    "check MSHALE_BROKER_URL"
                ) from None
            raise AccessClientError(f"cannot reach the Mishale broker at {redact_url(url)} ({error.cause})") from None
        self.client = AccessClient(self.connection, partner_id, attempt_timeout=self.attempt_timeout)
        return self.client

    async def __aexit__(self, *_: object) -> None:
        if self.client is not None:
            await self.client.close()
        if self.connection is not None:
            try:
                await self.connection.close()
            except (AMQPError, ConnectionError, OSError) as error:  # the broker closed it first
                log.debug("access.close_failed", error=type(error).__name__)


def open_access_client(api_key: str, broker_url: str, *, attempt_timeout: float = 10.0) -> _ClientContext:
    """`async with open_access_client(key, url) as client:` the partner's connection as its broker user."""
    return _ClientContext(api_key, broker_url, attempt_timeout)


def _first_line(error: BaseException) -> str:
    text = str(error.args[0]) if error.args else str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
