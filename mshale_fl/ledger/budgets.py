"""Privacy budgets per (partner, model version), capped per (partner, dataset), spent by reservation.

A training round first *reserves* its mechanism (noise multiplier, sample rate, steps) for each
partner. The reservation is checked and written in one transaction: the epsilon of the stored
history plus this mechanism, composed by the RDP accountant with open reservations counted as
spent, must fit both the model version's total and the dataset's total across model versions,
or `BudgetExceeded` is raised and nothing is written. `mark_started` records that training began
(from then on the data has been touched, so the reservation can only be committed), `commit`
marks it spent, `release` gives it back if training never started. The round id makes every
step idempotent: reserving the same round twice returns the first reservation.

Concurrency: every budget mutation of a partner first locks that partner's row
(`SELECT ... FOR UPDATE` on PostgreSQL), then its dataset row, then its budget row, always in
that order. The partner row is the unit because the dataset cap makes all model versions of a
partner one account. On SQLite the store opens every transaction with `BEGIN IMMEDIATE`, which
already serialises writers on the database lock.

When remaining epsilon falls below 10 % of the total, the budget is paused: no further
reservation for that model version until an operator raises the total (`set_budget_total`); a
new model version starts with a fresh budget (still bound by the dataset cap). `take_budget_alerts`
turns each new pause into `budget.low` + `partner.paused` events, exactly once per pause.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from mshale_fl.ledger._sql import as_utc, for_update, insert_if_absent, now_utc
from mshale_fl.ledger.accounting import ACCOUNTANT, Mechanism, accountant_version, epsilon
from mshale_fl.ledger.errors import (
    BudgetExceeded,
    BudgetPaused,
    LedgerError,
    NoBudget,
    PartnerNotActive,
    ReleaseRefused,
    ReservationConflict,
    ReservationNotFound,
)
from mshale_fl.ledger.partners import Partner, get_partner
from mshale_fl.ledger.tables import privacy_budgets, privacy_datasets, privacy_spends
from mshale_fl.logging import get_logger
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.payloads import BudgetLow, PartnerPaused

log = get_logger(__name__)

LOW_FRACTION = 0.10
"""Below this fraction of its total remaining, a budget is paused."""

PAUSE_REASON_LOW = "budget_low"
DEFAULT_DATASET = "default"
_DATASET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_OPEN = ("reserved", "committed")
_MAX_EPSILON = 1_000.0


def round_id_for(run_id: str, round_number: int) -> str:
    """The reservation key of one training round, as the handler derives it from round events."""
    return f"{run_id}/{round_number}"


@dataclass(frozen=True)
class Spend:
    """One reservation and what became of it."""

    partner_id: str
    model_version: int
    dataset_id: str
    round_id: str
    mechanism: Mechanism
    accountant: str
    accountant_version: str
    status: str
    training_started: bool
    reserved_at: datetime
    started_at: datetime | None
    committed_at: datetime | None
    released_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "round_id": self.round_id,
            "model_version": self.model_version,
            "dataset_id": self.dataset_id,
            "noise_multiplier": self.mechanism.noise_multiplier,
            "sample_rate": self.mechanism.sample_rate,
            "steps": self.mechanism.steps,
            "accountant": self.accountant,
            "accountant_version": self.accountant_version,
            "status": self.status,
            "training_started": self.training_started,
            "reserved_at": self.reserved_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "committed_at": self.committed_at.isoformat() if self.committed_at else None,
            "released_at": self.released_at.isoformat() if self.released_at else None,
        }


@dataclass(frozen=True)
class DatasetStatus:
    partner_id: str
    dataset_id: str
    epsilon_total: float
    delta: float
    epsilon_spent: float
    """Composed over every open (reserved or committed) spend of every model version on this dataset."""

    @property
    def epsilon_remaining(self) -> float:
        return max(self.epsilon_total - self.epsilon_spent, 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id,
            "epsilon_total": self.epsilon_total,
            "delta": self.delta,
            "epsilon_spent": self.epsilon_spent,
            "epsilon_remaining": self.epsilon_remaining,
        }


@dataclass(frozen=True)
class BudgetStatus:
    partner_id: str
    model_version: int
    dataset_id: str
    epsilon_total: float
    delta: float
    state: str
    pause_reason: str | None
    epsilon_spent: float
    """Open reservations and commits, composed: what a new reservation is checked against."""
    epsilon_committed: float
    dataset: DatasetStatus
    spends: list[Spend] = field(default_factory=list)

    @property
    def epsilon_remaining(self) -> float:
        return max(self.epsilon_total - self.epsilon_spent, 0.0)

    @property
    def fraction_remaining(self) -> float:
        return min(max(self.epsilon_remaining / self.epsilon_total, 0.0), 1.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "partner_id": self.partner_id,
            "model_version": self.model_version,
            "dataset_id": self.dataset_id,
            "epsilon_total": self.epsilon_total,
            "delta": self.delta,
            "epsilon_spent": self.epsilon_spent,
            "epsilon_committed": self.epsilon_committed,
            "epsilon_remaining": self.epsilon_remaining,
            "fraction_remaining": self.fraction_remaining,
            "state": self.state,
            "pause_reason": self.pause_reason,
            "dataset": self.dataset.as_dict(),
            "spends": [spend.as_dict() for spend in self.spends],
        }


def _check_epsilon(name: str, value: float) -> float:
    if not (math.isfinite(value) and 0 < value <= _MAX_EPSILON):
        raise LedgerError(f"{name} must be in (0, {_MAX_EPSILON:g}], got {value}")
    return value


def _check_delta(value: float) -> float:
    if not (math.isfinite(value) and 0 < value < 1):
        raise LedgerError(f"delta must be in (0, 1), got {value}")
    return value


def _check_dataset(dataset_id: str) -> str:
    if not _DATASET_PATTERN.match(dataset_id):
        raise LedgerError(f"dataset id {dataset_id!r} is not valid: lower-case letters, digits, '_', '.', '-'")
    return dataset_id


def _check_model_version(model_version: int) -> int:
    if isinstance(model_version, bool) or not isinstance(model_version, int) or not 0 <= model_version <= 1_000_000:
        raise LedgerError(f"model version must be an integer in [0, 1000000], got {model_version!r}")
    return model_version


def _spend(row: Any) -> Spend:
    return Spend(
        partner_id=row.partner_id,
        model_version=row.model_version,
        dataset_id=row.dataset_id,
        round_id=row.round_id,
        mechanism=Mechanism(row.noise_multiplier, row.sample_rate, row.steps),
        accountant=row.accountant,
        accountant_version=row.accountant_version,
        status=row.status,
        training_started=bool(row.training_started),
        reserved_at=as_utc(row.reserved_at),  # type: ignore[arg-type]
        started_at=as_utc(row.started_at),
        committed_at=as_utc(row.committed_at),
        released_at=as_utc(row.released_at),
    )


def _history(
    connection: Connection,
    partner_id: str,
    *,
    model_version: int | None = None,
    dataset_id: str | None = None,
    statuses: Sequence[str] = _OPEN,
) -> list[Mechanism]:
    statement = select(
        privacy_spends.c.noise_multiplier,
        privacy_spends.c.sample_rate,
        privacy_spends.c.steps,
        privacy_spends.c.accountant,
    ).where(privacy_spends.c.partner_id == partner_id, privacy_spends.c.status.in_(statuses))
    if model_version is not None:
        statement = statement.where(privacy_spends.c.model_version == model_version)
    if dataset_id is not None:
        statement = statement.where(privacy_spends.c.dataset_id == dataset_id)
    history = []
    for row in connection.execute(statement.order_by(privacy_spends.c.id)).all():
        if row.accountant != ACCOUNTANT:
            raise LedgerError(
                f"spend recorded with accountant {row.accountant!r}; this ledger composes only {ACCOUNTANT!r}"
            )
        history.append(Mechanism(row.noise_multiplier, row.sample_rate, row.steps))
    return history


def _lock_partner(connection: Connection, partner_id: str) -> Partner:
    partner = get_partner(connection, partner_id, lock=True)
    assert partner is not None
    return partner


def _dataset_row(connection: Connection, partner: Partner, dataset_id: str, *, lock: bool) -> Any:
    insert_if_absent(
        connection,
        privacy_datasets,
        {
            "partner_id": partner.id,
            "dataset_id": dataset_id,
            "epsilon_total": partner.dataset_epsilon_total,
            "delta": partner.delta,
            "created_at": now_utc(),
            "updated_at": now_utc(),
        },
    )
    statement = select(privacy_datasets).where(
        privacy_datasets.c.partner_id == partner.id, privacy_datasets.c.dataset_id == dataset_id
    )
    return connection.execute(for_update(connection, statement) if lock else statement).one()


def _budget_row(connection: Connection, partner_id: str, model_version: int, *, lock: bool) -> Any:
    statement = select(privacy_budgets).where(
        privacy_budgets.c.partner_id == partner_id, privacy_budgets.c.model_version == model_version
    )
    return connection.execute(for_update(connection, statement) if lock else statement).first()


def _open_locked(
    connection: Connection,
    partner: Partner,
    model_version: int,
    dataset_id: str | None,
    epsilon_total: float | None = None,
) -> tuple[Any, Any]:
    """(dataset row, budget row), both locked; the budget is opened from the partner's defaults if new."""
    existing = _budget_row(connection, partner.id, model_version, lock=False)
    if existing is not None:
        if dataset_id is not None and existing.dataset_id != dataset_id:
            raise ReservationConflict(
                f"model version {model_version} of partner {partner.id!r} is accounted on dataset "
                f"{existing.dataset_id!r}, not {dataset_id!r}"
            )
        dataset_id = existing.dataset_id
    dataset_id = _check_dataset(dataset_id or DEFAULT_DATASET)
    dataset = _dataset_row(connection, partner, dataset_id, lock=True)
    if existing is None:
        insert_if_absent(
            connection,
            privacy_budgets,
            {
                "partner_id": partner.id,
                "model_version": model_version,
                "dataset_id": dataset_id,
                "epsilon_total": epsilon_total or partner.epsilon_per_model_version,
                "delta": partner.delta,
                "state": "active",
                "pause_reason": None,
                "alert_published": False,
                "created_at": now_utc(),
                "updated_at": now_utc(),
            },
        )
        log.info("budget_opened", partner_id=partner.id, model_version=model_version, dataset_id=dataset_id)
    return dataset, _budget_row(connection, partner.id, model_version, lock=True)


def _pause_if_low(connection: Connection, budget: Any, spent: float) -> bool:
    """Pause the budget if less than LOW_FRACTION remains; True if this call paused it."""
    if budget.state == "paused" or (budget.epsilon_total - spent) >= LOW_FRACTION * budget.epsilon_total:
        return False
    connection.execute(
        update(privacy_budgets)
        .where(
            privacy_budgets.c.partner_id == budget.partner_id, privacy_budgets.c.model_version == budget.model_version
        )
        .values(state="paused", pause_reason=PAUSE_REASON_LOW, alert_published=False, updated_at=now_utc())
    )
    log.info(
        "budget_paused",
        partner_id=budget.partner_id,
        model_version=budget.model_version,
        epsilon_spent=spent,
        epsilon_total=budget.epsilon_total,
    )
    return True


def _get_spend(connection: Connection, partner_id: str, round_id: str) -> Any:
    return connection.execute(
        select(privacy_spends).where(privacy_spends.c.partner_id == partner_id, privacy_spends.c.round_id == round_id)
    ).first()


def reserve(
    connection: Connection,
    *,
    partner_id: str,
    model_version: int,
    round_id: str,
    mechanism: Mechanism,
    dataset_id: str | None = None,
) -> Spend:
    """Reserve `mechanism` for one round, or raise `BudgetExceeded` (nothing written) if it does not fit.

    Reserving a round already reserved returns the first reservation (a retry); the same round
    with another mechanism or model version is a `ReservationConflict`.
    """
    _check_model_version(model_version)
    if not round_id or len(round_id) > 100:
        raise LedgerError("round id must be 1-100 characters")
    partner = _lock_partner(connection, partner_id)
    existing = _get_spend(connection, partner_id, round_id)
    if existing is not None:
        spend = _spend(existing)
        if spend.mechanism != mechanism or spend.model_version != model_version:
            raise ReservationConflict(
                f"round {round_id!r} of partner {partner_id!r} was reserved with another mechanism or model version"
            )
        return spend
    if not partner.active:
        raise PartnerNotActive(partner_id)
    dataset, budget = _open_locked(connection, partner, model_version, dataset_id)
    version_history = _history(connection, partner_id, model_version=model_version)
    spent = epsilon(version_history, budget.delta)
    if budget.state == "paused":
        raise BudgetPaused(
            partner_id=partner_id, model_version=model_version, epsilon_total=budget.epsilon_total, epsilon_spent=spent
        )
    after = epsilon([*version_history, mechanism], budget.delta)
    if after > budget.epsilon_total:
        raise BudgetExceeded(
            partner_id=partner_id,
            model_version=model_version,
            scope="model_version",
            epsilon_total=budget.epsilon_total,
            epsilon_spent=spent,
            epsilon_requested=after,
        )
    dataset_history = _history(connection, partner_id, dataset_id=budget.dataset_id)
    dataset_after = epsilon([*dataset_history, mechanism], dataset.delta)
    if dataset_after > dataset.epsilon_total:
        raise BudgetExceeded(
            partner_id=partner_id,
            model_version=model_version,
            scope="dataset",
            epsilon_total=dataset.epsilon_total,
            epsilon_spent=epsilon(dataset_history, dataset.delta),
            epsilon_requested=dataset_after,
            message=(
                f"dataset {budget.dataset_id!r} of partner {partner_id!r} would exceed its cap across model versions: "
                f"{dataset_after:.4g} after this round, cap {dataset.epsilon_total:.4g}"
            ),
        )
    connection.execute(
        insert(privacy_spends).values(
            partner_id=partner_id,
            model_version=model_version,
            dataset_id=budget.dataset_id,
            round_id=round_id,
            noise_multiplier=mechanism.noise_multiplier,
            sample_rate=mechanism.sample_rate,
            steps=mechanism.steps,
            accountant=ACCOUNTANT,
            accountant_version=accountant_version(),
            status="reserved",
            training_started=False,
            reserved_at=now_utc(),
        )
    )
    _pause_if_low(connection, budget, after)
    log.info(
        "budget_reserved", partner_id=partner_id, model_version=model_version, round_id=round_id, epsilon_after=after
    )
    return _spend(_get_spend(connection, partner_id, round_id))


def mark_started(connection: Connection, *, round_id: str, partner_ids: Iterable[str] | None = None) -> list[Spend]:
    """Record that training began for the round's reservations (all, or of these partners).

    From then on a reservation can no longer be released: the data has been used.
    Returns the reservations now marked started.
    """
    statement = select(privacy_spends.c.partner_id).where(privacy_spends.c.round_id == round_id)
    if partner_ids is not None:
        statement = statement.where(privacy_spends.c.partner_id.in_(list(partner_ids)))
    concerned = sorted(set(connection.execute(statement).scalars().all()))
    started = []
    for partner_id in concerned:  # sorted: the lock order every multi-partner operation uses
        _lock_partner(connection, partner_id)
        changed = connection.execute(
            update(privacy_spends)
            .where(
                privacy_spends.c.partner_id == partner_id,
                privacy_spends.c.round_id == round_id,
                privacy_spends.c.training_started.is_(False),
                privacy_spends.c.status != "released",
            )
            .values(training_started=True, started_at=now_utc())
        ).rowcount
        if changed:
            started.append(_spend(_get_spend(connection, partner_id, round_id)))
    return started


def commit(connection: Connection, *, partner_id: str, round_id: str) -> Spend:
    """Mark the round's reservation spent (idempotent).

    A released reservation that is committed anyway (an update arrived after all) is recorded as
    spent: the ledger keeps what happened, even if it now exceeds the total.
    """
    _lock_partner(connection, partner_id)
    row = _get_spend(connection, partner_id, round_id)
    if row is None:
        raise ReservationNotFound(partner_id, round_id)
    if row.status == "committed":
        return _spend(row)
    if row.status == "released":
        log.warning("spend_committed_after_release", partner_id=partner_id, round_id=round_id)
    now = now_utc()
    connection.execute(
        update(privacy_spends)
        .where(privacy_spends.c.id == row.id)
        .values(status="committed", committed_at=now, training_started=True, started_at=row.started_at or now)
    )
    budget = _budget_row(connection, partner_id, row.model_version, lock=True)
    _pause_if_low(
        connection, budget, epsilon(_history(connection, partner_id, model_version=row.model_version), budget.delta)
    )
    return _spend(_get_spend(connection, partner_id, round_id))


def release(connection: Connection, *, partner_id: str, round_id: str) -> Spend:
    """Give a reservation back; only if training never started with it (idempotent)."""
    _lock_partner(connection, partner_id)
    row = _get_spend(connection, partner_id, round_id)
    if row is None:
        raise ReservationNotFound(partner_id, round_id)
    if row.status == "released":
        return _spend(row)
    if row.status == "committed" or row.training_started:
        raise ReleaseRefused(
            f"round {round_id!r} of partner {partner_id!r} cannot be released: training started with it, "
            "so its privacy cost is real; commit it instead"
        )
    # The training_started condition repeats the check inside the UPDATE, so a concurrent
    # mark_started that committed in between makes this a no-op rather than a lost spend.
    changed = connection.execute(
        update(privacy_spends)
        .where(
            privacy_spends.c.id == row.id,
            privacy_spends.c.status == "reserved",
            privacy_spends.c.training_started.is_(False),
        )
        .values(status="released", released_at=now_utc())
    ).rowcount
    if not changed:
        raise ReleaseRefused(f"round {round_id!r} of partner {partner_id!r} started training meanwhile; commit it")
    return _spend(_get_spend(connection, partner_id, round_id))


def open_budget(
    connection: Connection, partner_id: str, model_version: int, *, dataset_id: str | None = None
) -> BudgetStatus:
    """Open the (partner, model version) budget from the partner's defaults if it does not exist yet."""
    _check_model_version(model_version)
    partner = _lock_partner(connection, partner_id)
    _open_locked(connection, partner, model_version, dataset_id)
    return budget_status(connection, partner_id, model_version)


def set_budget_total(
    connection: Connection, partner_id: str, model_version: int, epsilon_total: float, *, dataset_id: str | None = None
) -> BudgetStatus:
    """Operator action: set a model version's total epsilon; resumes a paused budget if 10 % or more remains."""
    _check_model_version(model_version)
    _check_epsilon("epsilon total", epsilon_total)
    partner = _lock_partner(connection, partner_id)
    _dataset, budget = _open_locked(connection, partner, model_version, dataset_id, epsilon_total)
    spent = epsilon(_history(connection, partner_id, model_version=model_version), budget.delta)
    low = (epsilon_total - spent) < LOW_FRACTION * epsilon_total
    values: dict[str, Any] = {"epsilon_total": epsilon_total, "updated_at": now_utc()}
    if not low and budget.state == "paused":
        values.update(state="active", pause_reason=None, alert_published=False)
    connection.execute(
        update(privacy_budgets)
        .where(privacy_budgets.c.partner_id == partner_id, privacy_budgets.c.model_version == model_version)
        .values(**values)
    )
    _pause_if_low(connection, _budget_row(connection, partner_id, model_version, lock=False), spent)
    log.info("budget_total_set", partner_id=partner_id, model_version=model_version, epsilon_total=epsilon_total)
    return budget_status(connection, partner_id, model_version)


def set_dataset_cap(
    connection: Connection,
    partner_id: str,
    epsilon_total: float,
    *,
    dataset_id: str = DEFAULT_DATASET,
    delta: float | None = None,
) -> DatasetStatus:
    """Operator action: set the cap across model versions for one of the partner's datasets."""
    _check_epsilon("dataset epsilon total", epsilon_total)
    values: dict[str, Any] = {"epsilon_total": epsilon_total, "updated_at": now_utc()}
    if delta is not None:
        values["delta"] = _check_delta(delta)
    partner = _lock_partner(connection, partner_id)
    _dataset_row(connection, partner, _check_dataset(dataset_id), lock=True)
    connection.execute(
        update(privacy_datasets)
        .where(privacy_datasets.c.partner_id == partner_id, privacy_datasets.c.dataset_id == dataset_id)
        .values(**values)
    )
    log.info("dataset_cap_set", partner_id=partner_id, dataset_id=dataset_id, epsilon_total=epsilon_total)
    return dataset_status(connection, partner_id, dataset_id)


def dataset_status(connection: Connection, partner_id: str, dataset_id: str = DEFAULT_DATASET) -> DatasetStatus:
    row = connection.execute(
        select(privacy_datasets).where(
            privacy_datasets.c.partner_id == partner_id, privacy_datasets.c.dataset_id == dataset_id
        )
    ).first()
    if row is None:
        partner = get_partner(connection, partner_id)
        assert partner is not None
        return DatasetStatus(partner_id, dataset_id, partner.dataset_epsilon_total, partner.delta, 0.0)
    return DatasetStatus(
        partner_id=partner_id,
        dataset_id=dataset_id,
        epsilon_total=row.epsilon_total,
        delta=row.delta,
        epsilon_spent=epsilon(_history(connection, partner_id, dataset_id=dataset_id), row.delta),
    )


def budget_status(connection: Connection, partner_id: str, model_version: int) -> BudgetStatus:
    """Total, spent (composed), remaining, state and spend history of one budget; `NoBudget` if never opened."""
    get_partner(connection, partner_id)
    budget = _budget_row(connection, partner_id, model_version, lock=False)
    if budget is None:
        raise NoBudget(partner_id, model_version)
    spends = [
        _spend(row)
        for row in connection.execute(
            select(privacy_spends)
            .where(privacy_spends.c.partner_id == partner_id, privacy_spends.c.model_version == model_version)
            .order_by(privacy_spends.c.id)
        ).all()
    ]
    return BudgetStatus(
        partner_id=partner_id,
        model_version=model_version,
        dataset_id=budget.dataset_id,
        epsilon_total=budget.epsilon_total,
        delta=budget.delta,
        state=budget.state,
        pause_reason=budget.pause_reason,
        epsilon_spent=epsilon([s.mechanism for s in spends if s.status in _OPEN], budget.delta),
        epsilon_committed=epsilon([s.mechanism for s in spends if s.status == "committed"], budget.delta),
        dataset=dataset_status(connection, partner_id, budget.dataset_id),
        spends=spends,
    )


def list_budgets(connection: Connection, partner_id: str) -> list[BudgetStatus]:
    get_partner(connection, partner_id)
    versions = connection.execute(
        select(privacy_budgets.c.model_version)
        .where(privacy_budgets.c.partner_id == partner_id)
        .order_by(privacy_budgets.c.model_version)
    ).scalars()
    return [budget_status(connection, partner_id, version) for version in versions]


def is_paused(connection: Connection, partner_id: str, model_version: int) -> bool:
    """Whether the partner is excluded from training this model version (a budget never opened is not)."""
    budget = _budget_row(connection, partner_id, model_version, lock=False)
    return budget is not None and budget.state == "paused"


def take_budget_alerts(
    connection: Connection, *, partner_id: str | None = None, causation: EventEnvelope[Any] | None = None
) -> list[EventEnvelope[Any]]:
    """`budget.low` and `partner.paused` for every pause not yet announced; marks them announced.

    The conditional update makes this exactly-once even when two workers look at the same pause.
    """
    statement = select(privacy_budgets).where(
        privacy_budgets.c.state == "paused", privacy_budgets.c.alert_published.is_(False)
    )
    if partner_id is not None:
        statement = statement.where(privacy_budgets.c.partner_id == partner_id)
    events: list[EventEnvelope[Any]] = []
    for budget in connection.execute(
        statement.order_by(privacy_budgets.c.partner_id, privacy_budgets.c.model_version)
    ).all():
        claimed = connection.execute(
            update(privacy_budgets)
            .where(
                privacy_budgets.c.partner_id == budget.partner_id,
                privacy_budgets.c.model_version == budget.model_version,
                privacy_budgets.c.alert_published.is_(False),
            )
            .values(alert_published=True, updated_at=now_utc())
        ).rowcount
        if not claimed:
            continue
        spent = epsilon(_history(connection, budget.partner_id, model_version=budget.model_version), budget.delta)
        spent = min(spent, _MAX_EPSILON)
        remaining = max(budget.epsilon_total - spent, 0.0)
        events.append(
            new_event(
                "budget.low",
                BudgetLow(
                    model_version=budget.model_version,
                    epsilon_total=budget.epsilon_total,
                    epsilon_spent=spent,
                    epsilon_remaining=remaining,
                    fraction_remaining=min(remaining / budget.epsilon_total, 1.0),
                ),
                partner_id=budget.partner_id,
                causation=causation,
            )
        )
        events.append(
            new_event(
                "partner.paused",
                PartnerPaused(model_version=budget.model_version, reason=budget.pause_reason or PAUSE_REASON_LOW),
                partner_id=budget.partner_id,
                causation=causation,
            )
        )
    return events


class PrivacyBudgets:
    """The budget operations, each in its own transaction on `engine` (for callers outside a handler)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def reserve(
        self, *, partner_id: str, model_version: int, round_id: str, mechanism: Mechanism, dataset_id: str | None = None
    ) -> Spend:
        with self.engine.begin() as connection:
            return reserve(
                connection,
                partner_id=partner_id,
                model_version=model_version,
                round_id=round_id,
                mechanism=mechanism,
                dataset_id=dataset_id,
            )

    def mark_started(self, *, round_id: str, partner_ids: Iterable[str] | None = None) -> list[Spend]:
        with self.engine.begin() as connection:
            return mark_started(connection, round_id=round_id, partner_ids=partner_ids)

    def commit(self, *, partner_id: str, round_id: str) -> Spend:
        with self.engine.begin() as connection:
            return commit(connection, partner_id=partner_id, round_id=round_id)

    def release(self, *, partner_id: str, round_id: str) -> Spend:
        with self.engine.begin() as connection:
            return release(connection, partner_id=partner_id, round_id=round_id)

    def set_budget_total(self, partner_id: str, model_version: int, epsilon_total: float) -> BudgetStatus:
        with self.engine.begin() as connection:
            return set_budget_total(connection, partner_id, model_version, epsilon_total)

    def set_dataset_cap(
        self, partner_id: str, epsilon_total: float, *, dataset_id: str = DEFAULT_DATASET, delta: float | None = None
    ) -> DatasetStatus:
        with self.engine.begin() as connection:
            return set_dataset_cap(connection, partner_id, epsilon_total, dataset_id=dataset_id, delta=delta)

    def status(self, partner_id: str, model_version: int) -> BudgetStatus:
        with self.engine.begin() as connection:
            return budget_status(connection, partner_id, model_version)

    def is_paused(self, partner_id: str, model_version: int) -> bool:
        with self.engine.begin() as connection:
            return is_paused(connection, partner_id, model_version)


__all__ = [
    "DEFAULT_DATASET",
    "LOW_FRACTION",
    "BudgetStatus",
    "DatasetStatus",
    "PrivacyBudgets",
    "Spend",
    "budget_status",
    "commit",
    "dataset_status",
    "is_paused",
    "list_budgets",
    "mark_started",
    "open_budget",
    "release",
    "reserve",
    "round_id_for",
    "set_budget_total",
    "set_dataset_cap",
    "take_budget_alerts",
]
