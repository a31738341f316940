"""Property tests: every kind of tampering, at any position, is detected.

Flipping any byte of a record, a proof or a signature; dropping, reordering or truncating
entries; forking the log at any point; rolling its size back. Each is checked where it has to
be caught: by `verify_log` (the auditor), by `verify_receipt` / `verify_inclusion` (a partner
holding a receipt), or by `CheckpointWitness` (a partner watching checkpoints).
"""

from __future__ import annotations

from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.checkpoint import CheckpointError, open_checkpoint, sign_checkpoint
from mshale_fl.audit.log import encode_bundle
from mshale_fl.audit.merkle import (
    MerkleTree,
    ProofError,
    hash_leaf,
    verify_consistency,
    verify_inclusion,
)
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.receipts import Receipt, ReceiptError, verify_receipt
from mshale_fl.audit.records import record_for_event
from mshale_fl.audit.verify import verify_log
from mshale_fl.audit.witness import (
    CheckpointWitness,
    ForkError,
    RollbackError,
    WitnessError,
)

from .audit_support import ORIGIN, MemoryStore, make_event

SIZE = 64
BATCH = 7
BUNDLE = 5
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class SignedLog:
    def __init__(self) -> None:
        self.signer = NoteSigner.generate(ORIGIN)
        self.events = [make_event(number) for number in range(SIZE)]
        self.records = [record_for_event(event).to_bytes() for event in self.events]
        self.store = MemoryStore()
        with AuditAppender(self.store, self.signer, max_bundle_entries=BUNDLE) as appender:
            for start in range(0, SIZE, BATCH):
                appender.append_batch(self.events[start : start + BATCH])
            self.receipts = [appender.receipt(event.event_id) for event in self.events]
        self.tree = MerkleTree(hash_leaf(record) for record in self.records)

    def relaid(self, records: list[bytes]) -> MemoryStore:
        """A copy of the store whose entries are replaced by `records`, laid out like the original."""
        store = self.store.copy()
        for key in store.list_keys("entries/"):
            store.remove(key)
        for start in range(0, len(records), BUNDLE):
            store.put_immutable(f"entries/{start:020d}", encode_bundle(records[start : start + BUNDLE]))
        return store


@pytest.fixture(scope="module")
def signed_log() -> SignedLog:
    return SignedLog()


def flip(data: bytes, position: int, mask: int) -> bytes:
    position %= len(data)
    return data[:position] + bytes([data[position] ^ mask]) + data[position + 1 :]


masks = st.integers(1, 255)


def assert_detected_at_or_before(store: MemoryStore, log: SignedLog, position: int) -> None:
    report = verify_log(store, log.signer.verifier)
    assert not report.ok, f"tampering at entry {position} went unnoticed"
    assert report.first_bad_position is not None and report.first_bad_position <= position
    assert report.verified_size <= position  # the trusted prefix never includes the tampered entry


# -- records ----------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(index=st.integers(0, SIZE - 1), offset=st.integers(0, 10_000), mask=masks)
def test_flipping_any_byte_of_a_record_is_detected(signed_log: SignedLog, index: int, offset: int, mask: int) -> None:
    records = list(signed_log.records)
    records[index] = flip(records[index], offset, mask)
    assert_detected_at_or_before(signed_log.relaid(records), signed_log, index)
    # ... and a partner's receipt for that entry no longer proves the altered record.
    receipt = signed_log.receipts[index]
    altered = Receipt(records[index], receipt.index, receipt.tree_size, receipt.proof, receipt.checkpoint)
    with pytest.raises(ReceiptError):
        verify_receipt(altered, signed_log.signer.verifier)


@PROPERTY_SETTINGS
@given(offset=st.integers(0, 100_000), mask=masks)
def test_flipping_any_byte_of_a_stored_bundle_is_detected(signed_log: SignedLog, offset: int, mask: int) -> None:
    store = signed_log.store.copy()
    keys = store.list_keys("entries/")
    sizes = [len(store.get(key)) for key in keys]
    offset %= sum(sizes)
    for key, size in zip(keys, sizes, strict=True):
        if offset < size:
            store.replace(key, flip(store.get(key), offset, mask))
            start = int(key.rsplit("/", 1)[1])
            break
        offset -= size
    assert_detected_at_or_before(store, signed_log, start + BUNDLE - 1)


# -- dropping, reordering, truncating ------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(index=st.integers(0, SIZE - 1))
def test_dropping_any_entry_is_detected(signed_log: SignedLog, index: int) -> None:
    records = list(signed_log.records)
    del records[index]
    assert_detected_at_or_before(signed_log.relaid(records), signed_log, index)


@PROPERTY_SETTINGS
@given(pair=st.lists(st.integers(0, SIZE - 1), min_size=2, max_size=2, unique=True))
def test_reordering_any_two_entries_is_detected(signed_log: SignedLog, pair: list[int]) -> None:
    first, second = pair
    records = list(signed_log.records)
    records[first], records[second] = records[second], records[first]
    assert_detected_at_or_before(signed_log.relaid(records), signed_log, min(first, second))


@PROPERTY_SETTINGS
@given(keep=st.integers(0, SIZE - 1))
def test_truncating_the_log_anywhere_is_detected(signed_log: SignedLog, keep: int) -> None:
    assert_detected_at_or_before(signed_log.relaid(signed_log.records[:keep]), signed_log, keep)


# -- proofs and signatures ------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(
    leaf=st.integers(2, SIZE).flatmap(lambda size: st.tuples(st.integers(0, size - 1), st.just(size))),
    element=st.integers(0, 63),
    offset=st.integers(0, 31),
    mask=masks,
)
def test_flipping_any_byte_of_an_inclusion_proof_is_detected(
    signed_log: SignedLog, leaf: tuple[int, int], element: int, offset: int, mask: int
) -> None:
    index, size = leaf
    tree = signed_log.tree
    proof = tree.inclusion_proof(index, size)
    verify_inclusion(tree.leaf_hash(index), index, size, proof, tree.root(size))
    element %= len(proof)  # a tree of two or more leaves always has a non-empty proof
    proof[element] = flip(proof[element], offset, mask)
    with pytest.raises(ProofError):
        verify_inclusion(tree.leaf_hash(index), index, size, proof, tree.root(size))


@PROPERTY_SETTINGS
@given(
    sizes=st.integers(2, SIZE).flatmap(lambda size2: st.tuples(st.integers(1, size2 - 1), st.just(size2))),
    element=st.integers(0, 63),
    offset=st.integers(0, 31),
    mask=masks,
)
def test_flipping_any_byte_of_a_consistency_proof_is_detected(
    signed_log: SignedLog, sizes: tuple[int, int], element: int, offset: int, mask: int
) -> None:
    size1, size2 = sizes
    tree = signed_log.tree
    proof = tree.consistency_proof(size1, size2)
    element %= len(proof)
    proof[element] = flip(proof[element], offset, mask)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, tree.root(size1), tree.root(size2))


@PROPERTY_SETTINGS
@given(size=st.integers(0, SIZE), offset=st.integers(0, 1_000), mask=masks)
def test_flipping_any_byte_of_a_signed_checkpoint_is_detected(signed_log: SignedLog, size: int, offset: int, mask: int) -> None:
    note = sign_checkpoint(signed_log.signer, size, signed_log.tree.root(size)).note
    assert open_checkpoint(note, signed_log.signer.verifier).size == size
    with pytest.raises(CheckpointError):
        open_checkpoint(flip(note, offset, mask), signed_log.signer.verifier)


@PROPERTY_SETTINGS
@given(index=st.integers(0, SIZE - 1), part=st.sampled_from(["proof", "checkpoint", "index", "tree_size"]), offset=st.integers(0, 10_000), mask=masks)
def test_tampering_with_any_part_of_a_receipt_is_detected(
    signed_log: SignedLog, index: int, part: str, offset: int, mask: int
) -> None:
    receipt = signed_log.receipts[index]
    verify_receipt(receipt, signed_log.signer.verifier, event=signed_log.events[index])
    if part == "proof":  # every receipt of a 64-entry log has a non-empty proof
        proof = list(receipt.proof)
        element = offset % len(proof)
        proof[element] = flip(proof[element], offset // len(proof), mask)
        altered = Receipt(receipt.record, receipt.index, receipt.tree_size, tuple(proof), receipt.checkpoint)
    elif part == "checkpoint":
        altered = Receipt(receipt.record, receipt.index, receipt.tree_size, receipt.proof, flip(receipt.checkpoint, offset, mask))
    elif part == "index":
        altered = Receipt(receipt.record, receipt.index ^ mask, receipt.tree_size, receipt.proof, receipt.checkpoint)
    else:
        altered = Receipt(receipt.record, receipt.index, receipt.tree_size ^ mask, receipt.proof, receipt.checkpoint)
    with pytest.raises(ReceiptError):
        verify_receipt(altered, signed_log.signer.verifier)


# -- forks and rollbacks, as a partner's witness sees them -------------------------------------------------


def forked_tree(log: SignedLog, fork_at: int, size: int) -> MerkleTree:
    """The same log up to `fork_at`, then other entries: what a rewritten history looks like."""
    other = [record_for_event(make_event(1_000 + number)).to_bytes() for number in range(size - fork_at)]
    return MerkleTree(hash_leaf(record) for record in [*log.records[:fork_at], *other])


@st.composite
def fork_points(draw: st.DrawFn) -> tuple[int, int, int]:
    """(fork_at, seen, offered) with fork_at < seen <= offered <= SIZE."""
    fork_at = draw(st.integers(0, SIZE - 1))
    seen = draw(st.integers(fork_at + 1, SIZE))
    return fork_at, seen, draw(st.integers(seen, SIZE))


@PROPERTY_SETTINGS
@given(points=fork_points())
def test_a_witness_detects_a_fork_at_any_point_it_has_seen_past(signed_log: SignedLog, points: tuple[int, int, int]) -> None:
    fork_at, seen, offered = points
    honest, forked = signed_log.tree, forked_tree(signed_log, fork_at, offered)
    with TemporaryDirectory() as folder:
        witness = CheckpointWitness(Path(folder) / "checkpoint", signed_log.signer.verifier)
        witness.update(sign_checkpoint(signed_log.signer, seen, honest.root(seen)).note)
        # The forked log is signed with the real key: only the consistency proof can expose it.
        note = sign_checkpoint(signed_log.signer, offered, forked.root(offered)).note
        with pytest.raises(ForkError):
            witness.update(note, forked.consistency_proof(seen, offered))
        # Whatever proof the forked log offers, it cannot pass: not even the honest one.
        if offered > seen:
            with pytest.raises(WitnessError):
                witness.update(note, honest.consistency_proof(seen, offered))
        assert witness.latest is not None and witness.latest.size == seen  # the bad checkpoint was not kept


@PROPERTY_SETTINGS
@given(sizes=st.integers(1, SIZE).flatmap(lambda seen: st.tuples(st.just(seen), st.integers(0, seen - 1))))
def test_a_witness_refuses_to_roll_back(signed_log: SignedLog, sizes: tuple[int, int]) -> None:
    seen, offered = sizes
    tree = signed_log.tree
    with TemporaryDirectory() as folder:
        witness = CheckpointWitness(Path(folder) / "checkpoint", signed_log.signer.verifier)
        witness.update(sign_checkpoint(signed_log.signer, seen, tree.root(seen)).note)
        with pytest.raises(RollbackError):
            witness.update(sign_checkpoint(signed_log.signer, offered, tree.root(offered)).note)
    with pytest.raises(ProofError):
        verify_consistency(seen, offered, [], tree.root(seen), tree.root(offered))


@PROPERTY_SETTINGS
@given(steps=st.lists(st.integers(0, SIZE), min_size=1, max_size=8))
def test_a_witness_accepts_every_honest_extension(signed_log: SignedLog, steps: list[int]) -> None:
    tree = signed_log.tree
    with TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint"
        previous = 0
        for size in sorted(steps):
            witness = CheckpointWitness(path, signed_log.signer.verifier)  # re-read from disk each time
            proof = tree.consistency_proof(previous, size) if witness.latest else []
            assert witness.update(sign_checkpoint(signed_log.signer, size, tree.root(size)).note, proof).size == size
            previous = size


def test_tampering_with_the_witness_file_is_refused(signed_log: SignedLog, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint"
    witness = CheckpointWitness(path, signed_log.signer.verifier)
    witness.update(sign_checkpoint(signed_log.signer, 10, signed_log.tree.root(10)).note)
    path.write_bytes(path.read_bytes().replace(b"\n10\n", b"\n9\n"))
    with pytest.raises(WitnessError, match="does not verify"):
        CheckpointWitness(path, signed_log.signer.verifier)


def test_receipts_of_the_signed_log_verify(signed_log: SignedLog) -> None:
    for event, receipt in zip(signed_log.events, signed_log.receipts, strict=True):
        verify_receipt(receipt, signed_log.signer.verifier, event=event)
