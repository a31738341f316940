"""Many concurrent spenders (threads and processes) on PostgreSQL and SQLite never overspend.

Every spender uses the same mechanism, so the number of reservations that fit is known exactly
by replaying them one after the other. A lost update (two spenders reading the same history)
would let more through; the test also checks the composed epsilon against the caps.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, func, select

from mshale_fl.ledger import budgets
from mshale_fl.ledger.accounting import Mechanism, epsilon
from mshale_fl.ledger.errors import BudgetExceeded, BudgetPaused
from mshale_fl.ledger.tables import privacy_spends
from mshale_fl.store import create_store_engine

from .helpers import MakePartner

ROUND = Mechanism(noise_multiplier=1.0, sample_rate=0.05, steps=50)
WORKERS = 8
ATTEMPTS_PER_WORKER = 5

pytestmark = pytest.mark.slow


def expected_successes(total: float, dataset_cap: float, delta: float = 1e-5) -> int:
    """Replay the reservations one by one: the count any serial order admits."""
    admitted = 0
    paused = False
    while not paused:
        after = epsilon([ROUND] * (admitted + 1), delta)
        if after > total or after > dataset_cap:
            break
        admitted += 1
        paused = total - after < budgets.LOW_FRACTION * total
    return admitted


def spend_attempts(url: str, partner_id: str, worker: int, barrier: object) -> list[str]:
    """One spender: its own engine (as a separate worker process would have), ATTEMPTS_PER_WORKER rounds."""
    engine = create_store_engine(url)
    ledger = budgets.PrivacyBudgets(engine)
    outcomes = []
    barrier.wait()  # type: ignore[attr-defined]
    try:
        for attempt in range(ATTEMPTS_PER_WORKER):
            try:
                ledger.reserve(partner_id=partner_id, model_version=1, round_id=f"w{worker}/{attempt}", mechanism=ROUND)
                outcomes.append("reserved")
            except BudgetPaused:
                outcomes.append("paused")
            except BudgetExceeded as error:
                outcomes.append(f"exceeded:{error.scope}")
    finally:
        engine.dispose()
    return outcomes


def _process_entry(url: str, partner_id: str, worker: int, barrier: object, results: object) -> None:
    results.put(spend_attempts(url, partner_id, worker, barrier))  # type: ignore[attr-defined]


def run_threads(url: str, partner_id: str) -> list[str]:
    barrier = threading.Barrier(WORKERS)
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(spend_attempts, url, partner_id, worker, barrier) for worker in range(WORKERS)]
        return [outcome for future in futures for outcome in future.result(timeout=240)]


def run_processes(url: str, partner_id: str) -> list[str]:
    # fork: the children inherit the imported accountant (spawn would re-import torch in each).
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(WORKERS)
    results = context.Queue()
    processes = [
        context.Process(target=_process_entry, args=(url, partner_id, worker, barrier, results))
        for worker in range(WORKERS)
    ]
    for process in processes:
        process.start()
    outcomes = [outcome for _ in processes for outcome in results.get(timeout=240)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return outcomes


RUNNERS: dict[str, Callable[[str, str], list[str]]] = {"threads": run_threads, "processes": run_processes}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize(
    ("total", "dataset_cap", "refusal"),
    [(8.0, 100.0, "paused"), (100.0, 6.0, "exceeded:dataset")],
    ids=["model-version-total", "dataset-cap"],
)
def test_concurrent_spenders_never_overspend(
    engine: Engine,
    ledger_url: str,
    make_partner: MakePartner,
    runner: str,
    total: float,
    dataset_cap: float,
    refusal: str,
) -> None:
    partner = make_partner(epsilon=total, dataset_epsilon=dataset_cap)
    engine.dispose()  # no pooled connection crosses a fork
    outcomes = RUNNERS[runner](ledger_url, partner.id)

    admitted = expected_successes(total, dataset_cap)
    assert 0 < admitted < WORKERS * ATTEMPTS_PER_WORKER
    counts = Counter(outcomes)
    assert counts["reserved"] == admitted
    assert counts[refusal] == WORKERS * ATTEMPTS_PER_WORKER - admitted
    with engine.begin() as connection:
        rows = connection.execute(
            select(func.count()).select_from(privacy_spends).where(privacy_spends.c.partner_id == partner.id)
        ).scalar_one()
        status = budgets.budget_status(connection, partner.id, 1)
    assert rows == admitted
    assert status.epsilon_spent <= total
    assert status.dataset.epsilon_spent <= dataset_cap
    assert status.epsilon_spent == pytest.approx(epsilon([ROUND] * admitted, 1e-5))


def test_concurrent_retries_of_the_same_rounds_reserve_each_once(
    engine: Engine, ledger_url: str, make_partner: MakePartner
) -> None:
    partner = make_partner(epsilon=100.0)
    engine.dispose()
    barrier = threading.Barrier(WORKERS)

    def retry_rounds(_worker: int) -> list[int]:
        worker_engine = create_store_engine(ledger_url)
        try:
            ledger = budgets.PrivacyBudgets(worker_engine)
            barrier.wait()
            return [
                id(ledger.reserve(partner_id=partner.id, model_version=1, round_id=f"shared/{n}", mechanism=ROUND))
                for n in range(3)
            ]
        finally:
            worker_engine.dispose()

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(retry_rounds, range(WORKERS)))
    with engine.begin() as connection:
        status = budgets.budget_status(connection, partner.id, 1)
    assert sorted(spend.round_id for spend in status.spends) == ["shared/0", "shared/1", "shared/2"]
    assert status.epsilon_spent == pytest.approx(epsilon([ROUND] * 3, 1e-5))
