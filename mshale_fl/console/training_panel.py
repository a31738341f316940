"""The training panel: runs on the server's disk (`RunStore`), the current round, one loss series.

Which metric is plotted: the server-side evaluation loss (`eval_loss`) when rounds record it;
otherwise the first numeric per-round metric that exists, in `FALLBACK_METRICS` order and then
alphabetically, labelled as what it is, so a plot of `update_norm` is never mistaken for a loss.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mshale_fl.console.panels import SourceUnavailable
from mshale_fl.federation.runs import RoundRecord, RunState, RunStateError, RunStore

LOSS_METRIC = "eval_loss"
FALLBACK_METRICS = ("loss", "update_norm")
"""Tried in this order when no round records `eval_loss`; then any other numeric metric."""
METRIC_LABELS = {
    "eval_loss": "server-side evaluation loss",
    "loss": "training loss",
    "update_norm": "update norm (L2 distance between consecutive global models; not a loss)",
    "epsilon_spent_max": "largest epsilon any partner had spent after the round (not a loss)",
    "num_examples": "training examples in the round (not a loss)",
}
RUNS_SHOWN = 5


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def choose_metric(rounds: list[RoundRecord]) -> str | None:
    """The metric to plot for these rounds, or None when no round has a numeric metric."""
    present = {name for record in rounds for name, value in record.metrics.items() if _numeric(value)}
    for name in (LOSS_METRIC, *FALLBACK_METRICS):
        if name in present:
            return name
    return min(present) if present else None


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, f"{name} (per-round metric; not a loss)")


def series(rounds: list[RoundRecord], metric: str) -> list[dict[str, Any]]:
    """(round, value) points of `metric`; rounds without it (a failed round) are left out."""
    return [
        {"round": record.round, "value": float(record.metrics[metric]), "failed": record.failed}
        for record in rounds
        if _numeric(record.metrics.get(metric))
    ]


def _run_summary(state: RunState, *, active: bool) -> dict[str, Any]:
    last = state.rounds[-1] if state.rounds else None
    if state.finished:
        progress = "finished" + (f", model v{state.model_version} published" if state.published_digest else ", not published")
    elif state.last_round >= state.settings.rounds:
        progress = f"all {state.settings.rounds} rounds done, not yet published"
    else:
        # The state only records completed rounds; whether the next is running now or the server is
        # down between rounds is not on disk, so the page says both.
        progress = f"round {state.last_round + 1} of {state.settings.rounds} in progress or interrupted"
    return {
        "run_id": state.run_id,
        "active": active,
        "finished": state.finished,
        "progress": progress,
        "model_version": state.model_version,
        "base_version": state.base_version,
        "started_at": state.started_at,
        "rounds_planned": state.settings.rounds,
        "rounds_done": len(state.rounds),
        "rounds_failed": sum(1 for record in state.rounds if record.failed),
        "min_clients": state.settings.min_clients,
        "dp_epsilon": state.settings.dp_epsilon,
        "last_round": (
            {
                "round": last.round,
                "failed": last.failed,
                "participants": last.participants,
                "cohort": last.cohort,
                "completed_at": last.completed_at,
                "metrics": {name: value for name, value in last.metrics.items() if _numeric(value)},
            }
            if last is not None
            else None
        ),
    }


def _active_run_id(store: RunStore) -> tuple[str | None, str | None]:
    """(active run id, why the pointer is unreadable)."""
    # Read the pointer ourselves: RunStore.active() would also load the state, and an unreadable
    # pointer must not hide the runs that can be read.
    try:
        return str(json.loads(store.active_file.read_text(encoding="utf-8"))["run_id"]), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, f"{store.active_file} cannot be read ({error}); `mshale-fl serve` cannot resume until it is fixed"


def read_training(home: Path) -> dict[str, Any]:
    store = RunStore(home)
    runs_dir = store.root / "runs"
    if not Path(home).is_dir():
        raise SourceUnavailable(f"MSHALE_HOME {home} does not exist (set it to the training server's)")
    active_id, pointer_problem = _active_run_id(store)
    states: list[RunState] = []
    unreadable: list[str] = [pointer_problem] if pointer_problem else []
    for state_file in sorted(runs_dir.glob("*/state.json")) if runs_dir.is_dir() else []:
        try:
            states.append(store.load(state_file.parent.name))
        except RunStateError as error:
            unreadable.append(str(error))
    states.sort(key=lambda state: (state.run_id == active_id, state.started_at), reverse=True)
    current = states[0] if states else None
    plot: dict[str, Any] | None = None
    if current is not None:
        metric = choose_metric(current.rounds)
        plot = {
            "run_id": current.run_id,
            "metric": metric,
            "label": metric_label(metric) if metric else None,
            "is_loss": metric in (LOSS_METRIC, "loss"),
            "points": series(current.rounds, metric) if metric else [],
            "empty_reason": (
                None
                if metric
                else (
                    f"run {current.run_id} has no completed rounds yet"
                    if not current.rounds
                    else f"the rounds of run {current.run_id} record no numeric metric"
                )
            ),
        }
    return {
        "runs_dir": str(runs_dir),
        "active_run_id": active_id,
        "runs": [_run_summary(state, active=state.run_id == active_id) for state in states[:RUNS_SHOWN]],
        "runs_total": len(states),
        "unreadable": unreadable,
        "plot": plot,
    }


__all__ = ["LOSS_METRIC", "choose_metric", "metric_label", "read_training", "series"]
