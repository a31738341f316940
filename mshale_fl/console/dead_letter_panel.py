"""The dead-letter panel: messages parked in the topology's dead-letter and unroutable queues.

Counts come from the RabbitMQ management API (GET only; messages are never fetched, which would
requeue them and mark them redelivered). The management plugin refreshes queue statistics every
few seconds (`collect_statistics_interval`, 5 s by default), so a count may trail the queue by
that much.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from mshale_fl.broker.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, UNROUTABLE_QUEUE
from mshale_fl.console.panels import SourceUnavailable

WATCHED_QUEUES: tuple[tuple[str, str], ...] = (
    (DEAD_LETTER_QUEUE, f"dead-lettered by the worker queues (exchange {DEAD_LETTER_EXCHANGE}): invalid events, delivery limit reached"),
    (UNROUTABLE_QUEUE, "published with a routing key no queue binds (unknown event types)"),
)
TIMEOUT_SECONDS = 3.0


class DeadLetterPanel:
    def __init__(self, management_url: str, user: str, password: str, vhost: str) -> None:
        self.management_url = management_url.rstrip("/")
        self.vhost = vhost
        self.source = f"RabbitMQ management API at {self.management_url}, vhost {vhost!r}"
        self._auth = (user, password)

    def _get(self, client: httpx.Client, path: str) -> httpx.Response | None:
        """The response, None on 404; other failures raise `SourceUnavailable` naming the fix."""
        try:
            response = client.get(path)
        except httpx.HTTPError as error:
            raise SourceUnavailable(
                f"RabbitMQ management API unreachable at {self.management_url} ({type(error).__name__}: {error}); "
                "is RabbitMQ running with the rabbitmq_management plugin (MSHALE_BROKER_MANAGEMENT_URL)?"
            ) from None
        if response.status_code == 404:
            return None
        if response.status_code == 401:
            raise SourceUnavailable(
                f"the RabbitMQ management API at {self.management_url} refused user {self._auth[0]!r} "
                "(MSHALE_BROKER_MANAGEMENT_USER / MSHALE_BROKER_MANAGEMENT_PASSWORD)"
            )
        if response.status_code != 200:
            raise SourceUnavailable(
                f"the RabbitMQ management API at {self.management_url} answered {response.status_code} for {path}"
            )
        return response

    def read(self) -> dict[str, Any]:
        vhost = quote(self.vhost, safe="")
        queues: list[dict[str, Any]] = []
        with httpx.Client(base_url=self.management_url, auth=self._auth, timeout=TIMEOUT_SECONDS) as client:
            for name, meaning in WATCHED_QUEUES:
                response = self._get(client, f"/api/queues/{vhost}/{quote(name, safe='')}")
                if response is None:
                    if self._get(client, f"/api/vhosts/{vhost}") is None:
                        raise SourceUnavailable(
                            f"vhost {self.vhost!r} does not exist on {self.management_url} "
                            "(MSHALE_BROKER_URL names the vhost; `mshale-fl broker declare` sets it up)"
                        )
                    queues.append(
                        {"queue": name, "meaning": meaning, "declared": False, "messages": None, "ready": None, "unacked": None}
                    )
                    continue
                body = response.json()
                queues.append(
                    {
                        "queue": name,
                        "meaning": meaning,
                        "declared": True,
                        # Absent until the broker has emitted the queue's first statistics.
                        "messages": body.get("messages"),
                        "ready": body.get("messages_ready"),
                        "unacked": body.get("messages_unacknowledged"),
                    }
                )
        return {"vhost": self.vhost, "queues": queues}


__all__ = ["WATCHED_QUEUES", "DeadLetterPanel"]
