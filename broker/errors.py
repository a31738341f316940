"""Errors of the broker layer: each names one situation the caller can act on.

`BrokerError` and its subclasses carry a one-line message written for a person (the CLI prints
`str(error)` and exits, no traceback). `PermanentError` is raised by handlers, not by the broker:
it tells the consumer runtime that retrying cannot help, so the event is dead-lettered at once.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from mshale_fl.errors import UserFacingError

START_HINT = "start it with `rabbitmq-server -detached` (or `docker compose up -d rabbitmq`)"
CREDENTIALS_HINT = "check the user name and password in MSHALE_BROKER_URL"
VHOST_HINT = (
    "check that the virtual host exists and the user may use it "
    "(rabbitmqctl list_vhosts; rabbitmqctl list_permissions -p VHOST)"
)


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, safe to print or log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


class BrokerError(UserFacingError):
    """Base of every error raised by `mshale_fl.broker`; `str()` is one line for a person."""


class BrokerUnavailableError(BrokerError):
    """RabbitMQ cannot be reached (refused, unresolvable, timed out) or refused our credentials."""

    def __init__(self, url: str, cause: str, *, hint: str = START_HINT) -> None:
        self.url = redact_url(url)
        self.cause = cause
        self.hint = hint
        super().__init__(f"cannot reach RabbitMQ at {self.url} ({cause}); {hint}")


class TopologyMismatchError(BrokerError):
    """An exchange or queue exists with other settings than the ones this version declares."""

    def __init__(self, entity: str, detail: str) -> None:
        self.entity = entity
        self.detail = detail
        super().__init__(
            f"{entity} already exists with different settings ({detail}); queue arguments cannot be changed "
            "in place: drain and delete it (rabbitmqctl delete_queue) and run `mshale-fl broker declare` again"
        )


class UnroutableError(BrokerError):
    """The broker returned a mandatory publish: no queue was bound for its exchange and routing key."""

    def __init__(self, exchange: str, routing_key: str, reply_code: int, reply_text: str, message_id: str | None) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.message_id = message_id
        where = f"exchange {exchange!r}" if exchange else "the default exchange"
        super().__init__(
            f"message {message_id} to {where} with routing key {routing_key!r} was unroutable ({reply_code} {reply_text})"
        )


class PublishRejectedError(BrokerError):
    """The broker negatively confirmed (nacked) a publish, e.g. a queue at its length limit."""

    def __init__(self, exchange: str, routing_key: str, message_id: str | None) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.message_id = message_id
        target = exchange or "the default exchange"
        super().__init__(f"the broker refused message {message_id} to {target!r} / {routing_key!r} (nack)")


class PublishForbiddenError(BrokerError):
    """The broker closed the channel for a publish it will never accept (access, user_id, missing exchange)."""

    def __init__(self, exchange: str, routing_key: str, reply_code: int, reply_text: str) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.reply_code = reply_code
        self.reply_text = reply_text
        target = exchange or "the default exchange"
        super().__init__(f"publish to {target!r} / {routing_key!r} refused: {reply_code} {reply_text}")


class PermanentError(Exception):
    """Raised by a handler when an event can never be processed: it is dead-lettered at once.

    `reason_code` is machine-readable (snake/dot case) and travels in the `x-mshale-reason` header;
    `message` explains it to a person.
    """

    def __init__(self, reason_code: str, message: str = "") -> None:
        self.reason_code = reason_code
        self.message = message
        super().__init__(f"{reason_code}: {message}" if message else reason_code)
