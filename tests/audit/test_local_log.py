"""The local directory store and the appender writing to it: round trips, idempotency, receipts."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from mshale_fl.audit.appender import AuditAppender, LogIntegrityError
from mshale_fl.audit.checkpoint import open_checkpoint
from mshale_fl.audit.log import TransparencyLog, decode_bundle, encode_bundle
from mshale_fl.audit.merkle import MerkleTree, hash_leaf
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.receipts import Receipt, verify_receipt
from mshale_fl.audit.records import record_for_event
from mshale_fl.audit.stores.base import (
    ObjectExistsError,
    ObjectMissingError,
    StoreError,
)
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.verify import verify_log
from mshale_fl.schemas import new_event
from mshale_fl.schemas.payloads import AuditCheckpoint

from .audit_support import ORIGIN


def test_local_store_round_trip(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_immutable("entries/00000000000000000000", b"first")
    store.put_immutable("checkpoints/00000000000000000001", b"second")
    assert store.get("entries/00000000000000000000") == b"first"
    assert store.list_keys("entries/") == ["entries/00000000000000000000"]
    assert store.list_keys("") == ["checkpoints/00000000000000000001", "entries/00000000000000000000"]
    assert store.list_keys("nothing/") == []
    assert store.key_history("entries/") is None


def test_local_store_never_overwrites_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_immutable("a/b", b"original")
    with pytest.raises(ObjectExistsError):
        store.put_immutable("a/b", b"replacement")
    assert store.get("a/b") == b"original"
    assert sorted(os.listdir(tmp_path / "a")) == ["b"]
    assert not stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) & 0o222  # read-only


def test_local_store_refuses_keys_that_escape_or_are_missing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for key in ("../x", "a//b", "/abs", "a/./b", "sp ace", ""):
        with pytest.raises(StoreError):
            store.put_immutable(key, b"x")
    with pytest.raises(ObjectMissingError):
        store.get("absent")


def test_bundle_encoding_is_uint16_length_prefixed() -> None:
    records = [b"a", b"bc" * 300]
    data = encode_bundle(records)
    assert data[:3] == b"\x00\x01a" and data[3:5] == (600).to_bytes(2, "big")
    assert decode_bundle(data) == records
    with pytest.raises(ValueError):
        encode_bundle([b"x" * 65_536])


@pytest.fixture
def appender(tmp_path: Path, signer: NoteSigner) -> Any:
    with AuditAppender(LocalStore(tmp_path / "log"), signer, index_path=tmp_path / "index.sqlite3", max_bundle_entries=16) as writer:
        yield writer


def test_a_new_log_starts_with_a_signed_empty_checkpoint(appender: AuditAppender, signer: NoteSigner) -> None:
    checkpoint = open_checkpoint(appender.log.read_checkpoint(0), signer.verifier)
    assert checkpoint.size == 0 and appender.checkpoint == checkpoint


def test_append_batches_then_verify(appender: AuditAppender, signer: NoteSigner, make_events: Any) -> None:
    events = make_events(100)
    sizes = [appender.append_batch(events[start : start + 30]).size for start in range(0, 100, 30)]
    assert sizes == [30, 60, 90, 100]
    tree = MerkleTree(hash_leaf(record_for_event(event).to_bytes()) for event in events)
    assert appender.checkpoint.root == tree.root()
    assert TransparencyLog(appender.log.store).checkpoint_sizes() == [0, 30, 60, 90, 100]
    report = verify_log(appender.log.store, signer.verifier)
    assert report.ok and report.entries == 100 and report.checkpoints == 5, report.summary()


def test_reappending_is_idempotent_by_event_id(appender: AuditAppender, make_events: Any) -> None:
    events = make_events(20)
    first = appender.append_batch(events[:15])
    keys_before = appender.log.store.list_keys("")
    assert appender.append_batch(events[:15]) == first  # a full redelivery writes nothing
    assert appender.log.store.list_keys("") == keys_before
    mixed = appender.append_batch([events[3], events[15], events[15], events[7], events[16]])
    assert mixed.size == 17  # only the two new events, each once
    assert appender.position_of(events[15].event_id) == 15 and appender.position_of(events[16].event_id) == 16


def test_audit_checkpoint_events_are_not_logged(appender: AuditAppender, make_events: Any) -> None:
    checkpoint = appender.append_batch(make_events(3))
    announcement = new_event("audit.checkpoint", AuditCheckpoint(**checkpoint.to_payload().model_dump()), partner_id="mishale")
    assert appender.append_batch([announcement]) == checkpoint
    assert appender.position_of(announcement.event_id) is None


def test_receipts_verify_and_survive_json(appender: AuditAppender, signer: NoteSigner, make_events: Any) -> None:
    events = make_events(40)
    appender.append_batch(events[:25])
    appender.append_batch(events[25:])
    for event in (events[0], events[24], events[25], events[39]):
        receipt = Receipt.from_json(appender.receipt(event.event_id).to_json())
        record, checkpoint = verify_receipt(receipt, signer.verifier, event=event)
        assert record.event_id == str(event.event_id) and checkpoint.size == 40
    with pytest.raises(KeyError):
        appender.receipt(make_events(1)[0].event_id)


def test_reopening_with_or_without_the_index_gives_the_same_log(tmp_path: Path, signer: NoteSigner, make_events: Any) -> None:
    events = make_events(50)
    store = LocalStore(tmp_path / "log")
    with AuditAppender(store, signer, index_path=tmp_path / "index.sqlite3") as writer:
        writer.append_batch(events[:50])
        expected = writer.checkpoint
    for index_path in (tmp_path / "index.sqlite3", tmp_path / "new.sqlite3", None):
        with AuditAppender(store, signer, index_path=index_path) as reopened:
            assert reopened.checkpoint == expected and reopened.size == 50
            assert reopened.position_of(events[42].event_id) == 42
            assert reopened.append_batch(events).size == 50  # nothing new after a full redelivery


def test_a_log_that_contradicts_its_checkpoint_is_refused(tmp_path: Path, signer: NoteSigner, make_events: Any) -> None:
    store = LocalStore(tmp_path / "log")
    with AuditAppender(store, signer, index_path=None) as writer:
        writer.append_batch(make_events(5))
    bundle = store.root / "entries" / "00000000000000000000"
    bundle.chmod(0o644)
    bundle.write_bytes(encode_bundle(decode_bundle(bundle.read_bytes())[::-1]))
    with pytest.raises(LogIntegrityError, match="do not hash to the root signed at size 5"):
        AuditAppender(store, signer, index_path=None)


def test_an_appender_with_another_key_cannot_extend_the_log(tmp_path: Path, signer: NoteSigner, make_events: Any) -> None:
    store = LocalStore(tmp_path / "log")
    with AuditAppender(store, signer) as writer:
        writer.append_batch(make_events(2))
    with pytest.raises(LogIntegrityError, match="does not verify"):
        AuditAppender(store, NoteSigner.generate(ORIGIN))


def test_two_writers_never_fork_the_log(tmp_path: Path, signer: NoteSigner, make_events: Any) -> None:
    store = LocalStore(tmp_path / "log")
    events = make_events(30)
    first = AuditAppender(store, signer, index_path=tmp_path / "a.sqlite3")
    second = AuditAppender(store, signer, index_path=tmp_path / "b.sqlite3")
    first.append_batch(events[:10])
    # `second` still believes the log is empty: its write at position 0 loses, it re-reads and retries.
    assert second.append_batch(events[5:20]).size == 20
    assert first.append_batch(events[18:30]).size == 30
    for position, event in enumerate(events):
        assert first.position_of(event.event_id) == position
    first.close()
    second.close()
    assert verify_log(store, signer.verifier).ok
