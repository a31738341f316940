"""The RFC 9162 (Certificate Transparency v2) Merkle tree: hashing, proofs and their verification.

Leaf hash  = SHA-256(0x00 || entry)            (RFC 9162 2.1.1)
Node hash  = SHA-256(0x01 || left || right)
Empty tree = SHA-256()

`verify_inclusion` and `verify_consistency` follow RFC 9162 2.1.3.2 and 2.1.4.2 step by step
and raise a `ProofError` subclass that names what is wrong: a size out of range, a proof with
hashes missing or left over, a hash that is not 32 bytes, or a root that does not match. They
never return False, so a forgotten return-value check cannot turn a failure into a success.

`MerkleTree` keeps every perfect subtree hash in one contiguous bytearray per level (2n hashes,
64 bytes per leaf), so appending is amortised O(1) and any root, inclusion proof or consistency
proof costs O(log n) hash operations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "ConsistencyError",
    "InclusionError",
    "MalformedHashError",
    "MerkleTree",
    "ProofError",
    "ProofSizeError",
    "RootMismatchError",
    "TreeSizeError",
    "consistency_proof",
    "hash_children",
    "hash_leaf",
    "inclusion_proof",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


class ProofError(ValueError):
    """A Merkle proof did not verify. Subclasses say why."""


class TreeSizeError(ProofError):
    """Sizes or indices are out of range (index >= size, size2 < size1, ...)."""


class ProofSizeError(ProofError):
    """The proof has more or fewer hashes than the sizes require."""


class MalformedHashError(ProofError):
    """A leaf hash, root or proof element is not exactly 32 bytes."""


class RootMismatchError(ProofError):
    """The proof is well formed but leads to a different root: the data or the proof is wrong."""


class InclusionError(RootMismatchError):
    """The inclusion proof does not lead to the expected root."""


class ConsistencyError(RootMismatchError):
    """The consistency proof does not reproduce one of the two roots: the log was rewritten or forked."""


def hash_leaf(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        length = len(value) if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise MalformedHashError(f"{what} must be {HASH_SIZE} bytes, got {length}")


def _check_proof(proof: Sequence[bytes]) -> None:
    for position, element in enumerate(proof):
        _check_hash(element, f"proof[{position}]")


def _check_size(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 2**64:
        raise TreeSizeError(f"{what} must be an integer in [0, 2**64), got {value!r}")


def verify_inclusion(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that `leaf_hash` is the leaf at `index` of the tree of `tree_size` with `root`.

    RFC 9162 2.1.3.2. Raises a `ProofError` subclass on any failure; returns None on success.
    """
    _check_size(index, "leaf index")
    _check_size(tree_size, "tree size")
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root hash")
    _check_proof(proof)
    # Step 1.
    if index >= tree_size:
        raise TreeSizeError(f"leaf index {index} is not below tree size {tree_size}")
    # Steps 2-3.
    fn, sn = index, tree_size - 1
    r = bytes(leaf_hash)
    # Step 4.
    for p in proof:
        if sn == 0:
            raise ProofSizeError(
                f"inclusion proof for leaf {index} in a tree of {tree_size} has extra hashes: "
                f"{len(proof)} given, fewer needed"
            )
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    # Step 5.
    if sn != 0:
        raise ProofSizeError(
            f"inclusion proof for leaf {index} in a tree of {tree_size} is missing hashes ({len(proof)} given)"
        )
    if r != root:
        raise InclusionError(f"inclusion proof for leaf {index} in a tree of {tree_size} leads to a different root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree of `size2` with `root2` extends the tree of `size1` with `root1`.

    RFC 9162 2.1.4.2 for 0 < size1 < size2. The edge cases the RFC leaves to the caller:
    size1 == size2 needs an empty proof and equal roots; size1 == 0 needs an empty proof and
    root1 == SHA-256() (the empty tree is a prefix of every tree). Raises a `ProofError`
    subclass on any failure; returns None on success.
    """
    _check_size(size1, "first tree size")
    _check_size(size2, "second tree size")
    _check_hash(root1, "first root hash")
    _check_hash(root2, "second root hash")
    _check_proof(proof)
    if size2 < size1:
        raise TreeSizeError(f"second tree size {size2} is smaller than the first {size1}: the log shrank")
    if size1 == size2:
        if proof:
            raise ProofSizeError(f"trees of equal size {size1} need an empty consistency proof, got {len(proof)} hashes")
        if root1 != root2:
            raise ConsistencyError(f"two different roots for the same tree size {size1}: the log forked")
        return
    if size1 == 0:
        if proof:
            raise ProofSizeError(f"a consistency proof from the empty tree must be empty, got {len(proof)} hashes")
        if root1 != EMPTY_ROOT:
            raise ConsistencyError("the root given for the empty tree is not SHA-256() of nothing")
        return
    # Step 1.
    if not proof:
        raise ProofSizeError(f"consistency proof from {size1} to {size2} is empty")
    path = list(proof)
    # Step 2.
    if size1 & (size1 - 1) == 0:
        path.insert(0, bytes(root1))
    # Step 3.
    fn, sn = size1 - 1, size2 - 1
    # Step 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:
            raise ProofSizeError(f"consistency proof from {size1} to {size2} has extra hashes ({len(proof)} given)")
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise ProofSizeError(f"consistency proof from {size1} to {size2} is missing hashes ({len(proof)} given)")
    if fr != root1:
        raise ConsistencyError(f"consistency proof from {size1} to {size2} does not reproduce the first root")
    if sr != root2:
        raise ConsistencyError(f"consistency proof from {size1} to {size2} does not reproduce the second root")


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162 2.1.1: the largest power of two strictly smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only RFC 9162 tree that can produce roots and proofs for any size up to its own.

    `levels[h]` holds, back to back, the hash of every perfect subtree of 2**h leaves that is
    complete so far; subtree i at level h covers leaves [i * 2**h, (i + 1) * 2**h).
    """

    __slots__ = ("_levels", "_size")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        self.extend(leaf_hashes)

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    def append_entry(self, entry: bytes) -> int:
        """Append a raw entry (hashed as a leaf); returns its index."""
        return self.append(hash_leaf(entry))

    def append(self, leaf_hash: bytes) -> int:
        """Append a leaf hash; returns its index."""
        _check_hash(leaf_hash, "leaf hash")
        index = self._size
        levels = self._levels
        levels[0] += leaf_hash
        self._size += 1
        # Every time the count at a level becomes even, a new perfect subtree completes above it.
        position, height, node = index, 0, leaf_hash
        while position & 1:
            level = levels[height]
            left = level[(position - 1) * HASH_SIZE : position * HASH_SIZE]
            node = _sha256(b"\x01" + left + node).digest()
            height += 1
            position >>= 1
            if len(levels) == height:
                levels.append(bytearray())
            levels[height] += node
        return index

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for leaf_hash in leaf_hashes:
            self.append(leaf_hash)

    def leaf_hash(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise TreeSizeError(f"leaf index {index} is not below tree size {self._size}")
        return bytes(self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def root(self, size: int | None = None) -> bytes:
        """MTH(D[0:size]), by default of the whole tree."""
        size = self._size if size is None else size
        self._check_tree_size(size)
        if size == 0:
            return EMPTY_ROOT
        return self._subtree(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 9162 2.1.3.1, ordered from the leaf upwards."""
        size = self._size if size is None else size
        self._check_tree_size(size)
        if not 0 <= index < size:
            raise TreeSizeError(f"leaf index {index} is not below tree size {size}")
        proof: list[bytes] = []
        self._path(index, 0, size, proof)
        return proof

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """PROOF(size1, D[0:size2]) of RFC 9162 2.1.4.1; empty when size1 is 0 or equal to size2."""
        size2 = self._size if size2 is None else size2
        self._check_tree_size(size2)
        if not 0 <= size1 <= size2:
            raise TreeSizeError(f"first tree size {size1} must be in [0, {size2}]")
        proof: list[bytes] = []
        if 0 < size1 < size2:
            self._subproof(size1, 0, size2, True, proof)
        return proof

    def _check_tree_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise TreeSizeError(f"tree size {size} is beyond the {self._size} leaves held")

    def _subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range the RFC recursion can produce (start aligned to its split)."""
        count = end - start
        if count & (count - 1) == 0 and start % count == 0:
            height = count.bit_length() - 1
            offset = (start >> height) * HASH_SIZE
            return bytes(self._levels[height][offset : offset + HASH_SIZE])
        k = _largest_power_of_two_below(count)
        return hash_children(self._subtree(start, start + k), self._subtree(start + k, end))

    def _path(self, index: int, start: int, end: int, proof: list[bytes]) -> None:
        count = end - start
        if count == 1:
            return
        k = _largest_power_of_two_below(count)
        if index < k:
            self._path(index, start, start + k, proof)
            proof.append(self._subtree(start + k, end))
        else:
            self._path(index - k, start + k, end, proof)
            proof.append(self._subtree(start, start + k))

    def _subproof(self, m: int, start: int, end: int, complete: bool, proof: list[bytes]) -> None:
        count = end - start
        if m == count:
            if not complete:
                proof.append(self._subtree(start, end))
            return
        k = _largest_power_of_two_below(count)
        if m <= k:
            self._subproof(m, start, start + k, complete, proof)
            proof.append(self._subtree(start + k, end))
        else:
            self._subproof(m - k, start + k, end, False, proof)
            proof.append(self._subtree(start, start + k))


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH of the leaves given, in order."""
    return MerkleTree(leaf_hashes).root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    """Inclusion proof for leaf `index` in the tree of the first `size` leaves (default all)."""
    size = len(leaf_hashes) if size is None else size
    return MerkleTree(leaf_hashes[:size]).inclusion_proof(index, size)


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int, size2: int | None = None) -> list[bytes]:
    """Consistency proof between the trees of the first `size1` and `size2` leaves."""
    size2 = len(leaf_hashes) if size2 is None else size2
    return MerkleTree(leaf_hashes[:size2]).consistency_proof(size1, size2)
