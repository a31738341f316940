"""Errors raised by the secure-aggregation protocol.

Each names one way a round can go wrong so that callers (the federation stages, later) can end the
round as failed with a precise reason instead of a generic exception.
"""

from __future__ import annotations


class SecAggError(Exception):
    """Base class for every secure-aggregation failure."""


class TooFewSurvivorsError(SecAggError):
    """Fewer than the threshold t partners remain, so the round ends and nothing is revealed."""


class ShareError(SecAggError):
    """Shamir shares cannot reconstruct a secret (too few, duplicated or inconsistent)."""


class KeySubstitutionError(SecAggError):
    """An advertised public key is not signed by the partner's registered identity key."""


class UnmaskRefusedError(SecAggError):
    """A client refuses an unmasking request that would reveal both secrets of one partner."""


class ProtocolStateError(SecAggError):
    """A stage was called out of order, twice, or with messages that do not belong to the round."""
