"""Server-side evaluation: the loss of each round's global model on data Mishale holds itself.

Partners never report a training loss (it is computed on private data without noise, so it is not
differentially private). The loss curve the operators see instead comes from a hold-out corpus of
Mishale's own (`serve --eval-corpus DIR`: protocols with outcomes, read like a partner's Tier 3
corpus), evaluated by the server after every round. It measures the shared model, not any partner.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord

from mshale_fl.errors import UserFacingError


class HoldoutEvaluation:
    """Mean squared error of a model's predicted efficiency on a fixed hold-out set."""

    def __init__(self, corpus: Path) -> None:
        from mshale_fl.training.data import load_training_data

        data = load_training_data(corpus)
        if len(data) == 0:
            raise UserFacingError(
                f"the evaluation corpus {corpus} holds no protocols with outcomes; "
                "give --eval-corpus a folder of protocols labelled `efficiency` with outcomes"
            )
        self.corpus = corpus
        self.features = data.features
        self.targets = data.targets.astype(np.float64)

    def __len__(self) -> int:
        return len(self.targets)

    def loss(self, arrays: ArrayRecord) -> float:
        from mshale_fl.training.model import Mshale1

        model = Mshale1()
        model.load_state_dict(arrays.to_torch_state_dict())
        predicted = model.predict(self.features).astype(np.float64)
        return float(np.mean((predicted - self.targets) ** 2))


__all__ = ["HoldoutEvaluation"]
