"""Helpers for the tier 2 tests: protocol texts through the real extractor, then the featurizer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mshale_fl.agents.partner.extract import Protocol, extract_spec
from mshale_fl.agents.partner.extract.reader import parse_text
from mshale_fl.agents.partner.featurize import feature_values
from mshale_fl.schemas.protocol_spec import ProtocolSpec

SALT = b"tier2-tests-salt-0123456789abcdef"


def spec_of_text(text: str) -> ProtocolSpec:
    """The spec of a protocol file's text, read as the extractor reads a .txt file."""
    _, title, steps = parse_text(text, markdown=False)
    return extract_spec(Protocol("protocol.txt", title, tuple(steps)), SALT).spec


def vector_of_text(text: str) -> np.ndarray:
    return feature_values(spec_of_text(text))


def protocol_text(title: str, steps: Sequence[str]) -> str:
    return "\n".join((title, *steps)) + "\n"
