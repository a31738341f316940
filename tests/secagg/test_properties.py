"""Property tests: Shamir round trips and round sums for generated cohorts and dropout patterns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mshale_fl.secagg.errors import ShareError, TooFewSurvivorsError
from mshale_fl.secagg.protocol import RoundConfig
from mshale_fl.secagg.shamir import reconstruct_secret, split_secret
from mshale_fl.secagg.simulation import Dropouts, run_round

STAGE_NAMES = (
    "before_advertise",
    "before_share_keys",
    "before_masked_input",
    "before_consistency_check",
    "before_unmask",
)


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(max_size=70),
    n=st.integers(2, 8),
    data=st.data(),
)
def test_shamir_round_trips_from_any_t_shares(secret: bytes, n: int, data) -> None:
    t = data.draw(st.integers(1, n))
    shares = split_secret(secret, t, range(1, n + 1))
    subset = data.draw(st.permutations(shares)).copy()
    k = data.draw(st.integers(0, n))
    chosen = subset[:k]
    if k < t:
        with pytest.raises(ShareError):
            reconstruct_secret(chosen)
    else:
        assert reconstruct_secret(chosen) == secret


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 7),
    data=st.data(),
)
def test_round_sums_exactly_the_survivors_or_fails_below_t(n: int, data) -> None:
    ids = tuple(f"p{i}" for i in range(n))
    t = data.draw(st.integers(2, n))
    d = data.draw(st.integers(1, 8))
    # Each partner drops before one stage, or never (None).
    fate = {p: data.draw(st.sampled_from((None, *STAGE_NAMES))) for p in ids}
    values = {
        p: np.array(
            data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=d, max_size=d)),
            dtype=np.uint64,
        )
        for p in ids
    }
    drops = Dropouts(
        **{s: frozenset(p for p in ids if fate[p] == s) for s in STAGE_NAMES}
    )
    cfg = RoundConfig(b"property", ids, t, d, 32)
    remaining = [p for p in ids if fate[p] is None]
    if len(remaining) < t:
        with pytest.raises(TooFewSurvivorsError):
            run_round(cfg, values, drops)
        return
    result = run_round(cfg, values, drops)
    summed = [
        p for p in ids if fate[p] in (None, "before_consistency_check", "before_unmask")
    ]
    expected = sum((values[p] for p in summed), np.zeros(d, dtype=np.uint64))
    assert np.array_equal(result.total, expected & np.uint64(2**32 - 1))
