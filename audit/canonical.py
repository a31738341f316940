"""Canonical JSON in the style of RFC 8785 (JCS): the one byte string a JSON value hashes as.

Records are hashed into the Merkle tree, so two parties that hold the same value must produce
the same bytes without talking to each other. JCS fixes everything that plain `json.dumps`
leaves open: object members sorted by their UTF-16 code units, no insignificant whitespace,
UTF-8 output, strings escaped minimally, and numbers written the way ECMAScript's
`Number.prototype.toString` writes them (so `1e-05` is `0.00001`, `2.0` is `2`).

Only the JSON data model is accepted: dict (string keys), list/tuple, str, int, float, bool, None.
NaN, infinities and integers that no IEEE-754 double represents exactly are refused, since JCS
cannot represent them faithfully.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["CanonicalJSONError", "canonical_json", "is_canonical_json"]

_MAX_SAFE_INTEGER = 2**53


class CanonicalJSONError(ValueError):
    """The value cannot be written as canonical JSON (or the bytes are not canonical JSON)."""


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 encoding of `value`."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts).encode("utf-8")


def is_canonical_json(data: bytes) -> bool:
    """True if `data` parses as JSON and re-encodes to exactly the same bytes."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant, parse_int=_json_int)
        return canonical_json(value) == data
    except (UnicodeDecodeError, ValueError):
        return False


def _json_int(text: str) -> int | float:
    # A JSON number is a double: beyond 2**53 an integer literal denotes the nearest double.
    value = int(text)
    return value if abs(value) <= _MAX_SAFE_INTEGER else float(value)


def _reject_constant(name: str) -> Any:
    raise CanonicalJSONError(f"{name} is not JSON")


# json.dumps escapes exactly what JCS requires (", \\, control characters as \b \f \n \r \t or
# \u00XX) when ensure_ascii is off; lone surrogates cannot be encoded in UTF-8 and are refused.
def _string(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalJSONError("string holds a lone surrogate, which UTF-8 cannot encode") from exc
    return json.dumps(text, ensure_ascii=False)


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        if abs(value) <= _MAX_SAFE_INTEGER:
            out.append(str(value))
        elif abs(value) < 2**1024 and int(float(value)) == value:
            out.append(_number(float(value)))  # JSON numbers are doubles; this one is exact
        else:
            raise CanonicalJSONError(f"integer {value} cannot be represented exactly as an IEEE-754 double")
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalJSONError(f"object keys must be strings, got {type(key).__name__}")
        out.append("{")
        for position, key in enumerate(sorted(value, key=_utf16_units)):
            if position:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise CanonicalJSONError(f"{type(value).__name__} is not a JSON type")


def _utf16_units(key: str) -> bytes:
    # RFC 8785 3.2.3: members are sorted by the UTF-16 code units of their names.
    return key.encode("utf-16-be", errors="surrogatepass")


def _number(value: float) -> str:
    """ECMAScript Number::toString for a finite double (RFC 8785 3.2.2.3)."""
    if not math.isfinite(value):
        raise CanonicalJSONError(f"{value} is not a JSON number")
    if value == 0:
        return "0"  # also -0.0
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digit string that round-trips, as ECMAScript requires;
    # only the layout (where the point and the exponent go) differs.
    mantissa, _, exponent_text = repr(abs(value)).partition("e")
    exponent = int(exponent_text) if exponent_text else 0
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # n: the position of the decimal point relative to the start of `digits`.
    n = len(whole.lstrip("0")) + exponent if whole.strip("0") else exponent - (len(fraction) - len(fraction.lstrip("0")))
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        exp = n - 1
        exp_text = f"e+{exp}" if exp >= 0 else f"e-{-exp}"
        text = (digits[0] + ("." + digits[1:] if k > 1 else "")) + exp_text
    return sign + text
