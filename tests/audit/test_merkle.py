"""The Merkle tree against RFC 9162 and the shared transparency-dev / RFC 6962 vectors."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from mshale_fl.audit.merkle import (
    EMPTY_ROOT,
    ConsistencyError,
    InclusionError,
    MalformedHashError,
    MerkleTree,
    ProofError,
    ProofSizeError,
    TreeSizeError,
    hash_children,
    hash_leaf,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "vectors"
MAX_SIZE = 300


# -- an independent reference: the RFC 9162 2.1 definitions, written as literally as possible ----


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def entries(n: int) -> list[bytes]:
    return [f"entry-{i}".encode() for i in range(n)]


@pytest.fixture(scope="module")
def big_tree() -> tuple[list[bytes], MerkleTree]:
    data = entries(MAX_SIZE)
    tree = MerkleTree()
    for item in data:
        tree.append_entry(item)
    return data, tree


# -- generation ----------------------------------------------------------------------------------


def test_hashes_use_rfc_domain_separation() -> None:
    assert hash_leaf(b"") == hashlib.sha256(b"\x00").digest()
    assert hash_children(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert MerkleTree().root() == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_roots_match_the_rfc_definition_for_every_size(big_tree: tuple[list[bytes], MerkleTree]) -> None:
    data, tree = big_tree
    for size in range(70):
        assert tree.root(size) == mth(data[:size]), size
    for size in (127, 128, 129, 255, 256, 257, MAX_SIZE):
        assert tree.root(size) == mth(data[:size]), size


def test_proofs_match_the_rfc_definition(big_tree: tuple[list[bytes], MerkleTree]) -> None:
    data, tree = big_tree
    for size in range(1, 40):
        for index in range(size):
            assert tree.inclusion_proof(index, size) == path(index, data[:size]), (index, size)
        for size1 in range(1, size):
            assert tree.consistency_proof(size1, size) == subproof(size1, data[:size], True), (size1, size)


def test_every_inclusion_proof_up_to_300_leaves_verifies(big_tree: tuple[list[bytes], MerkleTree]) -> None:
    _, tree = big_tree
    checked = 0
    for size in range(1, MAX_SIZE + 1):
        root = tree.root(size)
        for index in range(size):
            verify_inclusion(tree.leaf_hash(index), index, size, tree.inclusion_proof(index, size), root)
            checked += 1
    assert checked == MAX_SIZE * (MAX_SIZE + 1) // 2


def test_every_consistency_proof_up_to_300_leaves_verifies(big_tree: tuple[list[bytes], MerkleTree]) -> None:
    _, tree = big_tree
    roots = [tree.root(size) for size in range(MAX_SIZE + 1)]
    checked = 0
    for size2 in range(MAX_SIZE + 1):
        for size1 in range(size2 + 1):
            proof = tree.consistency_proof(size1, size2)
            verify_consistency(size1, size2, proof, roots[size1], roots[size2])
            checked += 1
    assert checked == (MAX_SIZE + 1) * (MAX_SIZE + 2) // 2


def test_a_tree_built_at_once_equals_one_built_leaf_by_leaf(big_tree: tuple[list[bytes], MerkleTree]) -> None:
    data, tree = big_tree
    again = MerkleTree(hash_leaf(item) for item in data)
    assert again.root() == tree.root()
    assert again.inclusion_proof(123) == tree.inclusion_proof(123)


# -- verification semantics (RFC 9162 2.1.3.2 / 2.1.4.2) --------------------------------------------


@pytest.fixture(scope="module")
def tree8() -> MerkleTree:
    return MerkleTree(hash_leaf(item) for item in entries(8))


def test_inclusion_rejects_index_at_or_beyond_size(tree8: MerkleTree) -> None:
    proof = tree8.inclusion_proof(7)
    with pytest.raises(TreeSizeError):
        verify_inclusion(tree8.leaf_hash(7), 8, 8, proof, tree8.root())
    with pytest.raises(TreeSizeError):
        verify_inclusion(tree8.leaf_hash(0), 0, 0, [], EMPTY_ROOT)
    with pytest.raises(TreeSizeError):
        verify_inclusion(tree8.leaf_hash(0), -1, 8, proof, tree8.root())


def test_inclusion_rejects_extra_and_missing_hashes(tree8: MerkleTree) -> None:
    proof = tree8.inclusion_proof(2)
    with pytest.raises(ProofSizeError, match="extra"):
        verify_inclusion(tree8.leaf_hash(2), 2, 8, [*proof, tree8.root()], tree8.root())
    with pytest.raises(ProofSizeError, match="missing"):
        verify_inclusion(tree8.leaf_hash(2), 2, 8, proof[:-1], tree8.root())


def test_inclusion_rejects_hashes_that_are_not_32_bytes(tree8: MerkleTree) -> None:
    proof = tree8.inclusion_proof(2)
    for bad in (b"", b"x" * 31, b"x" * 33):
        with pytest.raises(MalformedHashError):
            verify_inclusion(bad, 2, 8, proof, tree8.root())
        with pytest.raises(MalformedHashError):
            verify_inclusion(tree8.leaf_hash(2), 2, 8, proof, bad)
        with pytest.raises(MalformedHashError):
            verify_inclusion(tree8.leaf_hash(2), 2, 8, [bad, *proof[1:]], tree8.root())


def test_inclusion_rejects_wrong_leaf_and_root(tree8: MerkleTree) -> None:
    proof = tree8.inclusion_proof(2)
    with pytest.raises(InclusionError):
        verify_inclusion(tree8.leaf_hash(3), 2, 8, proof, tree8.root())
    with pytest.raises(InclusionError):
        verify_inclusion(tree8.leaf_hash(2), 2, 8, proof, tree8.root(7))


def test_consistency_rejects_shrinking_and_equal_size_forks(tree8: MerkleTree) -> None:
    with pytest.raises(TreeSizeError, match="shrank"):
        verify_consistency(8, 7, [], tree8.root(8), tree8.root(7))
    with pytest.raises(ConsistencyError, match="forked"):
        verify_consistency(8, 8, [], tree8.root(8), tree8.root(7))
    with pytest.raises(ProofSizeError):
        verify_consistency(8, 8, [tree8.root()], tree8.root(), tree8.root())
    verify_consistency(8, 8, [], tree8.root(), tree8.root())


def test_consistency_from_the_empty_tree(tree8: MerkleTree) -> None:
    verify_consistency(0, 8, [], EMPTY_ROOT, tree8.root())
    with pytest.raises(ProofSizeError):
        verify_consistency(0, 8, [tree8.root()], EMPTY_ROOT, tree8.root())
    with pytest.raises(ConsistencyError):
        verify_consistency(0, 8, [], tree8.root(1), tree8.root())


def test_consistency_rejects_extra_missing_and_malformed_hashes(tree8: MerkleTree) -> None:
    proof = tree8.consistency_proof(3, 8)
    roots = tree8.root(3), tree8.root(8)
    with pytest.raises(ProofSizeError, match="empty"):
        verify_consistency(3, 8, [], *roots)
    with pytest.raises(ProofSizeError, match="extra"):
        verify_consistency(3, 8, [*proof, roots[1]], *roots)
    with pytest.raises(ProofSizeError, match="missing"):
        verify_consistency(3, 8, proof[:-1], *roots)
    with pytest.raises(MalformedHashError):
        verify_consistency(3, 8, [*proof[:-1], proof[-1][:31]], *roots)
    with pytest.raises(ConsistencyError, match="first root"):
        verify_consistency(3, 8, proof, tree8.root(4), roots[1])
    with pytest.raises(ConsistencyError, match="second root"):
        verify_consistency(3, 8, proof, roots[0], tree8.root(7))


def test_proof_errors_are_value_errors_so_callers_can_catch_either() -> None:
    assert issubclass(ProofError, ValueError)


# -- shared vectors --------------------------------------------------------------------------------


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _vector_files(kind: str) -> list[Path]:
    files = sorted((VECTORS / "transparency-dev" / kind).glob("*/*.json"))
    assert files, f"no {kind} vectors found"
    return files


@pytest.mark.parametrize("vector_file", _vector_files("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_transparency_dev_inclusion_vectors(vector_file: Path) -> None:
    vector = json.loads(vector_file.read_text())
    proof = [_b64(node) for node in vector["proof"] or []]
    call = lambda: verify_inclusion(
        _b64(vector["leafHash"]), vector["leafIdx"], vector["treeSize"], proof, _b64(vector["root"])
    )
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            call()
    else:
        call()


@pytest.mark.parametrize("vector_file", _vector_files("consistency"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_transparency_dev_consistency_vectors(vector_file: Path) -> None:
    vector = json.loads(vector_file.read_text())
    proof = [_b64(node) for node in vector["proof"] or []]
    call = lambda: verify_consistency(
        vector["size1"], vector["size2"], proof, _b64(vector["root1"]), _b64(vector["root2"])
    )
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            call()
    else:
        call()


def test_rfc6962_reference_tree() -> None:
    vectors = json.loads((VECTORS / "rfc6962.json").read_text())
    leaves = [bytes.fromhex(item) for item in vectors["leaves_hex"]]
    roots = [bytes.fromhex(item) for item in vectors["roots_hex"]]
    tree = MerkleTree(hash_leaf(leaf) for leaf in leaves)
    assert tree.root(0) == bytes.fromhex(vectors["empty_tree_root_hex"])
    for size in range(1, 9):
        assert tree.root(size) == roots[size - 1]
    for case in vectors["inclusion_proofs"]:
        index, size = case["leaf"] - 1, case["size"]
        proof = [bytes.fromhex(node) for node in case["proof_hex"]]
        assert tree.inclusion_proof(index, size) == proof
        verify_inclusion(hash_leaf(leaves[index]), index, size, proof, roots[size - 1])
    for case in vectors["consistency_proofs"]:
        size1, size2 = case["size1"], case["size2"]
        proof = [bytes.fromhex(node) for node in case["proof_hex"]]
        assert tree.consistency_proof(size1, size2) == proof
        verify_consistency(size1, size2, proof, roots[size1 - 1], roots[size2 - 1])
