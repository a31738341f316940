"""Settings, read from the environment with the `MSHALE_` prefix (pydantic-settings).

One object for every process: partners and Mishale workers read the same names so that a
deployment is configured the same way everywhere (`MSHALE_BROKER_URL=... mshale-fl worker ledger`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MSHALE_", extra="ignore")

    home: Path = Field(default=Path(".mshale"), description="Local state: ledger, audit store, keys")
    broker_url: str = Field(default="amqp://guest:guest@localhost:5672/", description="AMQP URL of RabbitMQ")
    broker_management_url: str = Field(
        default="http://localhost:15672", description="RabbitMQ management API (partner users, permissions)"
    )
    broker_management_user: str = "guest"
    broker_management_password: SecretStr = SecretStr("guest")
    ledger_url: str | None = Field(default=None, description="SQLAlchemy URL; default a SQLite file in home")
    api_key: SecretStr | None = Field(default=None, description="A partner's API key")
    partner_id: str | None = None
    prefetch: int = Field(default=64, ge=1, le=10_000)
    publish_window: int = Field(default=256, ge=1, le=100_000, description="Unconfirmed publishes in flight")
    delivery_limit: int = Field(default=5, ge=1, le=1_000)
    stream_max_age: str = Field(
        default="365D", pattern=r"^[0-9]+[YMDhms]$", description="Retention of mshale.events.log (x-max-age)"
    )
    stream_max_length_bytes: int = Field(default=50 * 1024**3, ge=1, description="Size cap of mshale.events.log")
    log_level: str = "INFO"

    @property
    def effective_ledger_url(self) -> str:
        return self.ledger_url or f"sqlite:///{(self.home / 'ledger.sqlite3').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
