"""Threshold secure aggregation (Bonawitz et al. 2017, SecAgg+ of Bell et al. 2020); see README.md."""

from mshale_fl.secagg.errors import (
    KeySubstitutionError,
    ProtocolStateError,
    SecAggError,
    ShareError,
    TooFewSurvivorsError,
    UnmaskRefusedError,
)
from mshale_fl.secagg.protocol import (
    RoundConfig,
    SecAggClient,
    SecAggServer,
    UnmaskRequest,
)
from mshale_fl.secagg.quantize import (
    QuantizationConfig,
    dequantize_sum,
    quantize_update,
)

__all__ = [
    "KeySubstitutionError",
    "ProtocolStateError",
    "QuantizationConfig",
    "RoundConfig",
    "SecAggClient",
    "SecAggError",
    "SecAggServer",
    "ShareError",
    "TooFewSurvivorsError",
    "UnmaskRefusedError",
    "UnmaskRequest",
    "dequantize_sum",
    "quantize_update",
]
