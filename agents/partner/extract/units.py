"""Quantity normalisation: a number (or range) and a unit as written -> a canonical `Quantity`.

Unit spellings from real protocols (`µl`, `μL`, `ul`, `°C`, `˚C`, `℃`, `hrs`, `O/N`, `x g`...) are
first mapped to one pint unit name by a lookup table; pint then converts to the one canonical unit
of each quantity kind (`vocabulary.UNIT_OF_KIND`). Relative units that pint cannot know (`x g`,
`X` fold, ratios, `volumes`, pH, cycles) are kept as they are. Values are rounded to nine
significant digits so that conversion noise (37 °F -> 2.7777777777778283 °C) never makes two runs
or two machines disagree.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata

import pint
from mshale_fl.schemas.protocol_spec import Quantity
from mshale_fl.schemas.vocabulary import UNIT_OF_KIND, QuantityKind

# pint's canonical spelling of each kind's canonical unit.
_PINT_TARGET: dict[QuantityKind, str] = {
    QuantityKind.TEMPERATURE: "degC",
    QuantityKind.DURATION: "second",
    QuantityKind.VOLUME: "microliter",
    QuantityKind.MASS: "microgram",
    QuantityKind.CONCENTRATION_MOLAR: "millimolar",
    QuantityKind.CONCENTRATION_MASS_PER_VOLUME: "milligram / milliliter",
    QuantityKind.ENZYME_ACTIVITY: "enzyme_unit",
    QuantityKind.SPEED_RPM: "revolutions_per_minute",
}

# Written unit (after `unit_key`) -> (kind, pint expression or None when the unit is already canonical).
_UNITS: dict[str, tuple[QuantityKind, str | None]] = {}


def _register(kind: QuantityKind, pint_name: str | None, *spellings: str) -> None:
    for spelling in spellings:
        _UNITS[spelling] = (kind, pint_name)


_register(QuantityKind.TEMPERATURE, "degC", "c", "degc", "degreesc", "degreec", "degreecelsius", "degreescelsius",
          "celsius", "deg", "degree", "degrees", "")
_register(QuantityKind.TEMPERATURE, "degF", "f", "degf", "degreesf", "degreef", "fahrenheit", "degreesfahrenheit")
_register(QuantityKind.DURATION, "millisecond", "ms", "millisecond", "milliseconds")
_register(QuantityKind.DURATION, "second", "s", "sec", "secs", "second", "seconds", "sec.")
_register(QuantityKind.DURATION, "minute", "min", "mins", "minute", "minutes", "min.")
_register(QuantityKind.DURATION, "hour", "h", "hr", "hrs", "hour", "hours", "hr.", "hrs.")
_register(QuantityKind.DURATION, "day", "d", "day", "days")
_register(QuantityKind.DURATION, "week", "wk", "wks", "week", "weeks")
_register(QuantityKind.DURATION, "month", "month", "months", "mo")
_register(QuantityKind.DURATION, "year", "year", "years", "yr", "yrs")
_register(QuantityKind.VOLUME, "microliter", "ul", "microliter", "microliters", "microlitre", "microlitres")
_register(QuantityKind.VOLUME, "milliliter", "ml", "mls", "milliliter", "milliliters", "millilitre", "millilitres", "cc")
_register(QuantityKind.VOLUME, "liter", "l", "liter", "liters", "litre", "litres")
_register(QuantityKind.VOLUME, "nanoliter", "nl", "nanoliter", "nanoliters")
_register(QuantityKind.MASS, "gram", "g", "gram", "grams", "gr")
_register(QuantityKind.MASS, "milligram", "mg", "milligram", "milligrams")
_register(QuantityKind.MASS, "microgram", "ug", "mcg", "microgram", "micrograms")
_register(QuantityKind.MASS, "nanogram", "ng", "nanogram", "nanograms")
_register(QuantityKind.MASS, "picogram", "pg", "picogram", "picograms")
_register(QuantityKind.MASS, "kilogram", "kg", "kilogram", "kilograms")
_register(QuantityKind.RELATIVE_VOLUME, None, "volume", "volumes", "vol", "vols", "vol.", "vols.")
_register(QuantityKind.CONCENTRATION_MOLAR, "molar", "m", "molar", "mol/l")
_register(QuantityKind.CONCENTRATION_MOLAR, "millimolar", "mm", "millimolar", "mmol/l")
_register(QuantityKind.CONCENTRATION_MOLAR, "micromolar", "um", "micromolar", "umol/l")
_register(QuantityKind.CONCENTRATION_MOLAR, "nanomolar", "nm", "nanomolar", "nmol/l")
_register(QuantityKind.CONCENTRATION_MOLAR, "picomolar", "pm", "picomolar")
_register(QuantityKind.CONCENTRATION_PERCENT, None, "%", "percent", "%w/v", "%v/v", "%w/w", "%(w/v)", "%(v/v)",
          "%(w/w)")
_register(QuantityKind.CONCENTRATION_FOLD, None, "x", "×", "fold", "-fold")
_register(QuantityKind.ENZYME_ACTIVITY, "enzyme_unit", "u", "units", "unit", "iu")
_register(QuantityKind.SPEED_RPM, "revolutions_per_minute", "rpm")
_register(QuantityKind.SPEED_RPM, "kilo_rpm", "krpm", "k")
_register(QuantityKind.SPEED_RCF, None, "xg", "×g", "rcf", "g-force", "kxg", "k×g", "krcf")
_register(QuantityKind.PH, None, "ph")
_register(QuantityKind.CYCLES, None, "cycles", "cycle", "times", "x-times", "rounds", "repeats")

_MASS = {"g": "gram", "mg": "milligram", "ug": "microgram", "ng": "nanogram",
                   "pg": "picogram", "kg": "kilogram"}
_VOLUME = {"l": "liter", "ml": "milliliter", "ul": "microliter", "nl": "nanoliter",
           "dl": "deciliter"}

# The micro sign comes in three spellings in the wild (µ U+00B5, μ U+03BC, and u): all become u.
_MICRO = str.maketrans({"μ": "u", "\u00b5": "u"})
_DEGREE_SIGNS = re.compile(r"[°º˚⁰]")


@functools.cache
def registry() -> pint.UnitRegistry:
    """One registry per process (building it takes ~0.4 s); extended with the lab's own units."""
    units = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    units.define("kilo_rpm = 1000 * revolutions_per_minute")
    return units


def unit_key(written: str) -> str:
    """Fold a written unit to a lookup key: one micro sign, no degree signs or spaces, NFKC, lower case."""
    text = _DEGREE_SIGNS.sub("", written).replace("℃", "C").replace("℉", "F")
    text = re.sub(r"\s+", "", unicodedata.normalize("NFKC", text).translate(_MICRO).lower())
    return "c" if text == "oc" else text


def _mass_per_volume(key: str) -> str | None:
    """`mg/ml`, `ng/µl`, `g/l` -> a pint expression, or None."""
    numerator, slash, denominator = key.partition("/")
    if slash and numerator in _MASS and denominator in _VOLUME:
        return f"{_MASS[numerator]} / {_VOLUME[denominator]}"
    return None


def kind_of_unit(written: str) -> QuantityKind | None:
    """The quantity kind a written unit measures, or None if it is not a unit we normalise."""
    key = unit_key(written)
    if key in _UNITS:
        return _UNITS[key][0]
    if _mass_per_volume(key):
        return QuantityKind.CONCENTRATION_MASS_PER_VOLUME
    return None


@functools.lru_cache(maxsize=4096)
def _convert(value: float, source: str, target: str) -> float:
    return float(registry().Quantity(value, source).to(target).magnitude)


def _significant(value: float) -> float:
    return float(f"{value:.9g}") + 0.0  # + 0.0 turns -0.0 into 0.0


def normalise(
    written_unit: str,
    value: float | None = None,
    low: float | None = None,
    high: float | None = None,
    *,
    approx: bool = False,
    kind: QuantityKind | None = None,
) -> Quantity | None:
    """A canonical Quantity from a number or a range and a written unit; None if the unit is unknown.

    `kind` overrides the unit's own kind where the grammar knows better (`g` after a centrifuge
    is a relative centrifugal force, not a mass).
    """
    key = unit_key(written_unit)
    kind = kind or kind_of_unit(written_unit)
    if kind is None or (value is None and low is None and high is None):
        return None
    target = _PINT_TARGET.get(kind)
    source = _mass_per_volume(key) if kind is QuantityKind.CONCENTRATION_MASS_PER_VOLUME else None
    if source is None and key in _UNITS and _UNITS[key][0] is kind:
        source = _UNITS[key][1]
    scale = 1000.0 if kind is QuantityKind.SPEED_RCF and key.startswith("k") else 1.0
    numbers = [value, low, high]
    if target is not None:
        if source is None:
            return None
        numbers = [None if x is None else _convert(x, source, target) for x in numbers]
    value, low, high = (None if x is None else _significant(x * scale) for x in numbers)
    if any(x is not None and not math.isfinite(x) for x in (value, low, high)):
        return None  # a number beyond the float range ("1" and 400 zeros) is no quantity, and no crash
    if low is not None and high is not None and low > high:
        low, high = high, low
    return Quantity(kind=kind, unit=UNIT_OF_KIND[kind], value=value, min=low, max=high, approx=approx)
