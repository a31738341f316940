"""ProtocolSpec: a protocol as structure only (operations and normalised quantities).

No field of a spec holds free text: every string is a member of a closed vocabulary in
`vocabulary.py` or a fixed-format hash, so no token of the source protocol can leave by accident.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator

from mshale_fl.schemas.common import ExactlyOne, FiniteFloat, Sha256Hex, StrictModel
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
_CLASS_LIST = Field(max_length=MAX_CLASSES_PER_STEP, json_schema_extra={"uniqueItems": True})


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
    """One action of the protocol, in order, with what it uses; each class is listed at most once."""

    operation: Operation
    quantities: Annotated[list[Quantity], Field(max_length=MAX_QUANTITIES_PER_STEP)] = []
    equipment: Annotated[list[EquipmentClass], _CLASS_LIST] = []
    labware: Annotated[list[LabwareClass], _CLASS_LIST] = []
    reagents: Annotated[list[ReagentClass], _CLASS_LIST] = []

    @field_validator("equipment", "labware", "reagents")
    @classmethod
    def _unique(cls, members: list) -> list:
        if len(set(members)) != len(members):
            raise ValueError("a class is listed more than once")
        return members


class ProtocolSpec(StrictModel):
    spec_schema_version: ExactlyOne = SPEC_SCHEMA_VERSION
    content_hash: Sha256Hex = Field(
        description="HMAC-SHA256 of the protocol's text keyed with the partner's secret salt; the salt never leaves"
    )
    domain: Domain = Domain.OTHER
    organism: Organism = Organism.UNSPECIFIED
    steps: Annotated[list[Step], Field(min_length=1, max_length=MAX_STEPS)]
