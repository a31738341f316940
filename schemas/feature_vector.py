"""FeatureVector: exactly 223 finite float32 values computed from a ProtocolSpec."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field, field_validator

from mshale_fl.schemas.common import ExactlyOne, FiniteFloat, Sha256Hex, StrictModel

FEATURE_DIM = 223
FEATURE_SCHEMA_VERSION = 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class FeatureVector(StrictModel):
    feature_schema_version: ExactlyOne = FEATURE_SCHEMA_VERSION
    spec_hash: Sha256Hex = Field(description="The spec's salted content hash")
    values: Annotated[list[FiniteFloat], Field(min_length=FEATURE_DIM, max_length=FEATURE_DIM)]

    @field_validator("values")
    @classmethod
    def _float32(cls, values: list[float]) -> list[float]:
        for index, value in enumerate(values):
            if abs(value) > _FLOAT32_MAX:
                raise ValueError(f"values[{index}] does not fit in float32")
        return values

    def as_array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.float32)
