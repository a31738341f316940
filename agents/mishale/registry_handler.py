"""`model.published` -> the model registry: the version, its lineage, and who paid for it in privacy.

The training server announces each finished version with `model.published` (version, parent,
digest, rounds, metrics). The registry adds what the event cannot know by itself: which partners'
data trained it and the epsilon each spent, composed by the ledger's accountant from the committed
spends of the budgets (`privacy_spent_on`). It also keeps the event verbatim, so a download can be
checked against the event's record in the audit log.

Ordering: the event arrives on the predict queue while the ledger worker is still settling the
last round's reservations from `round.completed` on its own queue. `wait_until_settled` holds the
delivery (outside any transaction) until no reservation of the version is open, or until
`settle_wait_s` passes (an abandoned run can leave one open for good); then the version is
registered with the spends committed by then, and a warning says how many were still open.
Holding, rather than requeueing, keeps the event from being dead-lettered by the delivery limit.

Runs inside the inbox transaction, so a redelivered `model.published` registers nothing twice; the
registry itself refuses a second, different set of facts for a version (dead-lettered with reason).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine

from mshale_fl.access.registry import (
    ConflictingModelVersion,
    find_model_version,
    privacy_spent_on,
    record_publication,
    register_model_version,
    unsettled_spends,
)
from mshale_fl.broker import PermanentError
from mshale_fl.ledger.errors import UnknownPartner
from mshale_fl.logging import get_logger
from mshale_fl.agents.mishale.senders import refuse_partner_senders
from mshale_fl.schemas.events import EventEnvelope

log = get_logger(__name__)

__all__ = ["register_published_model", "wait_until_settled"]

POLL_INTERVAL = 0.25


def register_published_model(connection: Connection, event: EventEnvelope[Any]) -> Sequence[EventEnvelope[Any]]:
    """Record the version of a `model.published` event with its contributors; no output events.

    Only the training server announces models: a `<partner>.model.published` a partner published
    under its own prefix is dead-lettered (`registry.forged_sender`) and registers nothing.
    """
    refuse_partner_senders(event, connection, "registry.forged_sender")
    payload = event.payload
    contributors = privacy_spent_on(connection, payload.model_version)
    open_spends = unsettled_spends(connection, payload.model_version)
    try:
        model = register_model_version(connection, payload, contributors, published_at=event.occurred_at)
    except ConflictingModelVersion as error:
        raise PermanentError("registry.conflicting_version", str(error)) from error
    except UnknownPartner as error:
        raise PermanentError("registry.unknown_contributor", str(error)) from error
    record_publication(connection, event)
    log.info(
        "registry.model_registered",
        model_version=model.version,
        parent_version=model.parent_version,
        sha256=model.sha256,
        contributors={partner: round(spent.epsilon, 6) for partner, spent in sorted(model.contributors.items())},
        unsettled_spends=open_spends,
    )
    return []


async def wait_until_settled(engine: Engine, model_version: int, *, timeout: float) -> int:
    """Wait until no reservation of `model_version` is open (or `timeout` s pass); returns how many still are."""
    deadline = time.monotonic() + timeout
    while True:
        open_spends = await asyncio.to_thread(_count_open, engine, model_version)
        if open_spends == 0:
            return 0
        if time.monotonic() >= deadline:
            log.warning(
                "registry.spends_unsettled",
                model_version=model_version,
                open_reservations=open_spends,
                waited_s=timeout,
                effect="registered with the spends committed so far",
            )
            return open_spends
        await asyncio.sleep(POLL_INTERVAL)


def _count_open(engine: Engine, model_version: int) -> int:
    with engine.connect() as connection:
        if find_model_version(connection, model_version) is not None:
            return 0  # registered already (a redelivery): the inbox answers it, nothing to wait for
        return unsettled_spends(connection, model_version)
