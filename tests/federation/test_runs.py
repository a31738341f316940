"""The run state on disk: what a restarted `serve` resumes, and what it refuses to resume."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mshale_fl.federation.runs import RoundRecord, RunSettings, RunStateError, RunStore, flower_run_id

SETTINGS = RunSettings(
    rounds=3, min_clients=3, dp_epsilon=1.0, mu=0.01, local_epochs=1, batch_size=8, lr=0.05, max_grad_norm=1.0
)


def _open(store: RunStore, **overrides: object):
    arguments = {
        "base_model": Path("models/mshale1_v0.pt"),
        "base_digest": "a" * 64,
        "base_version": 0,
        "settings": SETTINGS,
    }
    arguments.update(overrides)
    return store.open(**arguments)  # type: ignore[arg-type]


def _record(round_number: int, *, failed: bool = False) -> RoundRecord:
    return RoundRecord(
        round=round_number,
        failed=failed,
        participants=["lab-a"],
        cohort=["lab-a"],
        metrics={"updates": 1.0},
        model_file=None if failed else f"round-{round_number}.pt",
        digest=None if failed else "b" * 64,
        completed_at="2026-01-01T00:00:00+00:00",
    )


def test_an_unfinished_run_is_resumed_where_it_stopped(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    state, resumed = _open(store)
    assert not resumed and state.model_version == 1 and state.flower_run_id == flower_run_id(state.run_id)
    state = store.record_round(state, _record(1))
    state = store.record_round(state, _record(2, failed=True))
    again, resumed = _open(RunStore(tmp_path))
    assert resumed and again.run_id == state.run_id and again.last_round == 2
    assert again.current_model_file == "round-1.pt" and again.successful_rounds == 1
    with pytest.raises(ValueError, match="round 4 recorded after round 2"):
        store.record_round(again, _record(4))


def test_a_run_is_not_resumed_with_other_settings_or_another_model(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    state, _ = _open(store)
    with pytest.raises(RunStateError, match="rounds 3 -> 5"):
        _open(store, settings=replace(SETTINGS, rounds=5))
    with pytest.raises(RunStateError, match="another base model"):
        _open(store, base_digest="c" * 64)
    fresh, resumed = _open(store, settings=replace(SETTINGS, rounds=5), new_run=True)
    assert not resumed and fresh.run_id != state.run_id


def test_a_finished_run_is_not_resumed(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    state, _ = _open(store)
    store.finish(store.record_round(state, _record(1)), digest="b" * 64, path=tmp_path / "m.pt")
    assert store.active() is None
    assert store.load(state.run_id).finished
    later, resumed = _open(store)
    assert not resumed and later.run_id != state.run_id


def test_an_unreadable_state_is_an_error_to_fix_not_a_silent_restart(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    state, _ = _open(store)
    (store.run_dir(state.run_id) / "state.json").write_text("{not json")
    with pytest.raises(RunStateError, match="cannot be read"):
        _open(store)
