from __future__ import annotations

import os

import numpy as np
import pytest

from mshale_fl.secagg import wire
from mshale_fl.secagg.errors import ProtocolStateError
from mshale_fl.secagg.keys import KeyAdvertisement
from mshale_fl.secagg.protocol import RoundConfig, UnmaskRequest, UnmaskResponse
from mshale_fl.secagg.simulation import Dropouts, run_round


@pytest.mark.parametrize(
    ("bits", "width"), [(8, 1), (20, 3), (32, 4), (48, 6), (62, 8)]
)
def test_vectors_pack_to_k_bits_per_element(bits: int, width: int) -> None:
    rng = np.random.default_rng(bits)
    v = rng.integers(0, 1 << bits, size=1000, dtype=np.uint64)
    data = wire.encode_vector(v, bits)
    assert len(data) == 1000 * width
    assert np.array_equal(wire.decode_vector(data, bits, 1000), v)
    with pytest.raises(ProtocolStateError, match="bytes"):
        wire.decode_vector(data[:-1], bits, 1000)


def test_messages_round_trip() -> None:
    ad = KeyAdvertisement("partnér-1", os.urandom(32), os.urandom(32), os.urandom(64))
    assert wire.decode_advertisement(wire.encode_advertisement(ad)) == ad
    request = UnmaskRequest(
        frozenset({"a", "b", "c"}), frozenset({"d"}), {"a": b"sig", "b": b""}
    )
    assert wire.decode_unmask_request(wire.encode_unmask_request(request)) == request
    response = UnmaskResponse({"a": b"1", "b": b"22"}, {"d": b"333"})
    assert (
        wire.decode_unmask_response(wire.encode_unmask_response(response)) == response
    )
    assert wire.decode_bytes_map(wire.encode_bytes_map({})) == {}


def test_malformed_messages_raise_protocol_errors() -> None:
    good = wire.encode_advertisement(KeyAdvertisement("p", b"c", b"s", b"sig"))
    for bad in (good[:-1], good[:2], wire.pack_fields([b"p", b"c"])):
        with pytest.raises(ProtocolStateError):
            wire.decode_advertisement(bad)
    with pytest.raises(ProtocolStateError, match="twice"):
        wire.decode_bytes_map(wire.pack_fields([b"a", b"1", b"a", b"2"]))
    with pytest.raises(ProtocolStateError, match="UTF-8"):
        wire.decode_bytes_map(wire.pack_fields([b"\xff", b"1"]))


def test_round_over_the_wire_counts_bytes() -> None:
    ids = tuple(f"p{i}" for i in range(6))
    d = 1000
    cfg = RoundConfig(b"wire", ids, 3, d, 32)
    values = {p: np.full(d, i, dtype=np.uint64) for i, p in enumerate(ids)}
    result = run_round(cfg, values, Dropouts(before_masked_input={"p5"}))
    assert np.array_equal(result.total, np.full(d, 0 + 1 + 2 + 3 + 4, dtype=np.uint64))
    for p in ids[:5]:
        # The masked vector dominates the upload: 4 bytes per element at k = 32.
        assert 4 * d < result.bytes_uploaded[p] < 4 * d + 4000
    assert result.bytes_uploaded["p5"] < 4 * d  # it dropped before sending its vector
