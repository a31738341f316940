"""Access settings (environment prefix `MSHALE_ACCESS_`): the policy's knobs and where model files are.

Kept beside the access code, like the audit log's settings, so the policy can be configured and
tested on its own; the home directory still comes from the shared `MSHALE_HOME`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import MappingProxyType

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mshale_fl.access.policy import AccessPolicy

__all__ = ["AccessSettings"]


class AccessSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MSHALE_ACCESS_", extra="ignore")

    lapse_days: int = Field(
        default=90, ge=1, le=36_500, description="Access lapses this many days after the last qualifying contribution"
    )
    quota_tier1: int = Field(default=100, ge=0, description="Predictions per UTC day for a Tier 1 partner")
    quota_tier2: int = Field(default=10_000, ge=0, description="Predictions per UTC day for a Tier 2 partner")
    quota_tier3: int = Field(default=10_000, ge=0, description="Predictions per UTC day for a Tier 3 partner")
    models_dir: Path | None = Field(
        default=None, description="Where the training server publishes model files; default <MSHALE_HOME>/models"
    )
    max_request_age_s: float = Field(
        default=600.0,
        gt=0,
        description="A prediction request older than this (by the partner's clock) is refused uncharged (request.stale)",
    )
    settle_wait_s: float = Field(
        default=300.0, ge=0, description="How long the registry waits for a version's privacy spends to be settled"
    )
    chunk_bytes: int = Field(default=256 * 1024, ge=1024, le=8 * 1024 * 1024, description="Model download chunk size")

    def policy(self) -> AccessPolicy:
        return AccessPolicy(
            lapse_after=timedelta(days=self.lapse_days),
            daily_items=MappingProxyType({1: self.quota_tier1, 2: self.quota_tier2, 3: self.quota_tier3}),
        )

    def resolved_models_dir(self, home: Path) -> Path:
        return self.models_dir or home / "models"
