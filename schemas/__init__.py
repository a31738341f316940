"""The contract between partners and Mishale: pydantic v2 models, no I/O.

Everything that crosses the broker is one of these models. They are strict (unknown fields are
rejected, numbers must be finite, strings and lists are bounded) so that a malformed or hostile
message is refused at the edge with a precise reason, and so that no free text can ride along.
"""

from mshale_fl.schemas.events import (
    EVENT_MODELS,
    EVENT_TYPES,
    Event,
    EventEnvelope,
    new_event,
    parse_event,
)
from mshale_fl.schemas.feature_vector import FEATURE_DIM, FeatureVector
from mshale_fl.schemas.protocol_spec import ProtocolSpec

__all__ = [
    "EVENT_MODELS",
    "EVENT_TYPES",
    "FEATURE_DIM",
    "Event",
    "EventEnvelope",
    "FeatureVector",
    "ProtocolSpec",
    "new_event",
    "parse_event",
]
