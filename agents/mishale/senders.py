"""Who may publish Mishale's own facts: events only Mishale's services send must not come from a partner.

A partner's broker user may publish any routing key under its own prefix (`<partner>.*`), so
`<partner>.model.published` or `<partner>.submission.accepted` reach Mishale's queues. The sender
the broker verified (`user_id`) tells them apart: an event with no `user_id`, or one sent by a
partner's broker user, is refused as a permanent error (dead-lettered with `reason_code`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from mshale_fl.broker import PermanentError, current_delivery
from mshale_fl.ledger import get_partner
from mshale_fl.schemas.events import EventEnvelope


def refuse_partner_senders(event: EventEnvelope[Any], connection: Connection, reason_code: str) -> None:
    delivery = current_delivery()
    if delivery is None:  # called outside the consumer runtime (tests, tools): no transport facts
        return
    if not delivery.user_id:
        raise PermanentError(reason_code, f"{event.type} without a user_id: the broker did not verify its sender")
    if get_partner(connection, delivery.user_id, required=False) is not None:
        raise PermanentError(
            reason_code, f"{event.type} sent by partner {delivery.user_id!r}: only Mishale's services publish it"
        )


__all__ = ["refuse_partner_senders"]
