"""A partner's training data stand-in for the transport tests: 40 rows derived from the corpus path."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SyntheticData:
    features: np.ndarray
    targets: np.ndarray


def synthetic_data(corpus: Path) -> SyntheticData:
    seed = int.from_bytes(hashlib.sha256(str(corpus).encode()).digest()[:4], "big")
    rng = np.random.default_rng(seed)
    features = rng.uniform(0, 1, size=(40, 223)).astype(np.float32)
    weights = np.random.default_rng(0).normal(size=223).astype(np.float32) / 15
    targets = (1 / (1 + np.exp(-(features @ weights)))).astype(np.float32)
    return SyntheticData(features, targets)
