"""Helpers shared by the audit tests (importable from test modules, unlike conftest.py)."""

from __future__ import annotations

import os
import uuid
from typing import Any

from mshale_fl.audit.stores.base import (
    KeyHistory,
    ObjectExistsError,
    ObjectMissingError,
    check_key,
)
from mshale_fl.schemas import new_event
from mshale_fl.schemas.payloads import (
    AccessDenied,
    BudgetLow,
    ModelPublished,
    Reason,
    RoundStarted,
    SubmissionAccepted,
    UpdateMasked,
)

ORIGIN = "mshale.test/audit"
S3_REGION = "eu-west-1"
S3_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


# -- events ----------------------------------------------------------------------------------


def make_event(number: int, partner: str = "lab-a") -> Any:
    """A valid event of one of several types, chosen by `number` (fresh id each call)."""
    kind = number % 6
    if kind == 0:
        payload: Any = UpdateMasked(
            run_id="run-1",
            round=1 + number % 9,
            model_version=2,
            digest=f"{number:064x}",
            epsilon_spent=0.125 * (1 + number % 4),
            delta=1e-5,
        )
        return new_event("update.masked", payload, partner_id=partner)
    if kind == 1:
        payload = SubmissionAccepted(submission_id=uuid.uuid4(), kind="spec", items=1 + number % 5)
        return new_event("submission.accepted", payload, partner_id=partner)
    if kind == 2:
        payload = RoundStarted(run_id="run-1", round=1 + number % 9, model_version=2, cohort=["lab-a", "lab-b"])
        return new_event("round.started", payload, partner_id="mishale")
    if kind == 3:
        payload = BudgetLow(
            model_version=2, epsilon_total=8.0, epsilon_spent=7.5, epsilon_remaining=0.5, fraction_remaining=0.0625
        )
        return new_event("budget.low", payload, partner_id=partner)
    if kind == 4:
        payload = ModelPublished(model_version=3, parent_version=2, sha256=f"{number:064x}", rounds=number % 50)
        return new_event("model.published", payload, partner_id="mishale")
    payload = AccessDenied(
        request_id=uuid.uuid4(),
        action="model.download",
        reasons=[Reason(code="tier.too_low", message="Tier 3 agreement required")],
        remedy="Sign the Tier 3 agreement.",
    )
    return new_event("access.denied", payload, partner_id=partner)


# -- an in-memory store that can also be tampered with -------------------------------------------


class MemoryStore:
    """Write-once dict store keeping every version, with explicit tampering helpers for tests."""

    def __init__(self) -> None:
        self.versions: dict[str, list[bytes]] = {}
        self.delete_markers: dict[str, int] = {}

    @property
    def description(self) -> str:
        return f"memory:{id(self):x}"

    def put_immutable(self, key: str, data: bytes) -> None:
        check_key(key)
        if self.versions.get(key):
            raise ObjectExistsError(key)
        self.versions.setdefault(key, []).append(bytes(data))

    def get(self, key: str) -> bytes:
        if not self.versions.get(key):
            raise ObjectMissingError(key)
        return self.versions[key][-1]

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(key for key, versions in self.versions.items() if versions and key.startswith(prefix))

    def key_history(self, prefix: str) -> list[KeyHistory]:
        return [
            KeyHistory(key, tuple(str(n) for n in range(len(versions))), tuple(str(n) for n in range(self.delete_markers.get(key, 0))))
            for key, versions in sorted(self.versions.items())
            if key.startswith(prefix)
        ]

    # tampering (what someone with raw write access could do; a real WORM bucket keeps the history)
    def replace(self, key: str, data: bytes) -> None:
        self.versions[key] = [bytes(data)]

    def remove(self, key: str) -> None:
        del self.versions[key]

    def copy(self) -> MemoryStore:
        clone = MemoryStore()
        clone.versions = {key: list(values) for key, values in self.versions.items()}
        clone.delete_markers = dict(self.delete_markers)
        return clone


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    return env
