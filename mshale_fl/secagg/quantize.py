"""Clip, weight and quantise a float update into Z_{2^k}, and turn the masked sum back into floats.

Each coordinate is clipped to [-clip, clip], multiplied by the partner's number of examples and by a
public `scale`, rounded to an integer and stored in two's complement modulo 2^k. The number of
examples is appended as one more element, so the server learns only the total, under the same mask.
`scale` is chosen so that the sum over the largest cohort with the largest weights cannot wrap around
2^k: |sum| <= max_partners * max_examples * clip * scale + max_partners < 2^(k-1).
DP noise, when used, is added by the partner before this step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mshale_fl.secagg.prg import modulus_mask


@dataclass(frozen=True)
class QuantizationConfig:
    """Public parameters every partner of a round and the server share."""

    modulus_bits: int = 48
    clip: float = 1.0
    max_examples: int = 100_000
    max_partners: int = 100
    stochastic_rounding: bool = True
    # Optional L2 bound applied before the per-coordinate clip (as in DP-style norm clipping); the
    # per-coordinate clip is what guarantees the sum cannot wrap.
    l2_clip: float | None = None

    def __post_init__(self) -> None:
        modulus_mask(self.modulus_bits)  # validates the range
        if self.l2_clip is not None and self.l2_clip <= 0:
            raise ValueError("l2_clip must be positive when set")
        if self.clip <= 0 or self.max_examples < 1 or self.max_partners < 1:
            raise ValueError("clip, max_examples and max_partners must be positive")
        if self.max_partners * self.max_examples >= 1 << (self.modulus_bits - 1):
            raise ValueError(
                f"{self.modulus_bits}-bit elements cannot hold {self.max_partners} partners x "
                f"{self.max_examples} examples; raise modulus_bits or lower the bounds"
            )
        if self.scale <= 0:
            raise ValueError(
                "no room is left for the update values; raise modulus_bits"
            )

    @property
    def scale(self) -> float:
        headroom = (1 << (self.modulus_bits - 1)) - 1 - self.max_partners
        return headroom / (self.max_partners * self.max_examples * self.clip)

    def resolution(self, total_examples: int) -> float:
        """The worst-case error per coordinate of the dequantised weighted mean."""
        n = self.max_partners
        return n / (self.scale * max(total_examples, 1))


def quantize_update(
    update: np.ndarray,
    num_examples: int,
    config: QuantizationConfig,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The update as a uint64 vector of length d + 1 in Z_{2^k}; the last element is num_examples."""
    if not 0 <= num_examples <= config.max_examples:
        raise ValueError(
            f"num_examples must be in 0..{config.max_examples}, not {num_examples}"
        )
    values = np.asarray(update, dtype=np.float64).ravel()
    if config.l2_clip is not None:
        norm = float(np.linalg.norm(values))
        if norm > config.l2_clip:
            values = values * (config.l2_clip / norm)
    # One working array, updated in place: at a million coordinates every temporary is 8 MB.
    work = np.clip(values, -config.clip, config.clip)
    if not np.all(np.isfinite(work)):
        raise ValueError("the update contains NaN (or, with l2_clip, infinite) values")
    work *= num_examples * config.scale
    if config.stochastic_rounding:
        # Unbiased: rounds up with probability equal to the fractional part. The generator is seeded
        # from the OS; this randomness only affects rounding, never the masks.
        rng = rng or np.random.default_rng()
        work += rng.random(work.shape)
        np.floor(work, out=work)
    else:
        np.rint(work, out=work)
    encoded = np.empty(values.size + 1, dtype=np.uint64)
    encoded[:-1].view(np.int64)[:] = work  # integral already; two's complement via the int64 view
    encoded[-1] = np.uint64(num_examples)
    encoded &= modulus_mask(config.modulus_bits)
    return encoded


def to_signed(vector: np.ndarray, modulus_bits: int) -> np.ndarray:
    """Interpret elements of Z_{2^k} as two's-complement integers in [-2^(k-1), 2^(k-1))."""
    v = np.asarray(vector, dtype=np.uint64) & modulus_mask(modulus_bits)
    signed = v.astype(np.int64)
    return np.where(
        signed >= 1 << (modulus_bits - 1), signed - (1 << modulus_bits), signed
    )


@dataclass(frozen=True)
class AggregatedUpdate:
    weighted_sum: np.ndarray
    total_examples: int

    @property
    def weighted_mean(self) -> np.ndarray:
        if self.total_examples == 0:
            raise ValueError("no examples were aggregated, so there is no mean")
        return self.weighted_sum / self.total_examples


def dequantize_sum(vector: np.ndarray, config: QuantizationConfig) -> AggregatedUpdate:
    """Turn the unmasked modular sum into the float sum of example-weighted updates."""
    signed = to_signed(vector, config.modulus_bits)
    return AggregatedUpdate(
        weighted_sum=signed[:-1].astype(np.float64) / config.scale,
        total_examples=int(signed[-1]),
    )
