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


@pytest.mark.parametrize("bits", range(1, 63))
def test_vector_layout_is_the_low_bytes_of_each_little_endian_word(bits: int) -> None:
    # The packed fast paths must keep the documented layout: ceil(k/8) low bytes per element.
    width = -(-bits // 8)
    rng = np.random.default_rng(bits)
    v = rng.integers(0, 1 << bits, size=257, dtype=np.uint64)
    reference = v.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :width].tobytes()
    data = wire.encode_vector(v, bits)
    assert data == reference
    assert np.array_equal(wire.decode_vector(data, bits, 257), v)
    view = wire.decode_vector_view(data, bits, 257)
    assert np.array_equal(view.astype(np.uint64) & np.uint64((1 << bits) - 1), v)


def test_high_bits_above_k_are_not_sent() -> None:
    v = np.array([(1 << 40) | 5, (1 << 63) | 7], dtype=np.uint64)
    assert wire.decode_vector(wire.encode_vector(v, 32), 32, 2).tolist() == [5, 7]
    assert wire.decode_vector(wire.encode_vector(v, 20), 20, 2).tolist() == [5, 7]


def test_vector_view_does_not_copy_native_widths() -> None:
    data = wire.encode_vector(np.arange(1000, dtype=np.uint64), 32)
    view = wire.decode_vector_view(data, 32, 1000)
    assert view.dtype == np.dtype("<u4") and not view.flags.writeable and not view.flags.owndata
    assert view.tolist() == list(range(1000))
    unpacked = wire.decode_vector_view(wire.encode_vector(np.arange(10, dtype=np.uint64), 48), 48, 10)
    assert unpacked.dtype == np.uint64 and unpacked.tolist() == list(range(10))
    with pytest.raises(ProtocolStateError, match="bytes"):
        wire.decode_vector_view(data[:-4], 32, 1000)
