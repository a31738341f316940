"""Everything the console shows, gathered into one JSON-ready dict (the page is rendered from it).

`/api/state` returns this dict as it is, so the page and the API can never disagree. Gathering is
serialised and a result younger than `min_interval` seconds is reused: a few browsers refreshing
at once cost one read of each source, not one each.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from mshale_fl.console.audit_panel import AuditPanel
from mshale_fl.console.dead_letter_panel import DeadLetterPanel
from mshale_fl.console.ledger_panels import LedgerReader, read_budgets, read_partners
from mshale_fl.console.panels import run_panel
from mshale_fl.console.sources import ConsoleSources
from mshale_fl.console.training_panel import read_training

STATE_FORMAT = "mshale-console-state/1"


class ConsoleState:
    def __init__(self, sources: ConsoleSources, *, refresh_seconds: int = 10, verify_every: float = 60.0,
                 min_interval: float = 1.0) -> None:
        self.sources = sources
        self.refresh_seconds = refresh_seconds
        self.min_interval = min_interval
        self.ledger = LedgerReader(sources.ledger_url)
        self.audit = AuditPanel(sources.audit, verify_every=verify_every)
        self.dead_letters = DeadLetterPanel(
            sources.management_url, sources.management_user, sources.management_password, sources.vhost
        )
        self._lock = threading.Lock()
        self._last: dict[str, Any] | None = None
        self._last_at = 0.0

    def collect(self) -> dict[str, Any]:
        with self._lock:
            if self._last is not None and time.monotonic() - self._last_at < self.min_interval:
                return self._last
            ledger = f"ledger {self.ledger.description}"
            state = {
                "format": STATE_FORMAT,
                "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "refresh_seconds": self.refresh_seconds,
                "partners": run_panel("partners", ledger, lambda: self.ledger.read(read_partners)),
                "training": run_panel(
                    "training", f"runs under {self.sources.home / 'federation'}", lambda: read_training(self.sources.home)
                ),
                "budgets": run_panel("privacy budgets", ledger, lambda: self.ledger.read(read_budgets)),
                "audit": run_panel("audit log", self.audit.source, self.audit.read),
                "dead_letters": run_panel("dead letters", self.dead_letters.source, self.dead_letters.read),
            }
            self._last, self._last_at = state, time.monotonic()
            return state

    def close(self) -> None:
        self.ledger.close()


__all__ = ["STATE_FORMAT", "ConsoleState"]
