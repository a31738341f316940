"""Write-once object stores for the audit log: a local directory and S3 with Object Lock."""

from mshale_fl.audit.stores.base import (
    KeyHistory,
    ObjectExistsError,
    ObjectMissingError,
    ObjectStore,
    StoreError,
)
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.stores.s3 import S3Store, bucket_for_region

__all__ = [
    "KeyHistory",
    "LocalStore",
    "ObjectExistsError",
    "ObjectMissingError",
    "ObjectStore",
    "S3Store",
    "StoreError",
    "bucket_for_region",
]
