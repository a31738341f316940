"""`mshale_fl.demo.corpora.write_corpus`, what the demo and the federation tests train on, is the synthesizer's."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np

from mshale_fl.corpus.synth import cached_ground_truth
from mshale_fl.demo.corpora import SHARED_GROUND_TRUTH_SEED, write_corpus
from mshale_fl.training.data import load_training_data

from .conftest import snapshot


def test_every_protocol_trains_on_the_shared_ground_truth_and_the_corpus_depends_on_the_seed_only(tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "a", 10, seed=7)
    assert folder == tmp_path / "a"
    config = tomllib.loads((folder / "mshale.toml").read_text())
    assert config["agreements"]["dpa"] and config["agreements"]["federated_training"]
    data = load_training_data(folder)
    assert len(data) == 10 and not data.skipped
    assert np.all((data.targets >= 0) & (data.targets <= 1)) and data.targets.std() > 0.05

    # The outcomes follow the shared ground truth (residual logits of about its noise), not one of the seed's own.
    observed = np.clip(data.targets, 0.001, 0.999)
    observed_logits = np.log(observed / (1 - observed))

    def residual(seed: int) -> float:
        return float(np.mean(np.abs(observed_logits - cached_ground_truth(seed).logits(data.features))))

    assert residual(SHARED_GROUND_TRUTH_SEED) < 0.3 < residual(7)

    assert snapshot(write_corpus(tmp_path / "b", 10, seed=7)) == snapshot(folder)
    assert snapshot(write_corpus(tmp_path / "c", 10, seed=8)) != snapshot(folder)
