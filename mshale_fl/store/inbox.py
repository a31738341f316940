"""The inbox: which events each consumer has already applied, committed with the effect itself.

Delivery is at least once, so a consumer may see an event twice. Applying the effect and
inserting the (consumer, event_id) row in one transaction makes the effect happen exactly once:
the second delivery finds the row and only re-publishes the outputs recorded the first time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError

from mshale_fl.schemas.events import EventEnvelope, parse_event
from mshale_fl.store.schema import inbox

Effect = Callable[[Connection], Sequence[EventEnvelope[Any]]]


class SqlInbox:
    """Inbox in the store's `inbox` table; `apply_once` runs an effect at most once per event."""

    def __init__(self, engine: Engine, consumer: str) -> None:
        self.engine = engine
        self.consumer = consumer

    def apply_once(self, event_id: UUID, effect: Effect) -> tuple[bool, list[EventEnvelope[Any]]]:
        """Run `effect` in a transaction with the inbox row.

        Returns (applied_now, outputs): outputs are the events the effect produced, either now
        or, for a redelivery, the ones recorded when it was first applied.
        """
        try:
            return self._apply_once(str(event_id), effect)
        except IntegrityError:
            # A concurrent delivery committed first; its transaction holds the effect, ours
            # rolled back whole. Read what it recorded.
            return self._apply_once(str(event_id), effect)

    def _apply_once(self, key: str, effect: Effect) -> tuple[bool, list[EventEnvelope[Any]]]:
        with self.engine.begin() as connection:
            recorded = connection.execute(
                select(inbox.c.outputs).where(inbox.c.consumer == self.consumer, inbox.c.event_id == key)
            ).scalar_one_or_none()
            if recorded is not None:
                return False, [parse_event(json.dumps(item)) for item in json.loads(recorded)]
            outputs = list(effect(connection))
            connection.execute(
                insert(inbox).values(
                    consumer=self.consumer,
                    event_id=key,
                    applied_at=datetime.now(UTC),
                    outputs=json.dumps([item.model_dump(mode="json") for item in outputs]),
                )
            )
        return True, outputs

    def applied_count(self) -> int:
        with self.engine.connect() as connection:
            return len(connection.execute(select(inbox.c.event_id).where(inbox.c.consumer == self.consumer)).all())
