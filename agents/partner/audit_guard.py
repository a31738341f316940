"""The agent's watch over Mishale's audit log: receipts for its submissions, and a witness that refuses forks.

Partners cannot read `audit.checkpoint` announcements (their broker user reads only its own
routing keys), so the agent sees checkpoints the way `audit/receipt_rpc.py` provides them: it asks
for the inclusion receipt of one of its own events, with the size of the last checkpoint it
accepted, and gets the latest signed checkpoint with a consistency proof from that size.
`ReceiptClient` verifies the signature, the inclusion proof and the record, then hands the
checkpoint to the `CheckpointWitness` (`<state>/witness.note`), which accepts only an extension of
the tree it saw last.

- After each step, the receipts of the events just published are fetched and kept in
  `<state>/receipts/<event id>.json` (the partner's own proof that its contribution is logged).
  An event not logged yet (the audit worker is behind or down) stays pending and is asked again.
- Every `check_seconds`, the newest logged event's receipt is fetched again: the witness follows
  the log even when the partner sends nothing.
- A checkpoint that does not extend the last one (`ForkError`) or goes back (`RollbackError`)
  raises `AuditFork`; the daemon halts everything that leaves the partner (see daemon.py).

Without `[audit] verifier_key` nothing is checked (the daemon logs that once at start).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mshale_fl.agents.partner.agent_state import RECEIPTS_FOLDER, WITNESS_FILE, AgentState, utc_now
from mshale_fl.agents.partner.submit import partner_broker_url
from mshale_fl.audit.note import NoteVerifier
from mshale_fl.audit.receipt_rpc import ReceiptClient, ReceiptUnavailable
from mshale_fl.audit.receipts import ReceiptError
from mshale_fl.audit.witness import CheckpointWitness, ForkError, RollbackError, WitnessError
from mshale_fl.broker import connect
from mshale_fl.broker.errors import BrokerError
from mshale_fl.errors import UserFacingError
from mshale_fl.fileio import write_atomic
from mshale_fl.logging import get_logger

log = get_logger(__name__)


class AuditFork(Exception):
    """Mishale's log was rewritten, forked or rolled back: the partner's witness refused its checkpoint."""


class WitnessStateError(UserFacingError):
    """The stored witness does not verify with the configured verifier key."""


@dataclass(frozen=True)
class Pending:
    event_id: uuid.UUID
    event: Any = None
    """The event as published (its record bytes are checked too); None after a restart."""


class AuditGuard:
    def __init__(self, state_dir: Path, verifier: NoteVerifier, *, partner_id: str, broker_url: str, api_key: str,
                 receipt_wait: float) -> None:  # fmt: skip
        self.partner_id = partner_id
        self.receipts_dir = state_dir / RECEIPTS_FOLDER
        self.receipt_wait = receipt_wait
        self._url = partner_broker_url(broker_url, partner_id, api_key)
        try:
            self.witness = CheckpointWitness(state_dir / WITNESS_FILE, verifier)
        except WitnessError as error:
            raise WitnessStateError(
                f"{error}; if Mishale changed its log key on purpose, move {state_dir / WITNESS_FILE} away "
                "(the agent then trusts the next checkpoint it sees), otherwise keep it and ask Mishale"
            ) from None

    async def verify(self, state: AgentState, pending: list[Pending]) -> int:
        """Fetch and check the receipts of `pending` events; returns how many verified.

        Updates `state.audit` and the files' `audit` field. Raises `AuditFork`; a broker or audit
        worker that cannot answer leaves the events pending.
        """
        if not pending:
            return 0
        try:
            connection = await connect(self._url, name=f"mshale-fl agent {self.partner_id} audit", robust=False)
        except BrokerError as error:
            log.warning("agent.audit_unreachable", error=str(error)[:300])
            return 0
        client = ReceiptClient(connection, partner_id=self.partner_id, witness=self.witness)
        verified = 0
        try:
            for item in pending:
                outcome = await self._one(client, state, item)
                if outcome is None:
                    break  # the audit worker is behind or away: the rest would wait just as long
                verified += outcome
        finally:
            await client.close()
            try:
                await connection.close()
            except Exception as error:  # the broker closed it first
                log.debug("agent.audit_close_failed", error=repr(error))
        return verified

    async def _one(self, client: ReceiptClient, state: AgentState, item: Pending) -> bool | None:
        """True verified, False refused (logged), None unavailable for now."""
        try:
            verified = await client.fetch_receipt(item.event_id, event=item.event, wait=self.receipt_wait)
        except (ForkError, RollbackError) as error:
            raise AuditFork(str(error)) from None
        except ReceiptUnavailable as error:
            log.info("agent.audit_receipt_unavailable", event_id=str(item.event_id), detail=str(error)[:300])
            return None
        except (ReceiptError, WitnessError) as error:
            # Not proof of a fork, but a receipt that does not prove what it claims: say so loudly.
            log.error("agent.audit_receipt_invalid", event_id=str(item.event_id), error=str(error)[:500])
            state.audit["invalid_receipts"] = int(state.audit.get("invalid_receipts", 0)) + 1
            return False
        except BrokerError as error:
            log.warning("agent.audit_unreachable", error=str(error)[:300])
            return None
        write_atomic(self.receipts_dir / f"{item.event_id}.json", verified.receipt.to_json() + "\n")
        checkpoint = verified.checkpoint
        advanced = state.audit.get("checkpoint_size") != (self.witness.latest.size if self.witness.latest else None)
        state.audit.update({
            "checkpoint_size": self.witness.latest.size if self.witness.latest else checkpoint.size,
            "checkpoint_root": self.witness.latest.root_hex if self.witness.latest else checkpoint.root_hex,
            "checked_at": utc_now(),
            "last_event_id": str(item.event_id),
        })  # fmt: skip
        pending_ids = [e for e in state.audit.get("pending", []) if e != str(item.event_id)]
        state.audit["pending"] = pending_ids
        for record in state.files.values():
            if record.submission_id == str(item.event_id):
                record.audit = "verified"
        (log.info if advanced or item.event is not None else log.debug)(
            "agent.audit_verified", event_id=str(item.event_id), index=verified.receipt.index,
            checkpoint_size=state.audit["checkpoint_size"],
        )  # fmt: skip
        return True

    def due(self, state: AgentState) -> list[Pending]:
        """What a periodic check asks for: every pending event, else the newest verified one (to follow the log)."""
        pending = [Pending(uuid.UUID(event_id)) for event_id in state.audit.get("pending", [])]
        if pending:
            return pending
        last = state.audit.get("last_event_id")
        return [Pending(uuid.UUID(last))] if last else []


__all__ = ["AuditFork", "AuditGuard", "Pending", "WitnessStateError"]
