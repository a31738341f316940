"""Byte encodings of the stage messages, for the transport (Flower messages, later) and byte counts.

Every message is a sequence of length-prefixed fields (4-byte big-endian length), so no field can be
confused with the next. Masked vectors are sent as ceil(k/8) little-endian bytes per element rather
than 8, since only the low k bits are ever set. Malformed input raises `ProtocolStateError`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mshale_fl.secagg.errors import ProtocolStateError
from mshale_fl.secagg.keys import KeyAdvertisement
from mshale_fl.secagg.prg import modulus_mask
from mshale_fl.secagg.protocol import UnmaskRequest, UnmaskResponse


def pack_fields(fields: list[bytes]) -> bytes:
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def unpack_fields(data: bytes) -> list[bytes]:
    fields, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ProtocolStateError("a secure-aggregation message is truncated")
        size = int.from_bytes(data[pos : pos + 4], "big")
        if pos + 4 + size > len(data):
            raise ProtocolStateError("a secure-aggregation message is truncated")
        fields.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return fields


def _decode_text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ProtocolStateError("a partner id in a message is not UTF-8") from None


def encode_advertisement(ad: KeyAdvertisement) -> bytes:
    return pack_fields(
        [
            ad.partner_id.encode(),
            ad.encryption_public_key,
            ad.masking_public_key,
            ad.signature,
        ]
    )


def decode_advertisement(data: bytes) -> KeyAdvertisement:
    fields = unpack_fields(data)
    if len(fields) != 4:
        raise ProtocolStateError("a key advertisement must have 4 fields")
    return KeyAdvertisement(_decode_text(fields[0]), fields[1], fields[2], fields[3])


def encode_bytes_map(items: Mapping[str, bytes]) -> bytes:
    """A partner -> bytes map (outboxes, inboxes, confirmations, share sets), sorted for determinism."""
    fields: list[bytes] = []
    for key in sorted(items):
        fields += [key.encode(), items[key]]
    return pack_fields(fields)


def decode_bytes_map(data: bytes) -> dict[str, bytes]:
    fields = unpack_fields(data)
    if len(fields) % 2:
        raise ProtocolStateError("a partner map has an odd number of fields")
    result = {_decode_text(fields[i]): fields[i + 1] for i in range(0, len(fields), 2)}
    if len(result) * 2 != len(fields):
        raise ProtocolStateError("a partner map names a partner twice")
    return result


_NATIVE_WIDTHS = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}


def _packed_dtype(width: int) -> np.dtype:
    """A record of `width` bytes made of 4-, 2- and 1-byte little-endian fields, lowest bytes first.

    Casting into and out of these fields packs k-bit elements at ceil(k/8) bytes with whole-array
    operations, about four times faster than copying a strided byte view.
    """
    fields, offset = [], 0
    for size in (4, 2, 1):
        while width - offset >= size:
            fields.append((f"b{offset}", f"<u{size}"))
            offset += size
    return np.dtype(fields)


def encode_vector(vector: np.ndarray, modulus_bits: int) -> bytes:
    width = -(-modulus_bits // 8)
    words = np.asarray(vector, dtype=np.uint64) & modulus_mask(modulus_bits)
    if width in _NATIVE_WIDTHS:
        # One narrowing cast (only the low bytes are set) instead of a strided byte copy.
        return words.astype(_NATIVE_WIDTHS[width]).tobytes()
    packed_dtype = _packed_dtype(width)
    packed = np.empty(words.size, dtype=packed_dtype)
    for name in packed_dtype.names:
        shift = np.uint64(8 * int(name[1:]))
        packed[name] = words >> shift if shift else words  # the cast keeps the field's low bytes
    return packed.tobytes()


def decode_vector(data: bytes, modulus_bits: int, length: int) -> np.ndarray:
    width = -(-modulus_bits // 8)
    if len(data) != width * length:
        raise ProtocolStateError(
            f"a masked vector has {len(data)} bytes, expected {width * length}"
        )
    if width in _NATIVE_WIDTHS:
        words = np.frombuffer(data, dtype=_NATIVE_WIDTHS[width]).astype(np.uint64)
    else:
        packed = np.frombuffer(data, dtype=_packed_dtype(width))
        words = np.zeros(length, dtype=np.uint64)
        for name in packed.dtype.names:
            field = packed[name].astype(np.uint64)
            field <<= np.uint64(8 * int(name[1:]))
            words |= field
    words &= modulus_mask(modulus_bits)
    return words


def decode_vector_view(data: bytes, modulus_bits: int, length: int) -> np.ndarray:
    """Like `decode_vector`, without copying when ceil(k/8) is 1, 2, 4 or 8 bytes.

    Returns a read-only view of `data` as uint8/16/32/64 (the server sums these modulo 2^k, so the
    bits above k a sender may have set do not matter there; mask with `modulus_mask` before reading
    values). Other widths are unpacked into a new uint64 array as `decode_vector` does.
    """
    width = -(-modulus_bits // 8)
    if width not in _NATIVE_WIDTHS:
        return decode_vector(data, modulus_bits, length)
    if len(data) != width * length:
        raise ProtocolStateError(
            f"a masked vector has {len(data)} bytes, expected {width * length}"
        )
    return np.frombuffer(data, dtype=_NATIVE_WIDTHS[width])


def _encode_ids(ids: frozenset[str]) -> bytes:
    return pack_fields([p.encode() for p in sorted(ids)])


def _decode_ids(data: bytes) -> frozenset[str]:
    return frozenset(_decode_text(f) for f in unpack_fields(data))


def encode_unmask_request(request: UnmaskRequest) -> bytes:
    return pack_fields(
        [
            _encode_ids(request.survivors),
            _encode_ids(request.dropped),
            encode_bytes_map(request.confirmations),
        ]
    )


def decode_unmask_request(data: bytes) -> UnmaskRequest:
    fields = unpack_fields(data)
    if len(fields) != 3:
        raise ProtocolStateError("an unmask request must have 3 fields")
    return UnmaskRequest(
        survivors=_decode_ids(fields[0]),
        dropped=_decode_ids(fields[1]),
        confirmations=decode_bytes_map(fields[2]),
    )


def encode_unmask_response(response: UnmaskResponse) -> bytes:
    return pack_fields(
        [
            encode_bytes_map(response.self_mask_shares),
            encode_bytes_map(response.masking_key_shares),
        ]
    )


def decode_unmask_response(data: bytes) -> UnmaskResponse:
    fields = unpack_fields(data)
    if len(fields) != 2:
        raise ProtocolStateError("an unmask response must have 2 fields")
    return UnmaskResponse(
        self_mask_shares=decode_bytes_map(fields[0]),
        masking_key_shares=decode_bytes_map(fields[1]),
    )
