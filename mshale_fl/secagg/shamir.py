"""t-of-n Shamir secret sharing of byte strings over GF(2^127 - 1).

A byte secret is cut into 15-byte chunks (each < 2^120 < p), and every chunk is shared with its own
random polynomial of degree t - 1; one `Share` carries the evaluations of all chunk polynomials at the
same x. A Mersenne prime keeps the arithmetic simple and leaves ample room above the chunks.
"""

from __future__ import annotations

import functools
import operator
import secrets
from dataclasses import dataclass

from mshale_fl.secagg.errors import ShareError

PRIME = 2**127 - 1
CHUNK_BYTES = 15
_ELEMENT_BYTES = 16


@dataclass(frozen=True)
class Share:
    """The evaluations at `x` of the polynomials sharing one secret of `secret_length` bytes."""

    x: int
    values: tuple[int, ...]
    secret_length: int
    threshold: int

    def to_bytes(self) -> bytes:
        header = (
            self.x.to_bytes(4, "big")
            + self.secret_length.to_bytes(4, "big")
            + self.threshold.to_bytes(4, "big")
        )
        return header + b"".join(v.to_bytes(_ELEMENT_BYTES, "big") for v in self.values)

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        if len(data) < 12 or (len(data) - 12) % _ELEMENT_BYTES:
            raise ShareError(
                f"a serialised share has a malformed length ({len(data)} bytes)"
            )
        x = int.from_bytes(data[0:4], "big")
        length = int.from_bytes(data[4:8], "big")
        threshold = int.from_bytes(data[8:12], "big")
        body = data[12:]
        values = tuple(
            int.from_bytes(body[i : i + _ELEMENT_BYTES], "big")
            for i in range(0, len(body), _ELEMENT_BYTES)
        )
        if len(values) != _chunk_count(length):
            raise ShareError(
                "a serialised share does not match its declared secret length"
            )
        return cls(x=x, values=values, secret_length=length, threshold=threshold)


def _chunk_count(secret_length: int) -> int:
    return max(1, -(-secret_length // CHUNK_BYTES))


def split_secret(secret: bytes, threshold: int, xs: list[int] | range) -> list[Share]:
    """Share `secret` so that any `threshold` of the shares at the given x coordinates recover it."""
    xs = list(xs)
    if threshold < 1:
        raise ValueError(f"the threshold must be at least 1, not {threshold}")
    if threshold > len(xs):
        raise ValueError(
            f"a threshold of {threshold} needs at least that many shares, not {len(xs)}"
        )
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share x coordinates must be distinct and in 1..p-1")
    chunks = [
        int.from_bytes(secret[i : i + CHUNK_BYTES], "big")
        for i in range(0, max(len(secret), 1), CHUNK_BYTES)
    ]
    # One polynomial per chunk: constant term is the chunk, other coefficients uniform in GF(p).
    polys = [
        [c] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)] for c in chunks
    ]
    shares = []
    for x in xs:
        powers = _powers(x, threshold)
        values = tuple(_evaluate(p, powers) for p in polys)
        shares.append(Share(x=x, values=values, secret_length=len(secret), threshold=threshold))
    return shares


def _powers(x: int, count: int) -> list[int]:
    """1, x, x^2, ... x^(count-1) mod p, shared by every chunk polynomial evaluated at x."""
    powers = [1] * count
    for i in range(1, count):
        powers[i] = powers[i - 1] * x % PRIME
    return powers


def _evaluate(coefficients: list[int], powers: list[int]) -> int:
    # One reduction after the dot product instead of one per Horner step: the products are below
    # 2^254 and their sum stays a small multiple of that, which Python's integers handle natively.
    return sum(map(operator.mul, coefficients, powers)) % PRIME


@functools.lru_cache(maxsize=4096)
def _lagrange_at(xs: tuple[int, ...], target: int) -> tuple[int, ...]:
    """Lagrange basis weights for interpolating at `target` from points at `xs`.

    Cached: a server rebuilding n secrets usually holds shares from the same responders for each,
    so one round needs only a few distinct (xs, target) pairs; the weights are public values.
    One modular inversion of the product of denominators replaces one inversion per point.
    """
    numerators, denominators = [], []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (target - xj) % PRIME
                den = den * (xi - xj) % PRIME
        numerators.append(num)
        denominators.append(den)
    # Batch inversion (Montgomery's trick): prefix products, one pow(), then walk back.
    prefix = [1]
    for den in denominators:
        prefix.append(prefix[-1] * den % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    weights = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        weights[i] = numerators[i] * (inverse * prefix[i] % PRIME) % PRIME
        inverse = inverse * denominators[i] % PRIME
    return tuple(weights)


def reconstruct_secret(shares: list[Share]) -> bytes:
    """Recover the secret from at least `threshold` shares.

    Raises `ShareError` when there are too few shares, duplicated x coordinates, shares of different
    secrets, or extra shares that do not lie on the interpolated polynomial (a corrupted share).
    """
    if not shares:
        raise ShareError("no shares given")
    first = shares[0]
    if any(
        (s.secret_length, s.threshold, len(s.values))
        != (first.secret_length, first.threshold, len(first.values))
        for s in shares
    ):
        raise ShareError(
            "the shares belong to different secrets (lengths or thresholds differ)"
        )
    xs = [s.x for s in shares]
    if len(set(xs)) != len(xs):
        raise ShareError("two shares have the same x coordinate")
    t = first.threshold
    if len(shares) < t:
        raise ShareError(
            f"{len(shares)} shares cannot reconstruct a secret with threshold {t}"
        )
    base, extra = shares[:t], shares[t:]
    base_xs = tuple(s.x for s in base)
    weights0 = _lagrange_at(base_xs, 0)
    chunks = [
        sum(w * s.values[k] for w, s in zip(weights0, base, strict=True)) % PRIME
        for k in range(len(first.values))
    ]
    for s in extra:
        weights = _lagrange_at(base_xs, s.x)
        for k, value in enumerate(s.values):
            expected = (
                sum(w * b.values[k] for w, b in zip(weights, base, strict=True)) % PRIME
            )
            if expected != value:
                raise ShareError(
                    f"the share at x={s.x} is inconsistent with the others"
                )
    return _chunks_to_bytes(chunks, first.secret_length)


def _chunks_to_bytes(chunks: list[int], length: int) -> bytes:
    out = bytearray()
    for i, chunk in enumerate(chunks):
        size = min(CHUNK_BYTES, length - i * CHUNK_BYTES)
        if size <= 0:
            break
        if chunk >= 1 << (8 * size):
            raise ShareError(
                "the reconstructed value does not fit the secret (corrupted shares)"
            )
        out += chunk.to_bytes(size, "big")
    if len(out) != length:
        raise ShareError("the reconstructed secret has the wrong length")
    return bytes(out)
