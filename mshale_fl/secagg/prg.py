"""Expand a 32-byte seed into a mask vector in Z_{2^k} with AES-256 in counter mode.

The whole 256-bit seed is the AES key, so the mask is as hard to predict as the seed itself (Flower
1.42 seeds NumPy's RandomState with 32 bits, which can be brute-forced). Each seed is a fresh key
derived for one purpose in one round, so a fixed all-zero initial counter block never repeats a
(key, counter) pair. Words are 64 bits and reduced to the low k bits; since 2^k divides 2^64 every
residue stays exactly uniform.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32
MAX_MODULUS_BITS = 62
_ZERO_COUNTER = bytes(16)


def modulus_mask(modulus_bits: int) -> np.uint64:
    if not 1 <= modulus_bits <= MAX_MODULUS_BITS:
        raise ValueError(
            f"modulus_bits must be in 1..{MAX_MODULUS_BITS}, not {modulus_bits}"
        )
    return np.uint64((1 << modulus_bits) - 1)


def expand_mask(seed: bytes, length: int, modulus_bits: int) -> np.ndarray:
    """`length` pseudo-random elements of Z_{2^modulus_bits} as uint64, determined by `seed`."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed must be {SEED_BYTES} bytes, not {len(seed)}")
    if length < 0:
        raise ValueError("a mask cannot have negative length")
    mask = modulus_mask(modulus_bits)
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_COUNTER)).encryptor()
    stream = encryptor.update(bytes(8 * length)) + encryptor.finalize()
    words = np.frombuffer(stream, dtype="<u8").astype(np.uint64, copy=True)
    words &= mask
    return words
