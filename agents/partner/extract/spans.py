"""Character spans of what the extractor recognised, kept internally for evaluation and step building.

A span never leaves the partner: the spec builder turns spans into closed-vocabulary values and
drops the offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

from mshale_fl.agents.partner.extract.actions import find_actions
from mshale_fl.agents.partner.extract.quantities import find_quantities
from mshale_fl.schemas.protocol_spec import Quantity

EVALUATED_TYPES = ("Action", "Temperature", "Time", "Amount", "Concentration", "Speed", "pH")


@dataclass(frozen=True, slots=True)
class Span:
    label: str
    start: int
    end: int
    quantity: Quantity | None = None


def annotate(text: str) -> list[Span]:
    spans = [Span(m.label, m.start, m.end, m.quantity) for m in find_quantities(text)]
    spans += [Span("Action", start, end) for start, end in find_actions(text)]
    return sorted(spans, key=lambda s: (s.start, s.end, s.label))
