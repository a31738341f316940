"""How a number becomes a coarse feature value: bins, capped count levels and rounded fractions.

Every value the featurizer emits is 0, 1 or a multiple of 1/4 or 1/8, so it is exact in float32
and in decimal JSON, and a validator can check that a vector carries nothing finer than its
layout allows (`on_grid`). Exact quantities and exact counts never reach a vector: a quantity only
chooses a bin, a count only chooses a level, a share of steps is rounded to eighths.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from mshale_fl.schemas.protocol_spec import Quantity

SIGNIFICANT_DIGITS = 6
"""Values are rounded to this many significant digits before binning, so float noise from unit
conversion (0.1 mL -> 100.00000000000001 uL) cannot move a value across a bin edge."""

FRACTION_DENOMINATOR = 8
"""Shares of steps are rounded to the nearest 1/8."""


def representative(quantity: Quantity) -> float:
    """The one number a quantity is binned by: its value, else the middle of its range, else its one bound."""
    if quantity.value is not None:
        return quantity.value
    if quantity.min is not None and quantity.max is not None:
        return quantity.min / 2 + quantity.max / 2  # halves first: no overflow near the float limit
    bound = quantity.min if quantity.min is not None else quantity.max
    assert bound is not None  # a Quantity always has a value or a bound (schema invariant)
    return bound


def snap(value: float) -> float:
    """`value` rounded to SIGNIFICANT_DIGITS significant digits."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def bin_index(value: float, edges: Sequence[float]) -> int:
    """Index of the half-open bin [edges[i-1], edges[i]) holding `value`; 0 below the first edge,
    len(edges) at or above the last."""
    return bisect_right(edges, snap(value))


def count_level(count: int, thresholds: Sequence[int]) -> float:
    """A count as a level in [0, 1]: the highest threshold it reaches, as a share of the last one's
    position. With thresholds (0, 1, 2, 4, 8): 0 -> 0, 1 -> 1/4, 2-3 -> 1/2, 4-7 -> 3/4, 8+ -> 1, so
    every count from the cap upwards gives the same value."""
    level = bisect_right(thresholds, count) - 1
    return max(level, 0) / (len(thresholds) - 1)


def fraction(part: int, whole: int) -> float:
    """part / whole rounded half up to the nearest 1/FRACTION_DENOMINATOR (0 when whole is 0).

    Integer arithmetic, so a share exactly between two eighths always rounds the same way."""
    if whole <= 0:
        return 0.0
    eighths = (2 * FRACTION_DENOMINATOR * part + whole) // (2 * whole)
    return eighths / FRACTION_DENOMINATOR


def on_grid(value: float, steps: int, tolerance: float = 1e-6) -> bool:
    """Whether `value` is in [0, 1] and a multiple of 1/steps (steps=1: exactly 0 or 1)."""
    if not 0.0 <= value <= 1.0:
        return False
    scaled = value * steps
    return abs(scaled - round(scaled)) <= tolerance * steps
