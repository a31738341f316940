"""(b) The hidden outcome function is learnable from what partners extract, and (c) partners differ.

Six labs are synthesized and written; each lab's Tier 3 training data is loaded exactly as a
partner does (`load_training_data`: read, label, extract, featurise). A model trained on four labs
(plain SGD, no DP) must predict the two held-out labs' outcomes far better than their mean does.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from mshale_fl.agents.partner.featurize import group_ranges
from mshale_fl.corpus import synthesize, write_synth_corpus
from mshale_fl.training.data import TrainingData, load_training_data
from mshale_fl.training.local import LocalTrainingConfig, train_locally
from mshale_fl.training.model import initial_model, parameters_of

PARTNERS, PROTOCOLS, SEED = 6, 40, 11
HELD_OUT = 2
PERMUTATIONS = 200


@dataclass(frozen=True)
class Federation:
    data: list[TrainingData]
    intended: list[np.ndarray]  # each lab's intended features, in the order of its training rows


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    corpus = synthesize(PARTNERS, PROTOCOLS, seed=SEED)
    out = tmp_path_factory.mktemp("learn")
    write_synth_corpus(corpus, out)
    data, intended = [], []
    for partner in corpus.partners:
        loaded = load_training_data(out / partner.partner_id)
        by_path = {p.path: p for p in partner.protocols}
        assert not loaded.skipped or {reason.split(":")[0] for _, reason in loaded.skipped} == {"not_efficiency"}
        assert len(loaded) == sum(p.outcome is not None for p in partner.protocols)
        data.append(loaded)
        intended.append(np.stack([by_path[source].features for source in loaded.sources]))
    return Federation(data, intended)


def test_a_model_on_extracted_features_beats_the_mean_on_held_out_partners(federation: Federation) -> None:
    train, held_out = federation.data[:-HELD_OUT], federation.data[-HELD_OUT:]
    features = np.concatenate([d.features for d in train])
    targets = np.concatenate([d.targets for d in train])
    test_features = np.concatenate([d.features for d in held_out])
    test_targets = np.concatenate([d.targets for d in held_out])
    model = initial_model(0)
    config = LocalTrainingConfig(epochs=150, batch_size=16, lr=0.3, mu=0.0, noise_multiplier=0.0,
                                 max_grad_norm=0.0, seed=0, dp=False)  # fmt: skip
    train_locally(model, features, targets, parameters_of(model), config)
    model_mse = float(np.mean((model.predict(test_features) - test_targets) ** 2))
    mean_mse = float(np.mean((targets.mean() - test_targets) ** 2))
    assert len(targets) >= 80 and len(test_targets) >= 40
    assert model_mse < 0.5 * mean_mse, (model_mse, mean_mse)


def test_the_features_the_ground_truth_reads_are_the_extracted_ones(federation: Federation) -> None:
    from mshale_fl.corpus.synth import cached_ground_truth

    truth = cached_ground_truth(SEED)
    indices = sorted({i for term in truth.terms for i in term.indices})
    extracted = np.concatenate([d.features for d in federation.data])[:, indices]
    intended = np.concatenate(federation.intended)[:, indices]
    assert np.mean(np.all(extracted == intended, axis=1)) >= 0.95


def test_partners_have_different_feature_distributions(federation: Federation) -> None:
    domains = group_ranges()["domain"]
    shares = [d.features[:, domains.start : domains.stop].mean(axis=0) for d in federation.data]
    for a, b in combinations(range(PARTNERS), 2):
        total_variation = 0.5 * float(np.abs(shares[a] - shares[b]).sum())
        assert total_variation >= 0.1, (a, b, total_variation)
    # Beyond domains: for every pair of labs, a permutation test on the distance between their mean
    # feature vectors rejects "same distribution" (pooling the rows and splitting them at random
    # never gives a distance as large as the real split).
    rng = np.random.default_rng(0)
    for a, b in combinations(range(PARTNERS), 2):
        pooled = np.concatenate([federation.data[a].features, federation.data[b].features])
        size = len(federation.data[a])
        observed = float(np.abs(pooled[:size].mean(0) - pooled[size:].mean(0)).sum())
        shuffled = [pooled[rng.permutation(len(pooled))] for _ in range(PERMUTATIONS)]
        null = [float(np.abs(rows[:size].mean(0) - rows[size:].mean(0)).sum()) for rows in shuffled]
        p_value = (1 + sum(distance >= observed for distance in null)) / (1 + PERMUTATIONS)
        assert p_value <= 0.02, (a, b, p_value)
