"""A training run's state on the server's disk, so `serve` resumes after a restart.

    MSHALE_HOME/federation/
        active.json                      which run is unfinished (at most one per server home)
        runs/<run id>/state.json         settings, rounds done, current model file
        runs/<run id>/round-<n>.pt       the global model after round n (only rounds that updated it)
    MSHALE_HOME/models/mshale1_v<version>.pt   the published model of a finished run

Every file is written atomically (`write_atomic`, `save_model`), and the state names the model
file only after that file is complete, so a crash at any point leaves the state of the last
completed round. A round that started but did not complete is simply run again under the same
round number and round id (`<run id>/<round>`): the ledger's reservation for it is reused, and a
partner that already trained it answers from its reply cache instead of training twice.

A run is keyed by the base model's digest: `serve` with the same model and an unfinished run
resumes it; other settings must match (a different schedule would make the partners' noise plans
wrong), or the operator starts afresh with `--new-run`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mshale_fl.errors import UserFacingError
from mshale_fl.fileio import write_atomic

STATE_FORMAT = "mshale-training-run/1"


class RunStateError(UserFacingError):
    """The run state on disk is unreadable, or conflicts with what the operator asked for."""


@dataclass(frozen=True)
class RunSettings:
    """What must stay the same for a run to be resumed."""

    rounds: int
    min_clients: int
    dp_epsilon: float
    mu: float
    local_epochs: int
    batch_size: int
    lr: float
    max_grad_norm: float


@dataclass(frozen=True)
class RoundRecord:
    round: int
    failed: bool
    participants: list[str]
    cohort: list[str]
    metrics: dict[str, float]
    model_file: str | None
    """File name (in the run directory) of the global model after this round; None if it failed."""
    digest: str | None
    completed_at: str


@dataclass(frozen=True)
class RunState:
    run_id: str
    flower_run_id: int
    base_model: str
    base_digest: str
    base_version: int
    model_version: int
    """The version this run trains (base + 1): privacy budgets and events are about it."""
    settings: RunSettings
    started_at: str
    rounds: list[RoundRecord] = field(default_factory=list)
    finished: bool = False
    published_digest: str | None = None
    published_path: str | None = None

    @property
    def last_round(self) -> int:
        return self.rounds[-1].round if self.rounds else 0

    @property
    def current_model_file(self) -> str | None:
        """The newest global model this run produced (None: still the base model)."""
        for record in reversed(self.rounds):
            if record.model_file is not None:
                return record.model_file
        return None

    @property
    def successful_rounds(self) -> int:
        return sum(1 for record in self.rounds if not record.failed)

    def to_json(self) -> str:
        return json.dumps({"format": STATE_FORMAT, **asdict(self)}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunState:
        document = json.loads(text)
        if document.pop("format", None) != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} document")
        document["settings"] = RunSettings(**document["settings"])
        document["rounds"] = [RoundRecord(**record) for record in document["rounds"]]
        return cls(**document)


def new_run_id(base_version: int) -> str:
    """`v<next version>-<utc time>-<random>`: sortable, unique, and valid as an event `run_id`."""
    stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%S")
    return f"v{base_version + 1}-{stamp}-{secrets.token_hex(3)}"


def flower_run_id(run_id: str) -> int:
    """Flower's integer run id for our run id (stable, so a resumed run keeps it)."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big") & (2**63 - 1)


class RunStore:
    """The runs under `home/federation`; one unfinished run at a time."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.root = self.home / "federation"
        self.active_file = self.root / "active.json"

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def published_model_path(self, version: int) -> Path:
        return self.home / "models" / f"mshale1_v{version}.pt"

    def active(self) -> RunState | None:
        if not self.active_file.exists():
            return None
        try:
            run_id = json.loads(self.active_file.read_text(encoding="utf-8"))["run_id"]
            return self.load(run_id)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RunStateError(
                f"{self.active_file} cannot be read ({error}); "
                "fix or remove it (a new run then starts from the model given)"
            ) from None

    def load(self, run_id: str) -> RunState:
        path = self.run_dir(run_id) / "state.json"
        try:
            return RunState.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RunStateError(f"training run state {path} cannot be read ({error})") from None

    def save(self, state: RunState) -> None:
        write_atomic(self.run_dir(state.run_id) / "state.json", state.to_json())

    def open(
        self,
        *,
        base_model: Path,
        base_digest: str,
        base_version: int,
        settings: RunSettings,
        new_run: bool = False,
    ) -> tuple[RunState, bool]:
        """The unfinished run of this base model (resumed: True), or a new one (False)."""
        active = self.active()
        if active is not None and not active.finished and not new_run:
            if active.base_digest != base_digest:
                raise RunStateError(
                    f"an unfinished training run {active.run_id} of another base model ({active.base_model}) exists "
                    f"under {self.root}; resume it with that model, or pass --new-run to abandon it"
                )
            if active.settings != settings:
                differences = _differences(active.settings, settings)
                raise RunStateError(
                    f"the unfinished run {active.run_id} of this model was started with other settings "
                    f"({differences}); run serve with the same settings to resume it, or pass --new-run to start again"
                )
            return active, True
        run_id = new_run_id(base_version)
        state = RunState(
            run_id=run_id,
            flower_run_id=flower_run_id(run_id),
            base_model=str(base_model),
            base_digest=base_digest,
            base_version=base_version,
            model_version=base_version + 1,
            settings=settings,
            started_at=datetime.now(UTC).isoformat(),
        )
        self.save(state)
        write_atomic(self.active_file, json.dumps({"run_id": run_id}) + "\n")
        return state, False

    def record_round(self, state: RunState, record: RoundRecord) -> RunState:
        if record.round != state.last_round + 1:
            raise ValueError(f"round {record.round} recorded after round {state.last_round}")
        updated = replace(state, rounds=[*state.rounds, record])
        self.save(updated)
        return updated

    def finish(self, state: RunState, *, digest: str | None, path: Path | None) -> RunState:
        updated = replace(
            state, finished=True, published_digest=digest, published_path=str(path) if path is not None else None
        )
        self.save(updated)
        self.active_file.unlink(missing_ok=True)
        return updated


def _differences(old: RunSettings, new: RunSettings) -> str:
    before: dict[str, Any] = asdict(old)
    after: dict[str, Any] = asdict(new)
    return ", ".join(f"{key} {before[key]} -> {after[key]}" for key in before if before[key] != after[key])


__all__ = ["RoundRecord", "RunSettings", "RunState", "RunStateError", "RunStore", "flower_run_id", "new_run_id"]
