"""How a lab writes a quantity: a value becomes text in the lab's style, and the quantity it means.

Every number a synthesized protocol states is written through a `Phrase`, which carries both the
text (`12,000 x g`, `5 mins`, `on ice`) and the normalised `Quantity` the extractor should recover
from it (kind, canonical unit, value or range, `approx`). The synthesizer builds its intended
ProtocolSpec from these quantities, so what a protocol *means* never depends on parsing its text.

Approximate words follow the extractor's documented conventions (agents/partner/extract/README.md):
`room temperature` / `RT` is 22 °C (20-25), `overnight` / `O/N` 16 h (12-18), `on ice` 0 °C (0-4).
A `Style` is one lab's habits of writing (unit spellings, thousands separators, rpm or x g); it
changes the text and, for rpm, the quantity kind, never the underlying value of a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mshale_fl.schemas.protocol_spec import Quantity
from mshale_fl.schemas.vocabulary import UNIT_OF_KIND, QuantityKind


@dataclass(frozen=True)
class Phrase:
    """Text as written, and the quantities it states (in order of appearance)."""

    text: str
    quantities: tuple[Quantity, ...] = ()


@dataclass(frozen=True)
class Style:
    """One lab's way of writing quantities; every choice is one the extractor reads (tests check it)."""

    degree: str = " °C"  # " °C", "°C", " ºC", " degrees C"
    second: str = "s"  # "s", "sec", "seconds"
    minute: str = "min"  # "min", "mins", "minutes"
    hour: str = "h"  # "h", "hr", "hours"
    microlitre: str = "µl"  # "µl", "µL", "ul", "μl"
    millilitre: str = "ml"  # "ml", "mL"
    times_g: str = " x g"  # " x g", " × g", " xg"
    thousands: str = ","  # "," or ""
    room_temperature: str = "room temperature"  # or "RT"
    overnight: str = "overnight"  # or "O/N"
    speed_in_rpm: bool = False  # the lab's centrifuges are set in rpm, so its protocols say rpm

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


STYLE_CHOICES: dict[str, tuple[object, ...]] = {
    "degree": (" °C", "°C", " ºC", " degrees C"),
    "second": ("s", "sec", "seconds"),
    "minute": ("min", "mins", "minutes"),
    "hour": ("h", "hr", "hours"),
    "microlitre": ("µl", "µL", "ul", "μl"),
    "millilitre": ("ml", "mL"),
    "times_g": (" x g", " × g", " xg"),
    "thousands": (",", ""),
    "room_temperature": ("room temperature", "RT"),
    "overnight": ("overnight", "O/N"),
}
"""The spellings a lab style is drawn from (`speed_in_rpm` is drawn separately, as a habit)."""

ROOM_TEMPERATURE_DEGC = (22.0, 20.0, 25.0)  # value, min, max
OVERNIGHT_S = (16 * 3600.0, 12 * 3600.0, 18 * 3600.0)
ON_ICE_DEGC = (0.0, 0.0, 4.0)

# rcf = 1.118e-5 * r_cm * rpm^2: microcentrifuge rotors (about 8.4 cm) above 3000 x g, benchtop
# swing-out rotors (about 16 cm) below, which is what a lab sets for these spins.
_RPM_FACTOR = 1.118e-5
_MICROCENTRIFUGE_RADIUS_CM = 8.4
_BENCHTOP_RADIUS_CM = 16.0

_SMALL_NUMBERS = {2: "twice", 3: "three times", 4: "four times", 5: "five times", 6: "six times"}


def quantity(kind: QuantityKind, value: float | None = None, *, low: float | None = None, high: float | None = None,
             approx: bool = False) -> Quantity:  # fmt: skip
    return Quantity(kind=kind, unit=UNIT_OF_KIND[kind], value=value, min=low, max=high, approx=approx)


def number(value: float, style: Style) -> str:
    """A number as a lab writes it: no trailing `.0`, thousands grouped in the lab's way."""
    if float(value).is_integer():
        whole = int(value)
        return f"{whole:,}".replace(",", style.thousands) if abs(whole) >= 1000 else str(whole)
    return f"{value:g}"


class Phrases:
    """Quantity phrases in one lab's style."""

    def __init__(self, style: Style) -> None:
        self.style = style

    def _n(self, value: float) -> str:
        return number(value, self.style)

    def temperature(self, degrees: float) -> Phrase:
        return Phrase(f"{self._n(degrees)}{self.style.degree}", (quantity(QuantityKind.TEMPERATURE, float(degrees)),))

    def duration(self, seconds: float) -> Phrase:
        """Seconds under 2 min (unless whole minutes), minutes under 2 h (unless whole hours), else hours."""
        if seconds < 120 and not (seconds >= 60 and seconds % 60 == 0):
            value, unit = seconds, self.style.second
        elif seconds < 2 * 3600 and not (seconds >= 3600 and seconds % 3600 == 0):
            value, unit = seconds / 60, self.style.minute
        else:
            value, unit = seconds / 3600, self.style.hour
        if value == 1 and unit.endswith("s") and len(unit) > 3:
            unit = unit[:-1]  # "1 minute", "1 hour", "1 second"
        return Phrase(f"{self._n(value)} {unit}", (quantity(QuantityKind.DURATION, float(seconds)),))

    def volume(self, microlitres: float) -> Phrase:
        if microlitres >= 1_000_000:
            litre = "l" if self.style.millilitre == "ml" else "L"
            text = f"{self._n(microlitres / 1_000_000)} {litre}"
        elif microlitres >= 1000:
            text = f"{self._n(microlitres / 1000)} {self.style.millilitre}"
        else:
            text = f"{self._n(microlitres)} {self.style.microlitre}"
        return Phrase(text, (quantity(QuantityKind.VOLUME, float(microlitres)),))

    def mass(self, micrograms: float) -> Phrase:
        text = f"{self._n(micrograms * 1000)} ng" if micrograms < 1 else f"{self._n(micrograms)} µg"
        return Phrase(text, (quantity(QuantityKind.MASS, float(micrograms)),))

    def speed(self, times_g: float) -> Phrase:
        """A centrifugation speed: x g, or the rpm that gives it when the lab writes rpm."""
        if not self.style.speed_in_rpm:
            return Phrase(f"{self._n(times_g)}{self.style.times_g}", (quantity(QuantityKind.SPEED_RCF, float(times_g)),))
        radius = _MICROCENTRIFUGE_RADIUS_CM if times_g > 3000 else _BENCHTOP_RADIUS_CM
        rpm = round(math.sqrt(times_g / (_RPM_FACTOR * radius)) / 100) * 100
        return Phrase(f"{self._n(rpm)} rpm", (quantity(QuantityKind.SPEED_RPM, float(rpm)),))

    def shaking(self, rpm: float) -> Phrase:
        return Phrase(f"{self._n(rpm)} rpm", (quantity(QuantityKind.SPEED_RPM, float(rpm)),))

    def millimolar(self, millimolar: float) -> Phrase:
        text = f"{self._n(millimolar / 1000)} M" if millimolar >= 1000 else f"{self._n(millimolar)} mM"
        return Phrase(text, (quantity(QuantityKind.CONCENTRATION_MOLAR, float(millimolar)),))

    def percent(self, percent: float) -> Phrase:
        return Phrase(f"{self._n(percent)}%", (quantity(QuantityKind.CONCENTRATION_PERCENT, float(percent)),))

    def mass_per_volume(self, mg_per_ml: float) -> Phrase:
        text = f"{self._n(mg_per_ml * 1000)} µg/ml" if mg_per_ml < 1 else f"{self._n(mg_per_ml)} mg/ml"
        return Phrase(text, (quantity(QuantityKind.CONCENTRATION_MASS_PER_VOLUME, float(mg_per_ml)),))

    def fold(self, fold: float) -> Phrase:
        return Phrase(f"{self._n(fold)}x", (quantity(QuantityKind.CONCENTRATION_FOLD, float(fold)),))

    def ratio(self, part: int, whole: int) -> Phrase:
        return Phrase(f"{part}:{whole}", (quantity(QuantityKind.RATIO, part / whole),))

    def cycles(self, count: int) -> Phrase:
        return Phrase(f"{count} cycles", (quantity(QuantityKind.CYCLES, float(count)),))

    def times(self, count: int) -> Phrase:
        """A repeat count (`three times`, `4 times`); 2 or more, since `once` states no quantity."""
        if count < 2:
            raise ValueError("a repeat count is 2 or more")
        text = _SMALL_NUMBERS.get(count, f"{count} times")
        return Phrase(text, (quantity(QuantityKind.CYCLES, float(count)),))

    def ph(self, value: float) -> Phrase:
        return Phrase(f"pH {value:.1f}", (quantity(QuantityKind.PH, float(value)),))

    def room_temperature(self) -> Phrase:
        value, low, high = ROOM_TEMPERATURE_DEGC
        return Phrase(self.style.room_temperature, (quantity(QuantityKind.TEMPERATURE, value, low=low, high=high, approx=True),))

    def overnight(self) -> Phrase:
        value, low, high = OVERNIGHT_S
        return Phrase(self.style.overnight, (quantity(QuantityKind.DURATION, value, low=low, high=high, approx=True),))

    def on_ice(self) -> Phrase:
        value, low, high = ON_ICE_DEGC
        return Phrase("on ice", (quantity(QuantityKind.TEMPERATURE, value, low=low, high=high, approx=True),))
