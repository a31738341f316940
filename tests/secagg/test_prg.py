from __future__ import annotations

import os

import numpy as np
import pytest

from mshale_fl.secagg.prg import expand_mask

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
