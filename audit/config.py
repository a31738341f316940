"""Audit settings (environment prefix `MSHALE_AUDIT_`) and opening the configured store.

Kept beside the audit code rather than in `mshale_fl.config` so the audit log can be configured
and tested on its own; the home directory still comes from the shared `MSHALE_HOME`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mshale_fl.audit.stores.base import ObjectStore
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.stores.s3 import S3Store, bucket_for_region
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from mshale_fl.audit.appender import AuditAppender

__all__ = ["AuditSettings", "open_appender", "open_store"]


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MSHALE_AUDIT_", extra="ignore")

    origin: str = Field(
        default="mshale.example/audit",
        pattern=r"^[\x21-\x2a\x2c-\x7e]{1,200}$",
        description="Log identity: the checkpoint origin line and the signing key name (no spaces, no '+')",
    )
    store: Literal["local", "s3"] = "local"
    local_dir: Path | None = Field(default=None, description="Local store directory; default <MSHALE_HOME>/audit/log")
    key_file: Path | None = Field(default=None, description="Signing key file; default <MSHALE_HOME>/audit/signing.key")
    verifier_key: str | None = Field(default=None, description="Verifier key to check the log with (auditors)")
    s3_bucket: str = Field(default="mshale-audit-{region}", description="Bucket name; '{region}' is filled in")
    s3_region: str = "eu-west-1"
    s3_prefix: str = "log/"
    s3_endpoint_url: str | None = None
    retention_days: int = Field(default=3650, ge=1, le=36500, description="Object Lock COMPLIANCE retention")
    max_bundle_entries: int = Field(default=1024, ge=1, le=65536)

    def home(self) -> Path:
        from mshale_fl.config import get_settings

        return get_settings().home

    def resolved_local_dir(self) -> Path:
        return self.local_dir or self.home() / "audit" / "log"

    def resolved_key_file(self) -> Path:
        return self.key_file or self.home() / "audit" / "signing.key"

    def index_path(self) -> Path:
        return self.home() / "audit" / f"index-{self.store}.sqlite3"


def open_store(settings: AuditSettings, *, create: bool = False) -> ObjectStore:
    """The configured store; with `create`, make the S3 bucket (Object Lock, COMPLIANCE) if missing."""
    if settings.store == "local":
        return LocalStore(settings.resolved_local_dir())
    store = S3Store(
        bucket_for_region(settings.s3_bucket, settings.s3_region),
        region=settings.s3_region,
        prefix=settings.s3_prefix,
        retention_days=settings.retention_days,
        endpoint_url=settings.s3_endpoint_url,
    )
    if create:
        store.ensure_bucket()
    return store


def open_appender(settings: AuditSettings | None = None) -> AuditAppender:
    """The appender the audit worker runs: configured store (bucket created if missing), the
    signing key from its file, the index under MSHALE_HOME. Raises `KeyFileError` without a key."""
    from mshale_fl.audit.appender import AuditAppender
    from mshale_fl.audit.keys import KeyFileError, load_signing_key

    settings = settings or AuditSettings()
    signer = load_signing_key(settings.resolved_key_file())
    if signer.name != settings.origin:
        # Checkpoints carry the origin and the key name; verifiers expect them to agree.
        raise KeyFileError(
            f"the signing key is named {signer.name!r} but MSHALE_AUDIT_ORIGIN is {settings.origin!r}"
        )
    return AuditAppender(
        open_store(settings, create=True),
        signer,
        index_path=settings.index_path(),
        max_bundle_entries=settings.max_bundle_entries,
    )
