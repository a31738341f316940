from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from mshale_fl.training.aggregation import fedavg
from mshale_fl.training.model import initial_model, parameters_of


def test_fedavg_equals_flowers_weighted_aggregation() -> None:
    updates = [parameters_of(initial_model(seed)) for seed in range(3)]
    weights = [10, 250, 37]
    records = [
        RecordDict({"arrays": ArrayRecord(update), "metrics": MetricRecord({"num-examples": weight})})
        for update, weight in zip(updates, weights, strict=True)
    ]
    flower = aggregate_arrayrecords(records, "num-examples").to_numpy_ndarrays()
    ours = fedavg(updates, weights)
    for a, b in zip(ours, flower, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        assert a.dtype == np.float32


def test_fedavg_rejects_mismatched_input() -> None:
    update = parameters_of(initial_model(0))
    with pytest.raises(ValueError, match="no updates"):
        fedavg([], [])
    with pytest.raises(ValueError, match="weights"):
        fedavg([update], [0])
    with pytest.raises(ValueError, match="shapes"):
        fedavg([update, update[:-1]], [1, 1])
