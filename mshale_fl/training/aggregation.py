"""Weighted FedAvg of parameter lists: what Flower's FedAvg / FedProx strategies compute on the server.

The server itself uses Flower's strategy (`aggregate_arrayrecords`); this function is the same
arithmetic for code that runs rounds without Flower (the FedProx paper benchmark). Weights are the
clients' example counts; the sum is accumulated in float64 and returned as float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fedavg(updates: Sequence[Sequence[np.ndarray]], weights: Sequence[float]) -> list[np.ndarray]:
    """sum_k w_k * params_k / sum_k w_k, tensor by tensor; all updates must have the same shapes."""
    if not updates:
        raise ValueError("nothing to aggregate: no updates")
    if len(updates) != len(weights):
        raise ValueError(f"{len(updates)} updates but {len(weights)} weights")
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be finite, >= 0 and not all zero")
    shapes = [tuple(np.shape(a)) for a in updates[0]]
    for index, update in enumerate(updates):
        if [tuple(np.shape(a)) for a in update] != shapes:
            raise ValueError(f"update {index} has shapes {[np.shape(a) for a in update]}, expected {shapes}")
    total = float(sum(weights))
    averaged = [np.zeros(shape, dtype=np.float64) for shape in shapes]
    for update, weight in zip(updates, weights, strict=True):
        for accumulator, array in zip(averaged, update, strict=True):
            accumulator += np.asarray(array, dtype=np.float64) * (weight / total)
    return [a.astype(np.float32) for a in averaged]
