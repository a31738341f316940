"""ProtocolSpec: a protocol as structure only (operations and normalised quantities).

No field of a spec holds free text: every string is a member of a closed vocabulary in
`vocabulary.py` or a fixed-format hash, so no token of the source protocol can leave by accident.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from mshale_fl.schemas.common import FiniteFloat, Sha256Hex, StrictModel
from mshale_fl.schemas.vocabulary import (
    UNIT_OF_KIND,
    CanonicalUnit,
    Domain,
    EquipmentClass,
    LabwareClass,
    Operation,
    Organism,
    QuantityKind,
    ReagentClass,
)

SPEC_SCHEMA_VERSION = 1
MAX_STEPS = 500
MAX_QUANTITIES_PER_STEP = 16
MAX_CLASSES_PER_STEP = 16


class Quantity(StrictModel):
    """A normalised quantity: a point value, a range, or both absent for approximate words.

    `approx` marks values read from words (`RT`, `overnight`, `on ice`) or written with `~`.
    """

    kind: QuantityKind
    unit: CanonicalUnit
    value: FiniteFloat | None = None
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None
    approx: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.unit is not UNIT_OF_KIND[self.kind]:
            raise ValueError(f"{self.kind.value} must be in {UNIT_OF_KIND[self.kind].value}, not {self.unit.value}")
        if self.value is None and self.min is None and self.max is None:
            raise ValueError("a quantity needs a value or a range")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class Step(StrictModel):
    operation: Operation
    quantities: Annotated[list[Quantity], Field(max_length=MAX_QUANTITIES_PER_STEP)] = []
    equipment: Annotated[list[EquipmentClass], Field(max_length=MAX_CLASSES_PER_STEP)] = []
    labware: Annotated[list[LabwareClass], Field(max_length=MAX_CLASSES_PER_STEP)] = []
    reagents: Annotated[list[ReagentClass], Field(max_length=MAX_CLASSES_PER_STEP)] = []


class ProtocolSpec(StrictModel):
    spec_schema_version: Literal[1] = SPEC_SCHEMA_VERSION
    content_hash: Sha256Hex = Field(description="Salted SHA-256 of the source text; the salt never leaves the partner")
    domain: Domain = Domain.OTHER
    organism: Organism = Organism.UNSPECIFIED
    steps: Annotated[list[Step], Field(min_length=1, max_length=MAX_STEPS)]
