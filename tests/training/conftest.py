from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # These models are tiny: a second intra-op thread only adds contention on a shared machine.
    torch.set_num_threads(1)


def efficiency_data(n: int, seed: int = 0, dim: int = 223) -> tuple[np.ndarray, np.ndarray]:
    """A learnable regression problem shaped like Tier 3 data: features in [0, 1], outcomes in [0, 1]."""
    rng = np.random.default_rng(seed)
    features = rng.uniform(0.0, 1.0, size=(n, dim)).astype(np.float32)
    weights = rng.normal(0.0, 1.0, size=dim) / np.sqrt(dim)
    logits = (features - 0.5) @ weights * 4.0
    targets = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return features, targets
