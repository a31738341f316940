"""The partners panel and the privacy-budget panel, read from the ledger without writing to it.

The console never opens the ledger the way workers do (`open_ledger` migrates; the store engine
sets WAL mode and takes SQLite's write lock at every BEGIN): a page refreshed every few seconds
must not contend with the ledger worker for the lock. SQLite is opened with `mode=ro`, PostgreSQL
with read-only transactions, and a ledger that does not exist yet is reported, not created.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from mshale_fl.console.panels import SourceUnavailable
from mshale_fl.ledger._sql import now_utc, utc_date
from mshale_fl.ledger.agreements import list_agreements
from mshale_fl.ledger.budgets import LOW_FRACTION, list_budgets
from mshale_fl.ledger.partners import list_partners


def describe_url(url: str) -> str:
    """The ledger URL as it may be shown on a page (password hidden)."""
    return make_url(url).render_as_string(hide_password=True)


class LedgerReader:
    """A read-only engine on the ledger, created when the ledger first exists."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.description = describe_url(url)
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def _create_engine(self) -> Engine:
        parsed = make_url(self.url)
        if parsed.get_backend_name() != "sqlite":
            return create_engine(
                self.url,
                pool_pre_ping=True,
                pool_size=1,
                max_overflow=2,
                execution_options={"postgresql_readonly": True},
            )
        if not parsed.database or parsed.database == ":memory:":
            raise SourceUnavailable(f"{self.description} is not a ledger file the console can read")
        path = Path(parsed.database).resolve()
        if not path.is_file():
            raise SourceUnavailable(
                f"no ledger database at {path} (set MSHALE_HOME or MSHALE_LEDGER_URL to the deployment's; "
                "the ledger worker or `mshale-fl partners add` creates it)"
            )
        uri = f"file:{quote(str(path))}?mode=ro"
        return create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False),
        )

    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = self._create_engine()
            return self._engine

    def read(self, reader: Any) -> Any:
        """Run `reader(connection)` in one read-only transaction; database failures become `SourceUnavailable`."""
        try:
            with self.engine().connect() as connection:
                return reader(connection)
        except DBAPIError as error:
            text = str(error.orig)
            if "no such table" in text or ("relation" in text and "does not exist" in text):
                raise SourceUnavailable(
                    f"the ledger at {self.description} has no tables yet (the ledger worker or "
                    "`mshale-fl partners add` creates them)"
                ) from None
            raise SourceUnavailable(f"cannot read the ledger at {self.description}: {text.strip()}") from None
        except SQLAlchemyError as error:
            raise SourceUnavailable(f"cannot read the ledger at {self.description}: {error}") from None

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


def read_partners(connection: Connection) -> dict[str, Any]:
    today = utc_date(now_utc())
    rows = []
    for partner in list_partners(connection):
        agreements = [
            {**agreement.as_dict(), "active": agreement.active_on(today)}
            for agreement in list_agreements(connection, partner.id)
        ]
        rows.append(
            {
                "id": partner.id,
                "display_name": partner.display_name,
                "tier": partner.tier,
                "academic": partner.academic,
                "status": partner.status,
                "created_at": partner.created_at.isoformat(),
                "agreements": agreements,
            }
        )
    return {"partners": rows}


def read_budgets(connection: Connection) -> dict[str, Any]:
    """Every opened budget, and each active Tier 3 partner that has none yet (it opens at its first round)."""
    budgets: list[dict[str, Any]] = []
    unopened: list[dict[str, Any]] = []
    for partner in list_partners(connection):
        statuses = list_budgets(connection, partner.id)
        for status in statuses:
            budgets.append(
                {
                    "partner_id": partner.id,
                    "partner_status": partner.status,
                    "model_version": status.model_version,
                    "dataset_id": status.dataset_id,
                    "epsilon_total": status.epsilon_total,
                    "epsilon_spent": status.epsilon_spent,
                    "epsilon_committed": status.epsilon_committed,
                    "epsilon_remaining": status.epsilon_remaining,
                    "fraction_remaining": status.fraction_remaining,
                    "delta": status.delta,
                    "state": status.state,
                    "pause_reason": status.pause_reason,
                    "below_pause_line": status.fraction_remaining < LOW_FRACTION,
                    "rounds_committed": sum(1 for spend in status.spends if spend.status == "committed"),
                    "rounds_reserved": sum(1 for spend in status.spends if spend.status == "reserved"),
                }
            )
        if not statuses and partner.tier == 3 and partner.active:
            unopened.append({"partner_id": partner.id, "epsilon_per_model_version": partner.epsilon_per_model_version})
    return {"pause_fraction": LOW_FRACTION, "budgets": budgets, "unopened": unopened}


__all__ = ["LedgerReader", "describe_url", "read_budgets", "read_partners"]
