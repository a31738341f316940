"""The S3 store against a real S3 API over HTTP (moto_server): WORM bucket, conditional writes,
locked versions, and overwrites that `audit verify` flags."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.stores.base import (
    ObjectExistsError,
    ObjectMissingError,
    StoreError,
)
from mshale_fl.audit.stores.s3 import S3Store, bucket_for_region
from mshale_fl.audit.verify import verify_log

from .audit_support import S3_REGION


def test_the_bucket_is_worm_with_compliance_retention(worm_store: S3Store, s3_client: Any) -> None:
    config = s3_client.get_object_lock_configuration(Bucket=worm_store.bucket)["ObjectLockConfiguration"]
    assert config["ObjectLockEnabled"] == "Enabled"
    retention = config["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"], retention.get("Years", 0)) == ("COMPLIANCE", 1, 0)
    assert s3_client.get_bucket_versioning(Bucket=worm_store.bucket)["Status"] == "Enabled"


def test_objects_are_written_locked_in_compliance_mode(worm_store: S3Store) -> None:
    worm_store.put_immutable("entries/00000000000000000000", b"record")
    mode, until = worm_store.lock_status("entries/00000000000000000000")
    assert mode == "COMPLIANCE"
    assert until is not None and timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(days=1, minutes=1)


def test_this_server_enforces_conditional_writes(worm_store: S3Store, s3_client: Any) -> None:
    """moto_server 5.2.5 answers IfNoneMatch='*' on an existing key with 412, like S3 does."""
    worm_store.put_immutable("checkpoints/00000000000000000001", b"first")
    with pytest.raises(ObjectExistsError):
        worm_store.put_immutable("checkpoints/00000000000000000001", b"second")
    assert worm_store.get("checkpoints/00000000000000000001") == b"first"
    versions = s3_client.list_object_versions(Bucket=worm_store.bucket, Prefix="log/checkpoints/")["Versions"]
    assert len(versions) == 1


def test_round_trip_listing_and_missing_keys(worm_store: S3Store) -> None:
    for key in ("entries/00000000000000000010", "entries/00000000000000000000", "checkpoints/00000000000000000000"):
        worm_store.put_immutable(key, key.encode())
    assert worm_store.list_keys("entries/") == ["entries/00000000000000000000", "entries/00000000000000000010"]
    assert worm_store.get("entries/00000000000000000010") == b"entries/00000000000000000010"
    with pytest.raises(ObjectMissingError):
        worm_store.get("entries/00000000000000000020")


def test_append_and_verify_on_s3(worm_store: S3Store, signer: NoteSigner, make_events: Any) -> None:
    events = make_events(60)
    with AuditAppender(worm_store, signer, max_bundle_entries=16) as appender:
        for start in range(0, 60, 25):
            appender.append_batch(events[start : start + 25])
        assert appender.append_batch(events).size == 60  # redelivery: nothing new
    report = verify_log(worm_store, signer.verifier)
    assert report.ok and not report.warnings, report.summary()
    assert (report.entries, report.checkpoints) == (60, 4)
    assert all(not item.tampered for item in worm_store.key_history(""))


@pytest.fixture
def s3_log(worm_store: S3Store, signer: NoteSigner, make_events: Any) -> S3Store:
    with AuditAppender(worm_store, signer, max_bundle_entries=10) as appender:
        appender.append_batch(make_events(20))
    return worm_store


def test_a_locked_version_cannot_be_deleted(s3_log: S3Store, s3_client: Any, signer: NoteSigner) -> None:
    key = "log/entries/00000000000000000010"
    version = s3_client.head_object(Bucket=s3_log.bucket, Key=key)["VersionId"]
    with pytest.raises(ClientError) as refused:
        s3_client.delete_object(Bucket=s3_log.bucket, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert s3_log.get("entries/00000000000000000010")
    assert verify_log(s3_log, signer.verifier).ok


def test_an_overwrite_is_flagged_by_verify(s3_log: S3Store, s3_client: Any, signer: NoteSigner) -> None:
    # Someone with write access bypasses the store and writes the same key again, without IfNoneMatch.
    key = "log/entries/00000000000000000010"
    original = s3_log.get("entries/00000000000000000010")
    s3_client.put_object(Bucket=s3_log.bucket, Key=key, Body=original)  # even the same bytes
    report = verify_log(s3_log, signer.verifier)
    assert not report.ok
    assert [(p.kind, p.position, p.key) for p in report.problems] == [("overwritten", 10, "entries/00000000000000000010")]
    assert "has 2 versions" in report.problems[0].message


def test_a_delete_marker_and_a_rewrite_are_flagged(s3_log: S3Store, s3_client: Any, signer: NoteSigner) -> None:
    key = "log/checkpoints/00000000000000000020"
    s3_client.delete_object(Bucket=s3_log.bucket, Key=key)  # no version id: S3 adds a delete marker
    s3_client.put_object(Bucket=s3_log.bucket, Key=key, Body=b"forged", IfNoneMatch="*")  # key "absent" again
    report = verify_log(s3_log, signer.verifier)
    found = {(p.kind, p.position) for p in report.problems}
    assert {("overwritten", 20), ("delete_marker", 20), ("bad_checkpoint", 20)} <= found
    # The original locked version is still there to be restored.
    versions = s3_client.list_object_versions(Bucket=s3_log.bucket, Prefix=key)["Versions"]
    assert len(versions) == 2


@pytest.mark.xfail(
    strict=True,
    reason="moto_server 5.2.5 lets COMPLIANCE retention be shortened (and then the version deleted); "
    "real S3 refuses both with AccessDenied",
)
def test_compliance_retention_cannot_be_shortened(s3_log: S3Store, s3_client: Any) -> None:
    key = "log/entries/00000000000000000000"
    earlier = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    with pytest.raises(ClientError):
        s3_client.put_object_retention(
            Bucket=s3_log.bucket, Key=key, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": earlier}
        )


def test_a_bucket_without_object_lock_is_refused(s3_client: Any) -> None:
    bucket = f"plain-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": S3_REGION})
    store = S3Store(bucket, region=S3_REGION, retention_days=1, client=s3_client)
    with pytest.raises(StoreError, match="Object Lock"):
        store.ensure_bucket()


def test_one_bucket_per_region() -> None:
    assert bucket_for_region("mshale-audit-{region}", "eu-west-1") == "mshale-audit-eu-west-1"
    assert bucket_for_region("mshale-audit-{region}", "af-south-1") == "mshale-audit-af-south-1"


def test_an_unreachable_endpoint_is_a_store_error() -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name=S3_REGION,
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(StoreError, match="failed"):
        S3Store("nowhere", region=S3_REGION, client=client).get("entries/00000000000000000000")
