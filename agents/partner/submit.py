"""`submit`: publish a partner's transmittable contributions and collect the receipts.

Tier 1 folders publish one `spec.submitted` per transmittable spec; Tier 2 folders publish their
transmittable vectors as `vectors.submitted` batches (`TransmissionPlan.submissions`, `batches.py`).
A Tier 2 submission is refused before connecting (`AgreementRequired`, one line) when the partner
config no longer declares a DPA; Mishale checks its own record of the DPA again.

The partner acts as itself on the broker: the API key names the partner (`partner_id_from_key`),
the connection authenticates as the partner's broker user (user name = partner id, password =
`broker_password(api_key)`), and every message carries `user_id` = partner id, which RabbitMQ
checks. Only what `transmission.plan_transmission` marks transmittable is published (manifest and
policy both agree); everything else, `full-ip` above all, is never even read.

Receipts come back on a queue of the partner's own: `mshale.reply.<partner id>.<random>`
(exclusive, auto-delete, so it vanishes with the connection), bound to `mshale.events` with
`<partner id>.submission.*`. It is declared and bound *before* anything is published, so no
receipt can be missed. The broker lets a partner bind only its own routing keys (topic read
permission `^{username}\\.`), so it sees its own receipts and nobody else's events.

Resubmitting is safe: event ids are deterministic (`submission_event_id`), the validator's inbox
answers a repeated submission with the receipt it recorded the first time (same receipt id), and
the ledger records each receipt once. The API key is never printed or logged; the broker URL is
only ever shown redacted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import AMQPError, ChannelAccessRefused, ChannelNotFoundEntity

from mshale_fl.agents.partner.batches import DEFAULT_BATCH_SIZE, check_batch_size
from mshale_fl.agents.partner.extract.sensitivity import AgreementRequired
from mshale_fl.agents.partner.transmission import PlannedItem, Submission, TransmissionPlan
from mshale_fl.broker import EVENTS_EXCHANGE, BrokerError, BrokerUnavailableError, Publisher, connect, redact_url
from mshale_fl.broker.errors import CREDENTIALS_HINT, VHOST_HINT, PublishForbiddenError
from mshale_fl.errors import UserFacingError
from mshale_fl.ledger.api_keys import partner_id_from_key
from mshale_fl.ledger.broker_identity import broker_password
from mshale_fl.logging import get_logger
from mshale_fl.schemas.events import EventEnvelope, parse_event
from mshale_fl.schemas.payloads import Reason

log = get_logger(__name__)

RECEIPT_TYPES = ("submission.accepted", "submission.rejected")
DEFAULT_TIMEOUT = 60.0


class SubmitError(UserFacingError):
    """Submission failed in a way the partner can act on; the message is one line, never the key."""


def reply_queue_name(partner_id: str) -> str:
    return f"mshale.reply.{partner_id}.{uuid.uuid4().hex}"


def receipt_binding_key(partner_id: str) -> str:
    return f"{partner_id}.submission.*"


def partner_broker_url(broker_url: str, partner_id: str, api_key: str) -> str:
    """`broker_url` with its credentials replaced by the partner's broker user and key-derived password."""
    parts = urlsplit(broker_url)
    host = parts.hostname or "localhost"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    userinfo = f"{quote(partner_id, safe='')}:{quote(broker_password(api_key), safe='')}"
    return urlunsplit((parts.scheme or "amqp", f"{userinfo}@{host}", parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Receipt:
    submission_id: uuid.UUID
    accepted: bool
    reasons: tuple[Reason, ...]
    receipt_id: uuid.UUID

    @property
    def status(self) -> str:
        return "accepted" if self.accepted else "rejected"


def _reasons_for(receipt: Receipt, position: int | None) -> list[Reason]:
    """The reasons of a receipt that concern the vector at `position` of its batch (all of them for a spec).

    A reason about one vector names it in its field (`vectors[3].values[17]`); reasons about the
    whole submission (sender, agreements, label) concern every protocol of the batch.
    """
    if position is None:
        return list(receipt.reasons)
    return [reason for reason in receipt.reasons
            if not (reason.field or "").startswith("vectors[") or (reason.field or "").startswith(f"vectors[{position}]")]  # fmt: skip


@dataclass
class SubmissionResult:
    """What `submit` published and what came back. Counts in `summary` are per protocol; `submissions` per event."""

    partner_id: str
    plan: TransmissionPlan
    submissions: list[Submission] = field(default_factory=list)
    """Published (confirmed by the broker), in order."""
    receipts: dict[uuid.UUID, Receipt] = field(default_factory=dict)
    waited: bool = False

    @property
    def published(self) -> list[tuple[PlannedItem, uuid.UUID]]:
        """(protocol, the event that carried it) for every protocol sent."""
        return [(item, submission.event_id) for submission in self.submissions for item in submission.items]

    @property
    def accepted(self) -> list[Receipt]:
        return [receipt for receipt in self.receipts.values() if receipt.accepted]

    @property
    def rejected(self) -> list[Receipt]:
        return [receipt for receipt in self.receipts.values() if not receipt.accepted]

    @property
    def pending(self) -> list[tuple[PlannedItem, uuid.UUID]]:
        return [(item, event_id) for item, event_id in self.published if event_id not in self.receipts]

    def _count(self, accepted: bool) -> int:
        return sum(1 for _, event_id in self.published
                   if event_id in self.receipts and self.receipts[event_id].accepted is accepted)  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        def status(event_id: uuid.UUID, position: int | None) -> dict[str, Any]:
            receipt = self.receipts.get(event_id)
            if receipt is None:
                return {"status": "pending", "reasons": []}
            return {
                "status": receipt.status,
                "receipt_id": str(receipt.receipt_id),
                "reasons": [reason.model_dump(mode="json") for reason in _reasons_for(receipt, position)],
            }

        rows = []
        for submission in self.submissions:
            positions: dict[str, int | None] = (
                {vector.spec_hash: index for index, vector in enumerate(submission.event.payload.vectors)}
                if submission.event.type == "vectors.submitted" else {}
            )  # fmt: skip
            for item in submission.items:
                position = positions.get(item.content_hash)
                rows.append({"partner_id": self.partner_id, "source": item.source, "content_hash": item.content_hash,
                             "submission_id": str(submission.event_id), **status(submission.event_id, position)})  # fmt: skip
        return {
            "partner_id": self.partner_id,
            "tier": self.plan.tier,
            "summary": {
                "protocols": len(self.plan.items),
                "published": len(self.published),
                "accepted": self._count(True),
                "rejected": self._count(False),
                "pending": len(self.pending),
                "withheld": len(self.plan.withheld),
            },
            "submissions": [
                {"submission_id": str(submission.event_id), "type": submission.event.type, "items": submission.size,
                 "protocols": len(submission.items), "sensitivity": submission.event.payload.sensitivity.value,
                 **status(submission.event_id, None)}
                for submission in self.submissions
            ],  # fmt: skip
            "receipts": rows,
            "withheld": [
                {"source": item.source, "sensitivity": item.sensitivity.value, "reason": item.decision.reason,
                 "explanation": item.decision.explanation}
                for item in self.plan.withheld
            ],  # fmt: skip
        }


class _ReceiptCollector:
    """Receives this partner's receipts and keeps those answering the submissions of this run."""

    def __init__(self) -> None:
        self.expected: set[uuid.UUID] = set()
        self.receipts: dict[uuid.UUID, Receipt] = {}
        self._complete = asyncio.Event()

    def expect(self, event_ids: set[uuid.UUID]) -> None:
        self.expected = set(event_ids)
        self._check()

    def _check(self) -> None:
        if self.expected and self.expected <= set(self.receipts):
            self._complete.set()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = parse_event(message.body)
        except ValueError:  # pydantic's ValidationError is a ValueError
            log.warning("submit.unreadable_receipt", message_id=message.message_id)
            return
        if event.type not in RECEIPT_TYPES:
            return
        submission_id = event.payload.submission_id
        if submission_id in self.receipts:
            return
        reasons = tuple(event.payload.reasons) if event.type == "submission.rejected" else ()
        self.receipts[submission_id] = Receipt(submission_id, event.type == "submission.accepted", reasons, event.event_id)
        self._check()

    async def wait(self, timeout: float) -> None:
        if not self.expected or timeout <= 0:
            return
        try:
            await asyncio.wait_for(self._complete.wait(), timeout=timeout)
        except TimeoutError:
            pass


async def submit_plan(
    plan: TransmissionPlan,
    api_key: str,
    *,
    broker_url: str,
    timeout: float = DEFAULT_TIMEOUT,
    window: int = 256,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[int, int | None], None] | None = None,
) -> SubmissionResult:
    """Publish every transmittable item of `plan` as the key's partner and wait up to `timeout` s for receipts.

    Raises `MalformedApiKey` for a key of the wrong shape, `AgreementRequired` for a Tier 2 plan
    made without a DPA, and `SubmitError` (one line) when the broker refuses the key, cannot be
    reached, or refuses a publish.
    """
    partner_id = partner_id_from_key(api_key)
    check_batch_size(batch_size)
    if plan.tier == 2 and not plan.local_mode and not plan.agreements.dpa:
        raise AgreementRequired(
            "Tier 2 (feature vectors) needs a Data Processing Agreement: "
            f"{plan.config_source or 'the extraction manifest'} does not declare `[agreements] dpa = true`, so nothing is sent"
        )
    result = SubmissionResult(partner_id=partner_id, plan=plan)
    submissions = plan.submissions(partner_id, batch_size=batch_size)
    if not submissions:
        return result
    events: list[EventEnvelope[Any]] = [submission.event for submission in submissions]
    url = partner_broker_url(broker_url, partner_id, api_key.strip())
    connection = await _connect(url, partner_id)
    collector = _ReceiptCollector()
    try:
        await _listen_for_receipts(connection, partner_id, collector)
        collector.expect({event.event_id for event in events})
        publisher = await Publisher.open(connection, window=window, user_id=partner_id)
        try:
            await publisher.publish_many(events, progress=progress)
        except PublishForbiddenError as error:
            raise SubmitError(f"the broker refused a submission of partner {partner_id!r}: {error.reply_code} {error.reply_text}") from None
        except BrokerError as error:
            raise SubmitError(
                f"the connection to the broker was lost while publishing ({error}); "
                "run submit again: resubmitting the same specs is safe"
            ) from None
        result.submissions = submissions
        log.debug("submit.published", partner_id=partner_id, events=len(events), items=len(result.published))
        await collector.wait(timeout)
        result.waited = timeout > 0
        result.receipts = {key: value for key, value in collector.receipts.items() if key in collector.expected}
        return result
    finally:
        try:
            await connection.close()
        except (AMQPError, ConnectionError, OSError) as error:  # the broker closed it first: nothing to release
            log.debug("submit.close_failed", error=type(error).__name__)


async def _connect(url: str, partner_id: str) -> Any:
    # Not robust: a CLI run should fail with one clear line, not reconnect in silence; a new run
    # resubmits safely.
    try:
        return await connect(url, name=f"mshale-fl submit {partner_id}", robust=False)
    except BrokerUnavailableError as error:
        if error.hint == CREDENTIALS_HINT:
            raise SubmitError(
                f"the broker refused the API key of partner {partner_id!r} (ACCESS_REFUSED): the key is unknown "
                "or was revoked; ask Mishale for a new key"
            ) from None
        if error.hint == VHOST_HINT:
            raise SubmitError(
                f"the broker at {redact_url(url)} does not let partner {partner_id!r} open that virtual host; "
                "check MSHALE_BROKER_URL (the address Mishale gave you)"
            ) from None
        raise SubmitError(
            f"cannot reach the Mishale broker at {redact_url(url)} ({error.cause}); check MSHALE_BROKER_URL and "
            "your network, then run submit again"
        ) from None


async def _listen_for_receipts(connection: Any, partner_id: str, collector: _ReceiptCollector) -> None:
    channel = await connection.channel(publisher_confirms=False)
    try:
        queue = await channel.declare_queue(
            reply_queue_name(partner_id), exclusive=True, auto_delete=True, arguments={"x-queue-type": "classic"}
        )
        await queue.bind(EVENTS_EXCHANGE, routing_key=receipt_binding_key(partner_id))
        await queue.consume(collector.on_message, no_ack=True, exclusive=True)
    except ChannelAccessRefused as error:
        raise SubmitError(
            f"the broker does not let partner {partner_id!r} receive its receipts ({_first_line(error)}); "
            "ask Mishale to refresh your broker permissions"
        ) from None
    except ChannelNotFoundEntity:
        raise SubmitError(
            f"the broker has no exchange {EVENTS_EXCHANGE!r}: Mishale's broker is not set up yet "
            "(an operator runs `mshale-fl broker declare`)"
        ) from None
    except AMQPError as error:
        raise SubmitError(f"the broker refused the receipt queue of partner {partner_id!r}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error.args[0]) if error.args else str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
