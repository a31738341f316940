"""Quantity recognition and normalisation: every unit form seen in real protocols, ranges, approximate words."""

from __future__ import annotations

import pytest
from mshale_fl.agents.partner.extract.quantities import find_quantities
from mshale_fl.agents.partner.extract.units import normalise
from mshale_fl.schemas.vocabulary import CanonicalUnit, QuantityKind

K = QuantityKind


def only(text: str):
    """The single quantity mention in `text` (fails if there is not exactly one)."""
    mentions = [m for m in find_quantities(text) if m.quantity is not None]
    assert len(mentions) == 1, [(m.label, text[m.start : m.end]) for m in mentions]
    return mentions[0], text[mentions[0].start : mentions[0].end]


@pytest.mark.parametrize(
    ("text", "span", "kind", "value"),
    [
        ("add 250µl buffer", "250µl", K.VOLUME, 250.0),  # micro sign U+00B5
        ("add 250μL buffer", "250μL", K.VOLUME, 250.0),  # Greek mu U+03BC
        ("add 250 ul buffer", "250 ul", K.VOLUME, 250.0),
        ("add 1.5 mL water", "1.5 mL", K.VOLUME, 1500.0),
        ("fill with 1 L medium", "1 L", K.VOLUME, 1_000_000.0),
        ("weigh 10 mg powder", "10 mg", K.MASS, 10_000.0),
        ("load 500 ng DNA", "500 ng", K.MASS, 0.5),
        ("incubate at 37°C", "37°C", K.TEMPERATURE, 37.0),
        ("incubate at 37 ˚C", "37 ˚C", K.TEMPERATURE, 37.0),  # ring above
        ("incubate at 37℃", "37℃", K.TEMPERATURE, 37.0),  # degree Celsius sign
        ("incubate at 37ºC", "37ºC", K.TEMPERATURE, 37.0),  # masculine ordinal
        ("store at -20 °C", "-20 °C", K.TEMPERATURE, -20.0),
        ("store at –80°C", "–80°C", K.TEMPERATURE, -80.0),  # en dash as minus
        ("bake at 212 °F", "212 °F", K.TEMPERATURE, 100.0),
        ("heat to 42 degrees Celsius", "42 degrees Celsius", K.TEMPERATURE, 42.0),
        ("spin for 5 min", "5 min", K.DURATION, 300.0),
        ("spin for 30 s", "30 s", K.DURATION, 30.0),
        ("grow for 2 hrs", "2 hrs", K.DURATION, 7200.0),
        ("grow for 3 days", "3 days", K.DURATION, 259_200.0),
        ("wait one hour", "one hour", K.DURATION, 3600.0),
        ("centrifuge at 14,000xg", "14,000xg", K.SPEED_RCF, 14_000.0),
        ("centrifuge at 14000 x g", "14000 x g", K.SPEED_RCF, 14_000.0),
        ("centrifuge at 12,000 × g", "12,000 × g", K.SPEED_RCF, 12_000.0),
        ("centrifuge at 10,000 g for", "10,000 g", K.SPEED_RCF, 10_000.0),
        ("centrifuge at 20 000 x g", "20 000 x g", K.SPEED_RCF, 20_000.0),
        ("spin at 13,000 rpm", "13,000 rpm", K.SPEED_RPM, 13_000.0),
        ("spin at 12 K rpm", "12 K rpm", K.SPEED_RPM, 12_000.0),
        ("shake at 250 RPM", "250 RPM", K.SPEED_RPM, 250.0),
        ("in 70% ethanol", "70%", K.CONCENTRATION_PERCENT, 70.0),
        ("with 10 mM Tris", "10 mM", K.CONCENTRATION_MOLAR, 10.0),
        ("with 1 M NaCl", "1 M", K.CONCENTRATION_MOLAR, 1000.0),
        ("with 5 µM primer", "5 µM", K.CONCENTRATION_MOLAR, 0.005),
        ("at 50 ng/µl", "50 ng/µl", K.CONCENTRATION_MASS_PER_VOLUME, 0.05),
        ("at 10 mg/mL", "10 mg/mL", K.CONCENTRATION_MASS_PER_VOLUME, 10.0),
        ("rinse in 1X PBS", "1X", K.CONCENTRATION_FOLD, 1.0),
        ("adjust to pH 8.0", "pH 8.0", K.PH, 8.0),
        ("adjust to pH7.5", "pH7.5", K.PH, 7.5),
        ("run 30 cycles of", "30 cycles", K.CYCLES, 30.0),
        ("add 2 volumes of ethanol", "2 volumes", K.RELATIVE_VOLUME, 2.0),
    ],
)
def test_unit_forms_normalise_to_the_canonical_unit(text: str, span: str, kind: QuantityKind, value: float) -> None:
    mention, found = only(text)
    assert found == span
    assert mention.quantity.kind is kind
    assert mention.quantity.value == pytest.approx(value)
    assert mention.quantity.min is None and mention.quantity.max is None
    assert mention.quantity.approx is False


def test_speed_as_rpm_and_as_times_g_stay_distinct() -> None:
    rcf, _ = only("spin at 1000 x g")
    rpm, _ = only("spin at 1000 rpm")
    assert (rcf.quantity.kind, rcf.quantity.unit) == (K.SPEED_RCF, CanonicalUnit.TIMES_G)
    assert (rpm.quantity.kind, rpm.quantity.unit) == (K.SPEED_RPM, CanonicalUnit.RPM)


@pytest.mark.parametrize(
    ("text", "span", "kind", "low", "high"),
    [
        ("incubate at 55-60°C", "55-60°C", K.TEMPERATURE, 55.0, 60.0),
        ("incubate at 55-60 C for", "55-60 C", K.TEMPERATURE, 55.0, 60.0),
        ("incubate at 60°C to 72°C", "60°C to 72°C", K.TEMPERATURE, 60.0, 72.0),
        ("store at +2 to +8 °C", "+2 to +8 °C", K.TEMPERATURE, 2.0, 8.0),
        ("incubate for 1-2 hours", "1-2 hours", K.DURATION, 3600.0, 7200.0),
        ("incubate for 5–10 minutes", "5–10 minutes", K.DURATION, 300.0, 600.0),
        ("incubate for 20 to 40 s", "20 to 40 s", K.DURATION, 20.0, 40.0),
        ("spin for 30s to 1 minute", "30s to 1 minute", K.DURATION, 30.0, 60.0),
        ("add 1-10mg tissue", "1-10mg", K.MASS, 1000.0, 10_000.0),
        ("spin at 300-400 x g", "300-400 x g", K.SPEED_RCF, 300.0, 400.0),
        ("buffer at pH 7–8.5", "pH 7–8.5", K.PH, 7.0, 8.5),
    ],
)
def test_ranges_become_min_and_max(text: str, span: str, kind: QuantityKind, low: float, high: float) -> None:
    mention, found = only(text)
    assert found == span
    assert mention.quantity.kind is kind
    assert (mention.quantity.min, mention.quantity.max) == (pytest.approx(low), pytest.approx(high))
    assert mention.quantity.value is None


@pytest.mark.parametrize(
    ("text", "span", "kind", "low", "high"),
    [
        ("incubate at RT for", "RT", K.TEMPERATURE, 20.0, 25.0),
        ("incubate at room temperature.", "room temperature", K.TEMPERATURE, 20.0, 25.0),
        ("incubate overnight at", "overnight", K.DURATION, 12 * 3600.0, 18 * 3600.0),
        ("grow O/N in LB", "O/N", K.DURATION, 12 * 3600.0, 18 * 3600.0),
        ("keep on ice until use", "ice", K.TEMPERATURE, 0.0, 4.0),
        ("wait several minutes", "several minutes", K.DURATION, 120.0, 600.0),
    ],
)
def test_words_become_approximate_values(text: str, span: str, kind: QuantityKind, low: float, high: float) -> None:
    mention, found = only(text)
    assert found == span
    assert mention.quantity.kind is kind
    assert mention.quantity.approx is True
    assert (mention.quantity.min, mention.quantity.max) == (pytest.approx(low), pytest.approx(high))


def test_a_hedge_marks_the_quantity_approximate_but_stays_out_of_the_span() -> None:
    mention, found = only("add ~500 µl water")
    assert found == "500 µl"
    assert mention.quantity.approx is True


def test_on_ice_is_labelled_as_the_wlp_gold_does_and_rt_pcr_is_not_a_temperature() -> None:
    (ice,) = find_quantities("Incubate on ice for a while")
    assert ice.label == "Location"  # the WLP gold marks "ice" as a Location
    assert not [m for m in find_quantities("Run RT-PCR with 2 RT mix") if m.label == "Temperature"]


def test_names_that_contain_numbers_are_not_quantities() -> None:
    assert find_quantities("Clone the P0s and count the F1s; use 13C glucose and HNO3") == []


@pytest.mark.parametrize(("text", "label"), [("rinse twice in 1X PBS", "Concentration"), ("wash 3x with PBS", "Numerical")])
def test_fold_concentration_and_repeat_count_are_told_apart(text: str, label: str) -> None:
    assert [m.label for m in find_quantities(text) if "x" in text[m.start : m.end].lower()] == [label]


def test_bare_g_is_a_mass_unless_it_is_a_centrifugal_force() -> None:
    mass, _ = only("dissolve 5 g agarose")
    force, _ = only("centrifuge at 500 g for")
    assert mass.label == "Amount" and mass.quantity.kind is K.MASS
    assert force.label == "Speed" and force.quantity.kind is K.SPEED_RCF


def test_normalise_rejects_unknown_units_and_rounds_conversion_noise() -> None:
    assert normalise("furlongs", 3.0) is None
    assert normalise("°F", 37.0).value == 2.77777778
    assert normalise("°C", -0.0).value == 0.0
