"""S3 with Object Lock (COMPLIANCE) as a write-once object store: one bucket per region.

Why each setting:
- Object Lock in COMPLIANCE mode: no one, not even the account root, can delete or shorten the
  retention of a locked object version before its retain-until date. Every object is written
  with an explicit retain-until date (the configured retention) on top of the bucket default,
  so the protection does not depend on the bucket default staying in place.
- `IfNoneMatch='*'`: the write fails with 412 if the key already exists, so a second writer (or
  a bug) cannot replace an entry bundle or checkpoint. Object Lock alone would not prevent that:
  a versioned bucket happily stacks a new version on top of a locked one.
- Versioning (required by Object Lock) keeps every version, so an overwrite or a delete marker
  that got through (a delete without a version id always succeeds, then a conditional write
  succeeds again) stays visible. `key_history` reports them and `audit verify` flags them.

moto_server 5.2.5 (used by the tests) enforces the conditional write and refuses to delete a
locked version, but it lets COMPLIANCE retention be shortened, which real S3 refuses.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from mshale_fl.audit.stores.base import (
    KeyHistory,
    ObjectExistsError,
    ObjectMissingError,
    StoreError,
    check_key,
)

__all__ = ["S3Store", "bucket_for_region"]

_EXISTS_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def bucket_for_region(template: str, region: str) -> str:
    """The log's bucket in `region`: `template` with `{region}` filled in (one bucket per region)."""
    return template.format(region=region)


class S3Store:
    def __init__(
        self,
        bucket: str,
        *,
        region: str,
        prefix: str = "",
        retention_days: int | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if retention_days is not None and retention_days < 1:
            raise ValueError("retention must be at least one day")
        self.bucket = bucket
        self.region = region
        self.prefix = prefix
        self.retention_days = retention_days
        if client is None:
            import boto3

            client = boto3.client("s3", region_name=region, endpoint_url=endpoint_url)
        self.client = client

    @property
    def description(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    # -- set-up ------------------------------------------------------------------------------

    def ensure_bucket(self, retention_days: int | None = None) -> None:
        """Create the bucket with Object Lock and a COMPLIANCE default retention if it is missing.

        An existing bucket is checked instead: it must have Object Lock enabled with a
        COMPLIANCE default, or the store refuses to use it.
        """
        days = retention_days or self.retention_days
        if days is None:
            raise ValueError("a retention (days) is needed to create a WORM bucket")
        try:
            self.client.head_bucket(Bucket=self.bucket)
            exists = True
        except BotoCoreError as exc:
            raise StoreError(f"cannot reach bucket {self.bucket}: {exc}") from exc
        except ClientError as exc:
            if _code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                raise StoreError(f"cannot reach bucket {self.bucket}: {_message(exc)}") from exc
            exists = False
        if not exists:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "ObjectLockEnabledForBucket": True}
            if self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                self.client.create_bucket(**kwargs)
                self.client.put_object_lock_configuration(
                    Bucket=self.bucket,
                    ObjectLockConfiguration={
                        "ObjectLockEnabled": "Enabled",
                        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}},
                    },
                )
            except BotoCoreError as exc:
                raise StoreError(f"S3 request to {self.description} failed: {exc}") from exc
            except ClientError as exc:
                raise StoreError(f"cannot create WORM bucket {self.bucket}: {_message(exc)}") from exc
        self.check_bucket()

    def check_bucket(self) -> None:
        """Refuse a bucket that is not protected by Object Lock in COMPLIANCE mode."""
        try:
            config = self.client.get_object_lock_configuration(Bucket=self.bucket)["ObjectLockConfiguration"]
        except BotoCoreError as exc:
            raise StoreError(f"S3 request to {self.description} failed: {exc}") from exc
        except ClientError as exc:
            raise StoreError(f"bucket {self.bucket} has no Object Lock configuration: {_message(exc)}") from exc
        mode = config.get("Rule", {}).get("DefaultRetention", {}).get("Mode")
        if config.get("ObjectLockEnabled") != "Enabled" or mode != "COMPLIANCE":
            raise StoreError(f"bucket {self.bucket} must have Object Lock enabled with a COMPLIANCE default retention")

    # -- the store protocol ------------------------------------------------------------------

    def _key(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    def put_immutable(self, key: str, data: bytes) -> None:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "Body": data,
            "IfNoneMatch": "*",
            "ContentType": "application/octet-stream",
        }
        if self.retention_days is not None:
            kwargs["ObjectLockMode"] = "COMPLIANCE"
            kwargs["ObjectLockRetainUntilDate"] = (datetime.now(UTC) + timedelta(days=self.retention_days)).replace(
                microsecond=0
            )
        try:
            self.client.put_object(**kwargs)
        except BotoCoreError as exc:
            raise StoreError(f"S3 request to {self.description} failed: {exc}") from exc
        except ClientError as exc:
            if _code(exc) in _EXISTS_CODES:
                raise ObjectExistsError(key) from None
            raise StoreError(f"cannot write {self.description}{key}: {_message(exc)}") from exc

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read()
        except BotoCoreError as exc:
            raise StoreError(f"S3 request to {self.description} failed: {exc}") from exc
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                raise ObjectMissingError(key) from None
            raise StoreError(f"cannot read {self.description}{key}: {_message(exc)}") from exc

    def list_keys(self, prefix: str) -> list[str]:
        keys = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        except BotoCoreError as exc:
            raise StoreError(f"S3 request to {self.description} failed: {exc}") from exc
        except ClientError as exc:
            raise StoreError(f"cannot list {self.description}{prefix}: {_message(exc)}") from exc
        keys.sort()
        return keys

    def key_history(self, prefix: str) -> list[KeyHistory]:
        versions: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
        markers: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
        try:
            paginator = self.client.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Versions", []):
                    versions[item["Key"][len(self.prefix) :]].append((item["LastModified"], item["VersionId"]))
                for item in page.get("DeleteMarkers", []):
                    markers[item["Key"][len(self.prefix) :]].append((item["LastModified"], item["VersionId"]))
        except BotoCoreError as exc:
            raise StoreError(f"S3 request to {self.description} failed: {exc}") from exc
        except ClientError as exc:
            raise StoreError(f"cannot list versions of {self.description}{prefix}: {_message(exc)}") from exc
        return [
            KeyHistory(
                key=key,
                versions=tuple(v for _, v in sorted(versions.get(key, []))),
                delete_markers=tuple(v for _, v in sorted(markers.get(key, []))),
            )
            for key in sorted(set(versions) | set(markers))
        ]

    def lock_status(self, key: str) -> tuple[str | None, datetime | None]:
        """(Object Lock mode, retain-until date) of the current version of `key`."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except BotoCoreError as exc:
            raise StoreError(f"S3 request to {self.description} failed: {exc}") from exc
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                raise ObjectMissingError(key) from None
            raise StoreError(f"cannot read {self.description}{key}: {_message(exc)}") from exc
        return head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: Any) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'error')}: {error.get('Message', str(exc))}"
