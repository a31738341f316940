from __future__ import annotations

import numpy as np
import pytest

from mshale_fl.secagg.quantize import (
    QuantizationConfig,
    dequantize_sum,
    quantize_update,
)


def test_sum_of_quantised_updates_dequantises_to_weighted_sum() -> None:
    rng = np.random.default_rng(3)
    cfg = QuantizationConfig(
        modulus_bits=48, clip=1.0, max_examples=1000, max_partners=10
    )
    updates = [(rng.uniform(-1, 1, 100), int(rng.integers(1, 1000))) for _ in range(10)]
    total = np.zeros(101, dtype=np.uint64)
    for u, n in updates:
        total += quantize_update(u, n, cfg, rng)
    agg = dequantize_sum(total, cfg)
    expected = sum(u * n for u, n in updates)
    assert agg.total_examples == sum(n for _, n in updates)
    assert np.abs(agg.weighted_sum - expected).max() <= 10 / cfg.scale
    assert np.allclose(
        agg.weighted_mean,
        expected / agg.total_examples,
        atol=cfg.resolution(agg.total_examples),
    )


def test_extreme_values_do_not_wrap_around() -> None:
    cfg = QuantizationConfig(
        modulus_bits=32,
        clip=2.0,
        max_examples=50,
        max_partners=8,
        stochastic_rounding=False,
    )
    total = np.zeros(4, dtype=np.uint64)
    for _ in range(8):
        total += quantize_update(np.array([5.0, -5.0, 0.0]), 50, cfg)
    total &= np.uint64((1 << 32) - 1)
    agg = dequantize_sum(total, cfg)
    assert agg.total_examples == 400
    # Clipped to +-2 before weighting: 8 partners x 50 examples x 2.
    assert np.allclose(agg.weighted_sum, [800.0, -800.0, 0.0], atol=8 / cfg.scale)


def test_stochastic_rounding_is_unbiased() -> None:
    cfg = QuantizationConfig(modulus_bits=16, clip=1.0, max_examples=1, max_partners=1)
    value = 0.3 / cfg.scale  # a third of one quantisation step
    rng = np.random.default_rng(0)
    q = quantize_update(np.full(20_000, value), 1, cfg, rng)[:-1]
    assert set(np.unique(q)) == {0, 1}
    assert abs(q.mean() - 0.3) < 0.02


def test_invalid_inputs_and_configs_raise() -> None:
    cfg = QuantizationConfig(max_examples=10)
    with pytest.raises(ValueError, match="num_examples"):
        quantize_update(np.zeros(3), 11, cfg)
    with pytest.raises(ValueError, match="NaN"):
        quantize_update(np.array([np.nan]), 1, cfg)
    with pytest.raises(ValueError, match="cannot hold"):
        QuantizationConfig(modulus_bits=16, max_examples=1000, max_partners=100)


def test_l2_clip_scales_large_updates_and_leaves_small_ones() -> None:
    cfg = QuantizationConfig(
        modulus_bits=48,
        clip=10.0,
        max_examples=1,
        max_partners=1,
        l2_clip=1.0,
        stochastic_rounding=False,
    )
    big = dequantize_sum(quantize_update(np.array([3.0, 4.0]), 1, cfg), cfg)
    assert np.allclose(big.weighted_sum, [0.6, 0.8], atol=1 / cfg.scale)
    small = dequantize_sum(quantize_update(np.array([0.3, -0.4]), 1, cfg), cfg)
    assert np.allclose(small.weighted_sum, [0.3, -0.4], atol=1 / cfg.scale)


def test_in_place_quantisation_matches_the_formula_and_leaves_the_input_alone() -> None:
    cfg = QuantizationConfig(modulus_bits=32, clip=1.0, max_examples=1000, max_partners=50)
    update = np.random.default_rng(5).uniform(-1.5, 1.5, 10_000)
    before = update.copy()
    encoded = quantize_update(update, 321, cfg, np.random.default_rng(9))
    assert np.array_equal(update, before)
    # floor(clip(u) * n * scale + U[0, 1)), two's complement modulo 2^k, then n.
    noise = np.random.default_rng(9).random(update.size)
    integers = np.floor(np.clip(update, -1.0, 1.0) * (321 * cfg.scale) + noise).astype(np.int64)
    expected = [int(i) % (1 << 32) for i in integers] + [321]
    assert encoded.tolist() == expected
    nearest = QuantizationConfig(modulus_bits=32, clip=1.0, max_examples=1000, max_partners=50,
                                 stochastic_rounding=False)  # fmt: skip
    rounded = np.rint(np.clip(update, -1.0, 1.0) * (321 * nearest.scale)).astype(np.int64)
    assert quantize_update(update, 321, nearest).tolist() == [int(i) % (1 << 32) for i in rounded] + [321]
