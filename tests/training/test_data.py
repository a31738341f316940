from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mshale_fl.agents.partner.extract import extract_spec, read_one
from mshale_fl.agents.partner.featurize import featurize

from mshale_fl.training.data import TrainingDataError, load_training_data

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "lab-protocols"
AGREEMENTS = "[agreements]\ndpa = true\nirb = false\nfederated_training = true\n"
STEPS = "1. Add 2 ml of trypsin and incubate at 37 °C for 3 min.\n2. Centrifuge at 300 x g for 5 min.\n"


def _protocol(folder: Path, name: str, front_matter: str, title: str = "# Passage") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\n{front_matter}\n---\n{title}\n{STEPS}", encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    _protocol(root, "a.md", "sensitivity: efficiency\noutcome: 0.8")
    _protocol(root, "b.md", "sensitivity: efficiency")
    (root / "c.json").write_text(json.dumps({"title": "Spin", "sensitivity": "efficiency",
                                             "steps": ["Centrifuge at 1000 x g for 10 min."]}))  # fmt: skip
    (root / "c.json.outcome.json").write_text('{"outcome": 0.25}')
    _protocol(root, "d.md", "sensitivity: published\noutcome: 0.9")
    _protocol(root, "e.md", "sensitivity: efficiency\noutcome: 1.5")
    _protocol(root, "f.md", "sensitivity: efficiency\noutcome: 0.3")
    (root / "f.md.outcome.json").write_text('{"outcome": 0.5}')
    _protocol(root, "g.md", "sensitivity: efficiency\noutcome: high")
    _protocol(root, "deep/h.md", "outcome: 0", title="# Wash")  # labelled by the rule below
    (root / "mshale.toml").write_text('[sensitivity]\nrules = [{glob = "deep/**", label = "efficiency"}]\n' + AGREEMENTS)
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_only_efficiency_protocols_with_valid_outcomes_train(corpus: Path) -> None:
    before = _snapshot(corpus.parent)
    data = load_training_data(corpus)
    assert data.sources == ("a.md", "c.json", "deep/h.md")
    np.testing.assert_array_equal(data.targets, np.array([0.8, 0.25, 0.0], dtype=np.float32))
    assert data.features.shape == (3, 223) and data.features.dtype == np.float32
    assert data.targets.dtype == np.float32 and len(data) == 3
    reasons = dict(data.skipped)
    assert reasons["b.md"].startswith("no_outcome")
    assert reasons["d.md"].startswith("not_efficiency")
    assert reasons["e.md"].startswith("outcome_out_of_range")
    assert reasons["f.md"].startswith("outcome_conflict")
    assert reasons["g.md"].startswith("outcome_invalid")
    assert "c.json.outcome.json" not in reasons  # sidecars are not protocols
    assert data.skip_reasons()["not_efficiency"] == 1
    assert _snapshot(corpus.parent) == before  # nothing written: no specs, no manifest, no salt


def test_features_are_the_tier2_features_of_each_protocol(corpus: Path) -> None:
    data = load_training_data(corpus)
    for row, source in zip(data.features, data.sources, strict=True):
        protocol = read_one(corpus / source, corpus)
        expected = featurize(extract_spec(protocol, b"\x01" * 32).spec).as_array()  # the salt plays no part
        np.testing.assert_array_equal(row, expected)


def test_the_policy_gates_training_on_the_agreements(corpus: Path) -> None:
    (corpus / "mshale.toml").write_text('[sensitivity]\nrules = [{glob = "deep/**", label = "efficiency"}]\n')
    data = load_training_data(corpus)
    assert len(data) == 0 and data.features.shape == (0, 223)
    assert dict(data.skipped)["a.md"].startswith("tier3_needs_training_agreement")
    (corpus / "mshale.toml").write_text("[agreements]\nfederated_training = true\n")
    assert dict(load_training_data(corpus).skipped)["a.md"].startswith("efficiency_needs_dpa_or_irb")
    (corpus / "mshale.toml").write_text(AGREEMENTS)
    assert len(load_training_data(corpus, local_mode=True)) == 0


def test_the_example_corpus_has_one_training_protocol() -> None:
    data = load_training_data(EXAMPLES)
    assert data.sources == ("cell-passage-efficiency.md",)
    assert data.targets.tolist() == [pytest.approx(0.82)]


def test_a_missing_corpus_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="does not exist"):
        load_training_data(tmp_path / "nowhere")
