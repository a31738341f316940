"""Where each panel of the console reads from, resolved once from the deployment's settings.

The console reads the same `MSHALE_*` / `MSHALE_AUDIT_*` environment as the workers, so pointing
it at a deployment is pointing it at that deployment's environment (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mshale_fl.audit.config import AuditSettings
from mshale_fl.config import Settings
from mshale_fl.ledger.broker_identity import vhost_from_amqp_url


@dataclass(frozen=True)
class ConsoleSources:
    home: Path
    """MSHALE_HOME: training runs live under `home/federation`."""
    ledger_url: str
    management_url: str
    management_user: str
    management_password: str
    vhost: str
    audit: AuditSettings

    @classmethod
    def from_settings(cls, settings: Settings, audit: AuditSettings | None = None) -> ConsoleSources:
        return cls(
            home=settings.home,
            ledger_url=settings.effective_ledger_url,
            management_url=settings.broker_management_url.rstrip("/"),
            management_user=settings.broker_management_user,
            management_password=settings.broker_management_password.get_secret_value(),
            vhost=vhost_from_amqp_url(settings.broker_url),
            audit=audit or AuditSettings(),
        )


__all__ = ["ConsoleSources"]
