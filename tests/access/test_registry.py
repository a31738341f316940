"""The model registry and its model cards."""

from __future__ import annotations

import json

import pytest
from mshale_fl.schemas.payloads import ModelPublished
from sqlalchemy import inspect

from mshale_fl.access.cards import card_json, card_markdown, write_model_card
from mshale_fl.access.registry import (
    ConflictingModelVersion,
    UnknownModelVersion,
    get_model_version,
    latest_model_version,
    list_model_versions,
    register_model_version,
    versions_contributed_to,
)
from mshale_fl.ledger.errors import UnknownPartner
from mshale_fl.store import MIGRATIONS, current_version


def test_migration_creates_the_access_tables(engine) -> None:  # type: ignore[no-untyped-def]
    assert current_version(engine) == max(m.version for m in MIGRATIONS) >= 3
    assert {"model_versions", "model_contributors", "access_usage"} <= set(inspect(engine).get_table_names())


def test_versions_record_lineage_contributors_and_epsilon(engine, partner, publish) -> None:  # type: ignore[no-untyped-def]
    alpha, beta = partner(3), partner(3)
    publish(1, {alpha: 1.25})
    second = publish(2, {alpha: 0.5, beta: 2.0}, parent=1, metrics={"val_mae": 0.1, "val_rmse": 0.2})
    assert second.parent_version == 1
    assert second.metrics == {"val_mae": 0.1, "val_rmse": 0.2}
    assert {p: s.epsilon for p, s in second.contributors.items()} == {alpha: 0.5, beta: 2.0}
    with engine.connect() as connection:
        assert [v.version for v in list_model_versions(connection)] == [1, 2]
        assert latest_model_version(connection).version == 2  # type: ignore[union-attr]
        assert versions_contributed_to(connection, alpha) == [1, 2]
        assert versions_contributed_to(connection, beta) == [2]
        with pytest.raises(UnknownModelVersion, match="model version 7 is not in the registry"):
            get_model_version(connection, 7)


def test_registering_again_is_idempotent_but_conflicts_are_refused(engine, partner, publish) -> None:  # type: ignore[no-untyped-def]
    alpha = partner(3)
    first = publish(1, {alpha: 1.0})
    assert publish(1, {alpha: 1.0}) == first
    tampered = ModelPublished(model_version=1, parent_version=None, sha256="f" * 64, rounds=3)
    with engine.begin() as connection, pytest.raises(ConflictingModelVersion, match="sha256"):
        register_model_version(connection, tampered, {})
    with pytest.raises(ConflictingModelVersion, match="contributors"):
        publish(1, {})
    with engine.connect() as connection:
        assert get_model_version(connection, 1).sha256 == first.sha256


def test_unknown_contributor_is_refused_and_nothing_is_written(engine, publish) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownPartner):
        publish(1, {"lab-ghost": 1.0})
    with engine.connect() as connection:
        assert list_model_versions(connection) == []


def test_model_cards_render_as_json_and_markdown(engine, partner, publish, tmp_path) -> None:  # type: ignore[no-untyped-def]
    alpha, beta = sorted([partner(3), partner(3)])
    model = publish(2, {beta: 2.0, alpha: 0.75}, parent=1, metrics={"val_mae": 0.1234567})

    card = json.loads(card_json(model))
    assert card["format"] == "mshale-model-card/1"
    assert card["version"] == 2 and card["parent_version"] == 1 and card["sha256"] == f"{2:064x}"
    assert card["rounds"] == 3 and card["metrics"] == {"val_mae": 0.1234567}
    assert card["contributors"] == [
        {"partner_id": alpha, "epsilon": 0.75, "delta": 1e-5},
        {"partner_id": beta, "epsilon": 2.0, "delta": 1e-5},
    ]

    markdown = card_markdown(model)
    assert markdown.startswith("# Model version 2\n")
    assert f"| SHA-256 | `{2:064x}` |" in markdown
    assert "| parent version | 1 |" in markdown
    assert "| val_mae | 0.123457 |" in markdown
    assert markdown.index(f"| {alpha} | 0.75 | 1e-05 |") < markdown.index(f"| {beta} | 2 | 1e-05 |")

    json_path, markdown_path = write_model_card(tmp_path / "cards", model)
    assert json_path.read_text() == card_json(model)
    assert markdown_path.read_text() == markdown


def test_a_first_version_without_contributors_says_so(engine, publish) -> None:  # type: ignore[no-untyped-def]
    markdown = card_markdown(publish(0, {}, metrics={}))
    assert "| parent version | none (first version) |" in markdown
    assert "No metrics were published." in markdown
    assert "No partner data trained this version." in markdown


def test_privacy_spent_is_composed_from_committed_spends_only(engine, partner) -> None:  # type: ignore[no-untyped-def]
    from mshale_fl.access.registry import privacy_spent_on
    from mshale_fl.ledger.accounting import Mechanism, epsilon
    from mshale_fl.ledger.budgets import commit, release, reserve

    trained, dropped = sorted([partner(3), partner(3)])
    mechanism = Mechanism(noise_multiplier=1.1, sample_rate=0.01, steps=100)
    with engine.begin() as connection:
        for round_number in (1, 2):
            for partner_id in (trained, dropped):
                reserve(
                    connection,
                    partner_id=partner_id,
                    model_version=4,
                    round_id=f"run-a/{round_number}",
                    mechanism=mechanism,
                )
            commit(connection, partner_id=trained, round_id=f"run-a/{round_number}")
            release(connection, partner_id=dropped, round_id=f"run-a/{round_number}")

    with engine.connect() as connection:
        spent = privacy_spent_on(connection, 4)
        assert privacy_spent_on(connection, 5) == {}
    assert set(spent) == {trained}
    # Two rounds compose (RDP), which is less than twice one round.
    assert spent[trained].epsilon == pytest.approx(epsilon([mechanism, mechanism], 1e-5))
    assert spent[trained].epsilon < 2 * epsilon([mechanism], 1e-5)


def test_weights_are_verified_against_the_registered_digest(engine) -> None:  # type: ignore[no-untyped-def]
    import torch

    from mshale_fl.access.registry import ModelDigestMismatch, verify_model_digest
    from mshale_fl.training.model import state_digest

    weights = {"layer.weight": torch.ones(2, 3)}
    digest = state_digest(weights)
    with engine.begin() as connection:
        register_model_version(
            connection, ModelPublished(model_version=5, parent_version=None, sha256=digest, rounds=1), {}
        )
    tampered = {"layer.weight": torch.ones(2, 3).index_fill_(1, torch.tensor([0]), 2.0)}
    with engine.connect() as connection:
        assert verify_model_digest(connection, 5, digest).version == 5
        with pytest.raises(ModelDigestMismatch, match="altered or corrupted"):
            verify_model_digest(connection, 5, state_digest(tampered))
        with pytest.raises(UnknownModelVersion):
            verify_model_digest(connection, 6, digest)
