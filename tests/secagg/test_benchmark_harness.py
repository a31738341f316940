"""The benchmark's harness computes the right thing on both sides (no timing is asserted here).

`benchmarks/secagg.py` drives Flower's own `SecAggPlusWorkflow` through an in-process Grid; if a Flower
upgrade changed the Message API, the workflow or the mod, these runs would stop producing the weighted
mean, and the benchmark's comparison would be meaningless.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "secagg.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("secagg_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_every_system_returns_the_weighted_mean_of_the_survivors(bench, dropout: float) -> None:
    cell = bench.measure(6, 300, 1, 0.67, dropout)
    assert set(cell) == set(bench.SYSTEMS)
    for system, m in cell.items():
        # Quantisation error only: Flower's 2^22 levels over [-1, 1], ours far finer.
        assert m.max_error < 1e-4, (system, m.max_error)
        assert m.partner_seconds > 0 and m.bytes_up > 0
    survivors = 6 - len(bench.dropped_partners(6, dropout))
    assert len(cell["ours SecAgg+"].partner_seconds_all) == survivors
    assert len(cell["Flower SecAgg+"].partner_seconds_all) == survivors
    # Ours sends 4 bytes per element at k = 32, Flower 8 (int64 arrays), plaintext 8 (float64).
    assert cell["ours SecAgg+"].bytes_up < cell["Flower SecAgg+"].bytes_up
    assert cell["plaintext"].bytes_up == 8 * 300 + 8


def test_dropped_partners_and_matched_parameters(bench) -> None:
    assert bench.dropped_partners(20, 0.0) == frozenset()
    assert bench.dropped_partners(5, 0.1) == frozenset({0})
    assert bench.dropped_partners(50, 0.1) == frozenset(range(5))
    # Even SecAgg+ degree below n, logarithmic: Flower's num_shares is this + 1.
    assert [bench.secagg_plus_degree(n) for n in (5, 10, 20, 50)] == [4, 8, 10, 12]
    assert bench.threshold_of(13, 0.67) == 9 and bench.threshold_of(2, 0.1) == 2
