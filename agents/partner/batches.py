"""Tier 2 batches: which vectors travel together in one `vectors.submitted` event, and that event's id.

A batch holds the vectors of one sensitivity label (the payload has one `sensitivity`), at most
`batch_size` of them (the contract allows 1000). Its event id is derived from its content
(`batch_event_id`: uuid5 of the partner id and the SHA-256 of the canonical payload), so submitting
the same folder again publishes the same events, which Mishale's inbox applies once: no duplicate
contributions.

Where batches are cut is content-defined, not positional. Vectors are sorted by their spec hash
(an HMAC, so uniformly spread) and a batch ends after a vector whose hash's last 32 bits are a
multiple of `batch_size // 2`, or when it is full. A protocol added to or removed from the corpus
therefore changes only the batch it falls in (and, rarely, the next one when that batch was cut
for being full); with positional cuts every batch after it would change, and the ledger, which
counts the vectors of each accepted batch, would count all of them again. Batches hold about
`0.43 x batch_size` vectors on average (expected run `batch_size / 2`, capped at `batch_size`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from typing import TypeVar

from mshale_fl.agents.partner.extract.output import canonical_json
from mshale_fl.schemas.payloads import VectorsSubmitted

BATCH_NAMESPACE = uuid.UUID("3d6a9e1c-7b42-5f08-b1c3-5a9e0d4f6c21")
"""Fixed forever: changing it would make every resubmitted batch look new."""

MAX_BATCH_SIZE = 1000
"""`VectorsSubmitted.vectors` holds at most this many (the contract)."""
DEFAULT_BATCH_SIZE = 500

T = TypeVar("T")


def check_batch_size(batch_size: int) -> int:
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_SIZE} vectors, not {batch_size}")
    return batch_size


def batch_event_id(partner_id: str, payload: VectorsSubmitted) -> uuid.UUID:
    """The event id of a batch: the same for the same partner and the same payload, every time."""
    digest = hashlib.sha256(canonical_json(payload.model_dump(mode="json"))).hexdigest()
    return uuid.uuid5(BATCH_NAMESPACE, f"{partner_id}/2/{digest}")


def content_defined_batches(items: Sequence[T], key: Callable[[T], str], batch_size: int) -> list[list[T]]:
    """`items` sorted by `key` (a lower-case hex digest) and cut into batches as the module docstring says."""
    check_batch_size(batch_size)
    modulus = max(1, batch_size // 2)
    batches: list[list[T]] = []
    current: list[T] = []
    for item in sorted(items, key=key):
        current.append(item)
        if len(current) == batch_size or int(key(item)[-8:], 16) % modulus == 0:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return batches
