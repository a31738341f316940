"""Round aggregation for the training server: plain FedProx averaging or secure aggregation (base.py)."""

from mshale_fl.agents.mishale.aggregation.base import (
    Aggregation,
    Reserved,
    RoundAggregation,
    RoundInterrupted,
    RoundResult,
    TrainingRound,
)
from mshale_fl.agents.mishale.aggregation.plain import PlainAggregation
from mshale_fl.agents.mishale.aggregation.secure import SecureAggregation

__all__ = [
    "Aggregation",
    "PlainAggregation",
    "Reserved",
    "RoundAggregation",
    "RoundInterrupted",
    "RoundResult",
    "SecureAggregation",
    "TrainingRound",
]
