"""A partner's identity on the broker: its RabbitMQ user, password and permissions.

Each partner connects as its own broker user named after its partner id. RabbitMQ itself then
enforces who a message is from:

* the `user_id` property of a published message must equal the authenticated user (the broker
  closes the channel with PRECONDITION_FAILED otherwise; partners never get the `impersonator` tag);
* topic permissions on `mshale.events` let a user publish only routing keys starting with
  `{username}.`, which the broker expands to the authenticated user (ACCESS_REFUSED otherwise);
* vhost permissions let it configure and read only its own reply queues, and bind them to
  `mshale.events` (binding needs read on the source exchange); the topic read permission on
  `mshale.events` (`^{username}\\.`, checked by RabbitMQ on every queue.bind to a topic exchange)
  limits those bindings to its own routing keys, so a partner can receive its own receipts
  (`<partner id>.submission.*`) and nobody else's events.

The broker password is derived from the API key (HMAC-SHA256), so the partner agent derives the
same password from the one secret it holds and Mishale never stores either in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import quote, unquote, urlsplit

import httpx

from mshale_fl.broker.topology import EVENTS_EXCHANGE, GRID_EXCHANGE
from mshale_fl.config import Settings
from mshale_fl.ledger.errors import LedgerError
from mshale_fl.logging import get_logger

BROKER_PASSWORD_CONTEXT = b"mshale-broker-password"

log = get_logger(__name__)


def broker_password(api_key: str) -> str:
    """The partner's RabbitMQ password: HMAC-SHA256(key=API key, msg="mshale-broker-password"), hex.

    The one place this derivation lives; the partner agent calls it with its own key.
    """
    return hmac.new(api_key.encode(), BROKER_PASSWORD_CONTEXT, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class TopicPermission:
    """Routing keys a user may publish (`write`) and bind to (`read`) on one topic exchange."""

    exchange: str
    write: str
    read: str


@dataclass(frozen=True)
class PartnerPermissions:
    configure: str
    write: str
    read: str
    topics: tuple[TopicPermission, ...]

    def topic(self, exchange: str) -> TopicPermission:
        return next(topic for topic in self.topics if topic.exchange == exchange)


def partner_permissions(partner_id: str) -> PartnerPermissions:
    """What a partner's broker user may do in the vhost.

    Vhost permission patterns get no `{username}` expansion from RabbitMQ, so the escaped partner id
    is written into them; topic permission patterns do expand it, and use it.
    """
    own = re.escape(partner_id)
    own_queues = rf"amq\.gen-.*|mshale\.reply\.{own}\..*"
    exchanges = f"{re.escape(EVENTS_EXCHANGE)}|{re.escape(GRID_EXCHANGE)}"
    return PartnerPermissions(
        # Server-named (exclusive) queues and its own named reply queues; nothing shared.
        configure=rf"^({own_queues})$",
        # Publish to the events and grid exchanges (topic-restricted below); bind its own queues
        # (write on the queue).
        write=rf"^({exchanges}|{own_queues})$",
        # Consume its own queues; bind them to the exchanges (read on the source exchange), with
        # binding keys limited by the topic permissions. No worker queue, no stream.
        read=rf"^({exchanges}|{own_queues})$",
        topics=(
            TopicPermission(EVENTS_EXCHANGE, write=r"^{username}\.", read=r"^{username}\."),
            # Without a topic permission on mshale.grid RabbitMQ would allow any key there, and a
            # partner could bind `*.grid.reply` and read every other partner's model updates.
            TopicPermission(
                GRID_EXCHANGE,
                write=r"^{username}\.grid\.(reply|hello|bye)$",
                read=r"^{username}\.grid\.instruction$",
            ),
        ),
    )


def vhost_from_amqp_url(url: str) -> str:
    """The vhost named by an AMQP URL: its percent-decoded path, "/" when empty."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


class BrokerAdminError(LedgerError):
    """The management API refused or could not be reached; the message says which and how to fix it."""


class BrokerAdmin:
    """Partner users on RabbitMQ through its management HTTP API."""

    def __init__(self, management_url: str, user: str, password: str, vhost: str, *, timeout: float = 30.0) -> None:
        self.management_url = management_url.rstrip("/")
        self.vhost = vhost
        self._client = httpx.Client(base_url=self.management_url, auth=(user, password), timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> BrokerAdmin:
        return cls(
            settings.broker_management_url,
            settings.broker_management_user,
            settings.broker_management_password.get_secret_value(),
            vhost_from_amqp_url(settings.broker_url),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, *, ok: tuple[int, ...], **kwargs: object) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as error:
            raise BrokerAdminError(
                f"cannot reach the RabbitMQ management API at {self.management_url} ({type(error).__name__}); "
                "is the management plugin enabled (rabbitmq-plugins enable rabbitmq_management) and "
                "MSHALE_BROKER_MANAGEMENT_URL right?"
            ) from None
        if response.status_code in ok:
            return response
        if response.status_code == 401:
            raise BrokerAdminError(
                f"the RabbitMQ management API at {self.management_url} refused our credentials; "
                "check MSHALE_BROKER_MANAGEMENT_USER / MSHALE_BROKER_MANAGEMENT_PASSWORD (an administrator user)"
            )
        # The request path never carries a secret (passwords travel in bodies only).
        raise BrokerAdminError(
            f"RabbitMQ management API {method} {path} answered {response.status_code}: {response.text[:300]}"
        )

    @staticmethod
    def _segment(value: str) -> str:
        return quote(value, safe="")

    def user_exists(self, username: str) -> bool:
        return self._request("GET", f"/api/users/{self._segment(username)}", ok=(200, 404)).status_code == 200

    def vhost_exists(self) -> bool:
        return self._request("GET", f"/api/vhosts/{self._segment(self.vhost)}", ok=(200, 404)).status_code == 200

    def provision_partner(self, partner_id: str, password: str) -> None:
        """Create the partner's user (no tags: no management access, no impersonation) and its permissions.

        Refuses to touch an existing user: overwriting would silently take over someone's account.
        """
        if self.user_exists(partner_id):
            raise BrokerAdminError(
                f"a RabbitMQ user {partner_id!r} already exists; choose another partner id or delete that user first"
            )
        if not self.vhost_exists():
            raise BrokerAdminError(
                f"the RabbitMQ vhost {self.vhost!r} (from MSHALE_BROKER_URL) does not exist; create it first"
            )
        user = self._segment(partner_id)
        self._request("PUT", f"/api/users/{user}", ok=(201, 204), json={"password": password, "tags": ""})
        try:
            self.apply_permissions(partner_id)
        except BrokerAdminError:
            self.delete_partner(partner_id)
            raise
        log.info("broker_user_created", partner_id=partner_id, vhost=self.vhost)

    def apply_permissions(self, partner_id: str) -> None:
        """Set (or reset) the partner's vhost and topic permissions to `partner_permissions`.

        Idempotent; run it for existing partner users when the permission set changes (for
        instance users created before partners could bind reply queues to `mshale.events`).
        """
        permissions = partner_permissions(partner_id)
        user = self._segment(partner_id)
        vhost = self._segment(self.vhost)
        self._request(
            "PUT",
            f"/api/permissions/{vhost}/{user}",
            ok=(201, 204),
            json={"configure": permissions.configure, "write": permissions.write, "read": permissions.read},
        )
        for topic in permissions.topics:
            self._request(
                "PUT",
                f"/api/topic-permissions/{vhost}/{user}",
                ok=(201, 204),
                json={"exchange": topic.exchange, "write": topic.write, "read": topic.read},
            )

    def delete_partner(self, partner_id: str, *, reason: str = "partner revoked", wait_seconds: float = 5.0) -> None:
        """Delete the user (no new logins) and close every connection it still has (no more traffic).

        Deleting first means a connection opened during the close cannot survive: it could not log in.
        Connections are closed until the management API lists none, because its connection list can
        trail a just-opened connection.
        """
        user = self._segment(partner_id)
        self._request("DELETE", f"/api/users/{user}", ok=(204, 404))
        deadline = time.monotonic() + wait_seconds
        while True:
            remaining = self._request("GET", f"/api/connections/username/{user}", ok=(200, 404))
            if remaining.status_code == 404 or not remaining.json():
                break
            # RabbitMQ also force-closes a deleted user's connections itself; when its close races
            # ours the API answers 500 for a connection that is already gone. The loop re-reads
            # the list, so a 500 only means "look again".
            self._request(
                "DELETE", f"/api/connections/username/{user}", ok=(204, 404, 500), headers={"X-Reason": reason}
            )
            if time.monotonic() > deadline:
                raise BrokerAdminError(
                    f"RabbitMQ still lists connections of {partner_id!r} after {wait_seconds:.0f} s; "
                    f"close them with `rabbitmqctl close_connection` and check the broker"
                )
            time.sleep(0.2)
        log.info("broker_user_deleted", partner_id=partner_id, vhost=self.vhost)
