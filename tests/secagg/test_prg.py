from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mshale_fl.secagg.prg import MaskAccumulator, expand_mask, word_dtype

# Upper 1e-6 tail of chi-square with 255 degrees of freedom: a uniform source fails once in a million.
CHI2_255_CRITICAL = 377.08


def byte_chi_square(values: np.ndarray, modulus_bits: int) -> float:
    nbytes = modulus_bits // 8
    data = values.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :nbytes].ravel()
    counts = np.bincount(data, minlength=256)
    expected = data.size / 256
    return float(((counts - expected) ** 2 / expected).sum())


def test_same_seed_same_mask_and_different_seeds_differ() -> None:
    seed = os.urandom(32)
    a = expand_mask(seed, 1000, 32)
    assert np.array_equal(a, expand_mask(seed, 1000, 32))
    assert not np.array_equal(a, expand_mask(os.urandom(32), 1000, 32))


def test_every_seed_byte_matters() -> None:
    # A 32-bit seed (Flower 1.42) would ignore most of these bytes; AES-256 uses all of them.
    seed = bytearray(32)
    base = expand_mask(bytes(seed), 64, 32)
    for i in range(32):
        flipped = bytearray(seed)
        flipped[i] ^= 1
        assert not np.array_equal(base, expand_mask(bytes(flipped), 64, 32))


def test_prefix_is_stable_across_lengths() -> None:
    seed = os.urandom(32)
    assert np.array_equal(expand_mask(seed, 10, 48), expand_mask(seed, 1000, 48)[:10])


@pytest.mark.parametrize("bits", [8, 32, 48])
def test_masks_stay_in_range_and_look_uniform(bits: int) -> None:
    mask = expand_mask(os.urandom(32), 50_000, bits)
    assert mask.dtype == np.uint64
    assert int(mask.max()) < 1 << bits
    assert byte_chi_square(mask, bits) < CHI2_255_CRITICAL


def test_bad_seeds_and_moduli_raise() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        expand_mask(b"\x00" * 4, 10, 32)
    with pytest.raises(ValueError, match="modulus_bits"):
        expand_mask(bytes(32), 10, 63)


def _reference_keystream(seed: bytes, nbytes: int) -> bytes:
    """AES-256-CTR keyed by the whole seed, all-zero initial counter, applied to zeros."""
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return encryptor.update(bytes(nbytes)) + encryptor.finalize()


@pytest.mark.parametrize(("bits", "word"), [(1, "<u4"), (20, "<u4"), (32, "<u4"), (33, "<u8"), (48, "<u8"), (62, "<u8")])
def test_mask_is_the_aes_ctr_keystream_in_words_reduced_to_k_bits(bits: int, word: str) -> None:
    # Known answer against an independent AES-CTR call: 32-bit words up to k = 32 (2^k divides 2^32),
    # 64-bit words above; reducing to the low k bits keeps every residue exactly uniform.
    seed = os.urandom(32)
    length = 1001
    words = np.frombuffer(_reference_keystream(seed, length * np.dtype(word).itemsize), dtype=word)
    expected = words.astype(np.uint64) & np.uint64((1 << bits) - 1)
    assert np.array_equal(expand_mask(seed, length, bits), expected)
    assert word_dtype(bits) == np.dtype(word)


@pytest.mark.parametrize("bits", [7, 32, 48, 62])
def test_accumulator_adds_and_subtracts_masks_modulo_2_to_the_k(bits: int) -> None:
    rng = np.random.default_rng(bits)
    length = 5000
    vector = rng.integers(0, 1 << bits, size=length, dtype=np.uint64)
    a, b, c = os.urandom(32), os.urandom(32), os.urandom(32)
    acc = MaskAccumulator(length, bits)
    acc.add_vector(vector)
    acc.add_mask(a)
    acc.subtract_mask(b)
    acc.add_mask(c)
    modulus = 1 << bits
    expected = [
        (int(v) + int(x) - int(y) + int(z)) % modulus
        for v, x, y, z in zip(
            vector, expand_mask(a, length, bits), expand_mask(b, length, bits), expand_mask(c, length, bits),
            strict=True,
        )
    ]
    result = acc.result()
    assert result.dtype == np.uint64
    assert result.tolist() == expected
    # result() is a copy: later masks do not change an earlier result.
    acc.subtract_mask(c)
    assert result.tolist() == expected


def test_accumulator_takes_any_unsigned_input_and_rejects_wrong_lengths() -> None:
    acc = MaskAccumulator(4, 32)
    acc.add_vector(np.array([1, 2, 3, (1 << 32) + 4], dtype=np.uint64))  # bit 32 is outside Z_{2^32}
    acc.add_vector(np.array([1, 1, 1, 1], dtype=np.uint8))
    assert acc.result().tolist() == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="length 4"):
        acc.add_vector(np.zeros(5, dtype=np.uint64))
    with pytest.raises(ValueError, match="32 bytes"):
        acc.add_mask(b"short")
