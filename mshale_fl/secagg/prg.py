"""Expand a 32-byte seed into a mask vector in Z_{2^k} with AES-256 in counter mode.

The whole 256-bit seed is the AES key, so the mask is as hard to predict as the seed itself (Flower
1.42 seeds NumPy's RandomState with 32 bits, which can be brute-forced). Each seed is a fresh key
derived for one purpose in one round, so a fixed all-zero initial counter block never repeats a
(key, counter) pair. The keystream is read as little-endian words of 32 bits when k <= 32 and of
64 bits otherwise, reduced to the low k bits; since 2^k divides the word's 2^32 or 2^64, every residue
stays exactly uniform.

Speed (see README.md): the keystream is written with `update_into` straight into one reusable buffer
and added into an accumulator in place (`MaskAccumulator`), in 32-bit words when k <= 32, so a mask
costs one AES pass and one vector addition, with no allocation per mask.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32
MAX_MODULUS_BITS = 62
_ZERO_COUNTER = bytes(16)
_BLOCK_SLACK = 15  # update_into wants room for one block beyond the data


def modulus_mask(modulus_bits: int) -> np.uint64:
    if not 1 <= modulus_bits <= MAX_MODULUS_BITS:
        raise ValueError(
            f"modulus_bits must be in 1..{MAX_MODULUS_BITS}, not {modulus_bits}"
        )
    return np.uint64((1 << modulus_bits) - 1)


def word_dtype(modulus_bits: int) -> np.dtype:
    """The unsigned word masks are drawn and summed in: 2^k divides its range, so wrapping is exact."""
    modulus_mask(modulus_bits)
    return np.dtype("<u4") if modulus_bits <= 32 else np.dtype("<u8")


def _check_seed(seed: bytes) -> None:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed must be {SEED_BYTES} bytes, not {len(seed)}")


class MaskAccumulator:
    """A vector in Z_{2^k} that masks are added to and subtracted from in place.

    Holds the running sum in `word_dtype(k)` and one keystream buffer reused for every mask, so a
    client's y_u or the server's unmasking costs one AES pass and one addition per mask. Not shared
    between threads.
    """

    def __init__(self, length: int, modulus_bits: int) -> None:
        if length < 0:
            raise ValueError("a mask cannot have negative length")
        self.length = length
        self.modulus_bits = modulus_bits
        self.dtype = word_dtype(modulus_bits)
        nbytes = length * self.dtype.itemsize
        self._zeros = np.zeros(nbytes, dtype=np.uint8)  # the plaintext: keystream = AES-CTR(0...)
        self._stream = np.empty(nbytes + _BLOCK_SLACK, dtype=np.uint8)
        self._words = self._stream[:nbytes].view(self.dtype)
        self.total = np.zeros(length, dtype=self.dtype)

    def keystream_words(self, seed: bytes) -> np.ndarray:
        """The unreduced mask words of `seed`; a view of the shared buffer, valid until the next call."""
        _check_seed(seed)
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_COUNTER)).encryptor()
        encryptor.update_into(self._zeros, self._stream)
        encryptor.finalize()
        return self._words

    def add_vector(self, vector: np.ndarray) -> None:
        """Add a vector of elements of Z_{2^k} (any unsigned dtype; only the low k bits matter)."""
        vector = np.asarray(vector)
        if vector.shape != (self.length,):
            raise ValueError(f"expected a vector of length {self.length}, not shape {vector.shape}")
        if vector.dtype == self.dtype:
            np.add(self.total, vector, out=self.total)
        else:
            # uint64 -> uint32 keeps the low 32 bits, which is all that matters modulo 2^k <= 2^32.
            np.add(self.total, vector.astype(self.dtype, copy=False), out=self.total, casting="unsafe")

    def add_mask(self, seed: bytes) -> None:
        np.add(self.total, self.keystream_words(seed), out=self.total)

    def subtract_mask(self, seed: bytes) -> None:
        np.subtract(self.total, self.keystream_words(seed), out=self.total)

    def result(self) -> np.ndarray:
        """The sum as uint64 elements reduced to [0, 2^k)."""
        out = self.total.astype(np.uint64)
        out &= modulus_mask(self.modulus_bits)
        return out


def expand_mask(seed: bytes, length: int, modulus_bits: int) -> np.ndarray:
    """`length` pseudo-random elements of Z_{2^modulus_bits} as uint64, determined by `seed`."""
    _check_seed(seed)
    accumulator = MaskAccumulator(length, modulus_bits)
    accumulator.add_mask(seed)
    return accumulator.result()
