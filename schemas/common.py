"""Constrained building blocks shared by every schema.

Bounds are part of the contract: they stop a hostile or buggy sender from making a worker
allocate without limit, and they keep every field machine-sized (no room for prose).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

MAX_LIST = 10_000
"""Upper bound for any list in any event (steps, vectors, predictions...)."""


class StrictModel(BaseModel):
    """Base for every contract model: unknown fields rejected, immutable, no coercion surprises."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        validate_default=True,
        # Enums stay enums in Python and become their values in JSON.
        use_enum_values=False,
    )


def _utc(value: datetime) -> datetime:
    if value.utcoffset() != UTC.utcoffset(None):
        raise ValueError("timestamps must be in UTC (offset +00:00)")
    return value


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]

PartnerId = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9-]{1,62}$",
        description="Lower-case letters, digits and '-', 2-63 chars; also the broker user name.",
    ),
]

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256, lower-case hex")]

ShortCode = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_.-]{0,63}$",
        description="A machine-readable code (snake/dot case), never prose.",
    ),
]

Message = Annotated[str, Field(max_length=500, description="Human-readable explanation written by Mishale")]


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


FiniteFloat = Annotated[float, AfterValidator(_finite)]


def _integer(value: object) -> object:
    # pydantic checks a literal by equality, and JSON `true` and `1.0` equal 1 in Python. The
    # exported JSON Schema (`"const": 1`) refuses `true`, and every other integer field of the
    # strict models refuses `1.0`, so a version or a tier must too.
    if type(value) is not int:
        raise ValueError(f"must be an integer, not {type(value).__name__}")
    return value


ExactlyOne = Annotated[Literal[1], BeforeValidator(_integer)]
"""A version number or tier that must be the integer 1."""
ExactlyTwo = Annotated[Literal[2], BeforeValidator(_integer)]
NonNegativeFloat = Annotated[float, Field(ge=0.0), AfterValidator(_finite)]
Epsilon = Annotated[float, Field(ge=0.0, le=1_000.0), AfterValidator(_finite)]
Delta = Annotated[float, Field(ge=0.0, lt=1.0), AfterValidator(_finite)]
ModelVersion = Annotated[int, Field(ge=0, le=1_000_000)]
RoundNumber = Annotated[int, Field(ge=1, le=1_000_000)]


def now_utc() -> datetime:
    return datetime.now(UTC)
