"""`verify_log` finds every kind of damage and names the first bad position precisely."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.checkpoint import sign_checkpoint
from mshale_fl.audit.log import decode_bundle, encode_bundle
from mshale_fl.audit.merkle import hash_leaf
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.records import record_for_event
from mshale_fl.audit.verify import verify_log

from .audit_support import ORIGIN, MemoryStore, make_event

BUNDLE = "entries/{:020d}"
CHECKPOINT = "checkpoints/{:020d}"


@pytest.fixture(scope="module")
def signed_log() -> tuple[MemoryStore, NoteSigner]:
    """40 entries appended 10 at a time: bundles at 0, 10, 20, 30; checkpoints 0, 10, 20, 30, 40."""
    signer = NoteSigner.generate(ORIGIN)
    store = MemoryStore()
    events = [make_event(number) for number in range(40)]
    with AuditAppender(store, signer, max_bundle_entries=10) as appender:
        for start in range(0, 40, 10):
            appender.append_batch(events[start : start + 10])
    return store, signer


@pytest.fixture
def log(signed_log: tuple[MemoryStore, NoteSigner]) -> tuple[MemoryStore, NoteSigner]:
    store, signer = signed_log
    return store.copy(), signer


def records_of(store: MemoryStore, start: int) -> list[bytes]:
    return decode_bundle(store.get(BUNDLE.format(start)))


def rewrite(store: MemoryStore, start: int, records: list[bytes]) -> None:
    store.replace(BUNDLE.format(start), encode_bundle(records))


def kinds(report: Any) -> set[str]:
    return {problem.kind for problem in report.problems}


def test_an_intact_log_verifies(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    report = verify_log(store, signer.verifier)
    assert report.ok and not report.warnings
    assert (report.entries, report.checkpoints, report.verified_size, report.first_bad_position) == (40, 5, 40, None)


def test_an_altered_but_well_formed_record_fails_its_checkpoint_interval(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    records = records_of(store, 20)
    value = json.loads(records[3])
    value["payload_sha256"] = "f" * 64
    records[3] = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    rewrite(store, 20, records)
    report = verify_log(store, signer.verifier)
    assert kinds(report) == {"root_mismatch"}
    assert report.first_bad_position == 20 and report.verified_size == 20
    assert "entries [20, 30) do not hash to the root signed at size 30" in report.summary()


def test_a_malformed_record_is_named_by_its_entry_index(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    records = records_of(store, 20)
    records[3] = records[3].replace(b'"v":1', b'"v": 1')
    rewrite(store, 20, records)
    report = verify_log(store, signer.verifier)
    bad = [p for p in report.problems if p.kind == "bad_record"]
    assert [p.position for p in bad] == [23] and "record 3 of entries/00000000000000000020" in bad[0].message
    assert report.first_bad_position == 20  # the whole interval [20, 30) is no longer covered by a signature


def test_a_duplicated_event_is_reported_where_it_repeats(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    records = records_of(store, 30)
    records[4] = records_of(store, 0)[5]
    rewrite(store, 30, records)
    report = verify_log(store, signer.verifier)
    duplicate = [p for p in report.problems if p.kind == "duplicate_event"]
    assert [p.position for p in duplicate] == [34] and "already logged at entry 5" in duplicate[0].message


def test_a_missing_bundle_is_a_gap(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    store.remove(BUNDLE.format(10))
    report = verify_log(store, signer.verifier)
    assert "gap" in kinds(report) and "checkpoint_beyond_entries" in kinds(report)
    assert report.first_bad_position == 10 and report.verified_size == 10


def test_a_truncated_log_leaves_checkpoints_without_entries(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    store.remove(BUNDLE.format(30))
    report = verify_log(store, signer.verifier)
    assert kinds(report) == {"checkpoint_beyond_entries"}
    assert report.first_bad_position == 30 and report.verified_size == 30


def test_a_damaged_bundle_is_reported_at_its_start(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    store.replace(BUNDLE.format(10), store.get(BUNDLE.format(10))[:-7])
    report = verify_log(store, signer.verifier)
    assert "bad_bundle" in kinds(report) and report.first_bad_position == 10


def test_a_checkpoint_signed_by_another_key_is_rejected(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    forged = sign_checkpoint(NoteSigner.generate(ORIGIN), 30, hash_leaf(b"forged"))
    store.replace(CHECKPOINT.format(30), forged.note)
    report = verify_log(store, signer.verifier)
    assert kinds(report) == {"bad_checkpoint"} and report.first_bad_position == 30


def test_a_validly_signed_checkpoint_with_another_root_is_a_fork(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    store.replace(CHECKPOINT.format(30), sign_checkpoint(signer, 30, hash_leaf(b"other history")).note)
    report = verify_log(store, signer.verifier)
    assert kinds(report) == {"root_mismatch"} and report.first_bad_position == 20


def test_every_version_and_delete_marker_is_flagged(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    store.versions[BUNDLE.format(20)].append(store.get(BUNDLE.format(20)))  # same bytes, second version
    store.delete_markers[CHECKPOINT.format(10)] = 1
    report = verify_log(store, signer.verifier)
    assert {(p.kind, p.position) for p in report.problems} == {("overwritten", 20), ("delete_marker", 10)}


def test_stray_objects_are_reported(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    store.put_immutable("entries/latest", b"x")
    assert kinds(verify_log(store, signer.verifier)) == {"stray_key"}


def test_an_unsigned_tail_is_a_warning_not_a_failure(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    store.put_immutable(BUNDLE.format(40), encode_bundle([record_for_event(make_event(99)).to_bytes()]))
    report = verify_log(store, signer.verifier)
    assert report.ok and [(w.kind, w.position) for w in report.warnings] == [("unsigned_tail", 40)]


def test_an_empty_store_is_not_a_log(signer: NoteSigner) -> None:
    report = verify_log(MemoryStore(), signer.verifier)
    assert kinds(report) == {"no_checkpoint"}


def test_the_report_serialises_to_json(log: tuple[MemoryStore, NoteSigner]) -> None:
    store, signer = log
    store.remove(BUNDLE.format(30))
    data = json.loads(json.dumps(verify_log(store, signer.verifier).to_dict()))
    assert data["ok"] is False and data["first_bad_position"] == 30
    assert data["problems"][0]["kind"] == "checkpoint_beyond_entries"
