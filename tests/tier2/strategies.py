"""Hypothesis strategies for valid ProtocolSpecs, drawn from the closed vocabularies."""

from __future__ import annotations

from hypothesis import strategies as st
from mshale_fl.schemas.protocol_spec import MAX_QUANTITIES_PER_STEP, ProtocolSpec, Quantity, Step
from mshale_fl.schemas.vocabulary import (
    UNIT_OF_KIND,
    Domain,
    EquipmentClass,
    LabwareClass,
    Operation,
    Organism,
    QuantityKind,
    ReagentClass,
)

HASH = "ab" * 32
finite = st.floats(allow_nan=False, allow_infinity=False)
# mostly lab-sized numbers, sometimes anything finite (including the float limits)
numbers = st.one_of(st.floats(min_value=-100, max_value=1e7, allow_nan=False), finite)


@st.composite
def quantities(draw, kinds=st.sampled_from(QuantityKind)) -> Quantity:
    kind = draw(kinds)
    shape = draw(st.sampled_from(("value", "range", "value_and_range", "min_only", "max_only")))
    a, b = sorted((draw(numbers), draw(numbers)))
    fields: dict = {}
    if shape in ("value", "value_and_range"):
        fields["value"] = draw(numbers)
    if shape in ("range", "value_and_range"):
        fields["min"], fields["max"] = a, b
    if shape == "min_only":
        fields["min"] = a
    if shape == "max_only":
        fields["max"] = b
    return Quantity(kind=kind, unit=UNIT_OF_KIND[kind], approx=draw(st.booleans()), **fields)


def _classes(vocabulary) -> st.SearchStrategy[list]:
    return st.lists(st.sampled_from(vocabulary), unique=True, max_size=4)


@st.composite
def steps(draw, operations=st.sampled_from(Operation)) -> Step:
    return Step(
        operation=draw(operations),
        quantities=draw(st.lists(quantities(), max_size=min(4, MAX_QUANTITIES_PER_STEP))),
        equipment=draw(_classes(EquipmentClass)),
        labware=draw(_classes(LabwareClass)),
        reagents=draw(_classes(ReagentClass)),
    )


@st.composite
def specs(draw, max_steps: int = 40) -> ProtocolSpec:
    return ProtocolSpec(
        content_hash=draw(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
        domain=draw(st.sampled_from(Domain)),
        organism=draw(st.sampled_from(Organism)),
        steps=draw(st.lists(steps(), min_size=1, max_size=max_steps)),
    )
