from __future__ import annotations

import itertools
import os
import random

import pytest

from mshale_fl.secagg.errors import ShareError
from mshale_fl.secagg.shamir import PRIME, Share, _lagrange_at, reconstruct_secret, split_secret


@pytest.mark.parametrize("length", [0, 1, 14, 15, 16, 32, 33, 64])
def test_any_threshold_subset_reconstructs_secrets_of_every_length(length: int) -> None:
    secret = os.urandom(length)
    shares = split_secret(secret, 3, range(1, 6))
    for subset in itertools.combinations(shares, 3):
        assert reconstruct_secret(list(subset)) == secret


def test_leading_zero_bytes_survive() -> None:
    secret = bytes(20) + b"\x01"
    assert reconstruct_secret(split_secret(secret, 2, [4, 9])) == secret


def test_arbitrary_x_coordinates_and_order() -> None:
    secret = os.urandom(32)
    shares = split_secret(secret, 4, [3, 17, 5, 100, 42, 7])
    shuffled = random.Random(1).sample(shares, 5)
    assert reconstruct_secret(shuffled) == secret


def test_too_few_shares_raise() -> None:
    shares = split_secret(os.urandom(32), 3, range(1, 6))
    with pytest.raises(ShareError, match="cannot reconstruct"):
        reconstruct_secret(shares[:2])
    with pytest.raises(ShareError, match="no shares"):
        reconstruct_secret([])


def test_fewer_than_threshold_shares_say_nothing_about_the_secret() -> None:
    # With t=2 one share is uniform: the same share value is consistent with every secret.
    share = split_secret(b"\x00" * 15, 2, [1, 2])[0]
    # Any secret s' can be completed with a second share that reconstructs it.
    for target in (b"\x00" * 15, b"\xff" * 15, os.urandom(15)):
        slope = (
            share.values[0] - int.from_bytes(target, "big")
        ) % PRIME  # p(1) = s' + slope
        forged = Share(
            x=2,
            values=((int.from_bytes(target, "big") + 2 * slope) % PRIME,),
            secret_length=15,
            threshold=2,
        )
        assert reconstruct_secret([share, forged]) == target


def test_inconsistent_extra_share_is_detected() -> None:
    shares = split_secret(os.urandom(32), 2, range(1, 5))
    bad = Share(
        shares[3].x,
        (shares[3].values[0] ^ 1, *shares[3].values[1:]),
        shares[3].secret_length,
        shares[3].threshold,
    )
    with pytest.raises(ShareError, match="inconsistent"):
        reconstruct_secret([*shares[:3], bad])


def test_duplicate_and_mismatched_shares_raise() -> None:
    shares = split_secret(os.urandom(32), 2, range(1, 4))
    with pytest.raises(ShareError, match="same x"):
        reconstruct_secret([shares[0], shares[0]])
    other = split_secret(os.urandom(16), 2, range(1, 4))
    with pytest.raises(ShareError, match="different secrets"):
        reconstruct_secret([shares[0], other[1]])


def test_share_serialisation_round_trips_and_rejects_garbage() -> None:
    share = split_secret(os.urandom(32), 3, range(1, 4))[2]
    assert Share.from_bytes(share.to_bytes()) == share
    with pytest.raises(ShareError):
        Share.from_bytes(share.to_bytes()[:-3])


@pytest.mark.parametrize(
    ("threshold", "xs"),
    [(0, [1, 2]), (3, [1, 2]), (2, [1, 1]), (2, [0, 1]), (2, [1, PRIME])],
)
def test_invalid_split_parameters_raise(threshold: int, xs: list[int]) -> None:
    with pytest.raises(ValueError):
        split_secret(b"secret", threshold, xs)


def test_batched_lagrange_weights_match_one_inversion_per_point() -> None:
    rng = random.Random(7)
    for size in (1, 2, 5, 34):
        xs = tuple(rng.sample(range(1, 10_000), size))
        for target in (0, rng.randrange(1, PRIME), xs[0]):
            expected = []
            for i, xi in enumerate(xs):
                num = den = 1
                for j, xj in enumerate(xs):
                    if i != j:
                        num, den = num * (target - xj) % PRIME, den * (xi - xj) % PRIME
                expected.append(num * pow(den, -1, PRIME) % PRIME)
            assert _lagrange_at(xs, target) == tuple(expected)


def test_shares_lie_on_one_polynomial_of_degree_below_t() -> None:
    # Large cohort, large threshold (the n = 50 case): every t-subset rebuilds the secret, and each
    # extra share is checked against the polynomial, so one flipped value anywhere is caught.
    secret = os.urandom(32)
    t, xs = 34, list(range(1, 51))
    shares = split_secret(secret, t, xs)
    rng = random.Random(3)
    for _ in range(5):
        assert reconstruct_secret(rng.sample(shares, rng.randrange(t, 51))) == secret
    victim = rng.randrange(t, 50)
    bad = Share(shares[victim].x, (shares[victim].values[0], shares[victim].values[1] ^ 2,
                                   shares[victim].values[2]), 32, t)  # fmt: skip
    with pytest.raises(ShareError, match="inconsistent"):
        reconstruct_secret([*shares[:victim], bad, *shares[victim + 1 :]])
