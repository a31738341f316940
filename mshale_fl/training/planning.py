"""Privacy planning on the partner: noise for a whole schedule, and the partner's own accountant.

Planning. A partner joins a training run knowing its budget (epsilon, delta), its sample rate and
steps per round (`local.dp_round_shape`) and the number of rounds. `plan_noise_multiplier`
returns the smallest noise multiplier (Opacus' `get_noise_multiplier`, RDP accountant, over all
steps of all rounds) for which the composed schedule stays within epsilon, checked again with the
ledger's own `epsilon` so the two accountants cannot disagree at the boundary. After a restart,
`already_spent` (the accountant's history) is composed in and the rest of the schedule is planned
into what remains.

The effective budget is the smaller of the server's epsilon (`serve --dp-epsilon`) and the
partner's (`join --dp-epsilon`): `effective_epsilon`.

The accountant. `PartnerAccountant` is the partner's record of what it has spent for one
`(partner_id, model_version)`: the history of mechanisms (noise multiplier, sample rate, steps),
one JSON file under `MSHALE_HOME/privacy/<partner_id>/model-<version>.json`, written atomically.
Epsilon is the ledger's `epsilon(history, delta)` (RDP composition, Opacus' analysis), so the
partner's number and Mishale's are the same function of the same history. Before any training the
partner asks `would_exceed(mechanism, epsilon_budget)`; it records the round with `record`
before its update leaves (a crash after recording over-counts, never under-counts). `record` is
idempotent per round id, so a round retried after a reconnect is counted once.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

from mshale_fl.config import get_settings
from mshale_fl.errors import UserFacingError
from mshale_fl.fileio import write_atomic
from mshale_fl.ledger.accounting import ACCOUNTANT, Mechanism, accountant_version
from mshale_fl.ledger.accounting import epsilon as ledger_epsilon

ACCOUNTANT_FILE_FORMAT = "mshale-partner-accountant/1"
EPSILON_TOLERANCE = 0.01  # get_noise_multiplier's bisection stops within this of the target
_PARTNER_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class PrivacyBudgetError(UserFacingError):
    """The budget cannot cover the planned schedule (or the accountant file cannot be used)."""


def effective_epsilon(server_epsilon: float, partner_epsilon: float) -> float:
    """The budget a partner trains under: the smaller of the server's and its own epsilon."""
    for name, value in (("server epsilon", server_epsilon), ("partner epsilon", partner_epsilon)):
        if not (math.isfinite(value) and value > 0):
            raise PrivacyBudgetError(f"{name} must be a finite number > 0, got {value!r}")
    return min(server_epsilon, partner_epsilon)


def _check_delta(delta: float) -> None:
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise PrivacyBudgetError(f"delta must be in (0, 1), got {delta!r}")


def plan_noise_multiplier(
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps_per_round: int,
    rounds: int,
    *,
    already_spent: Sequence[Mechanism] = (),
) -> float:
    """The noise multiplier for which `rounds` rounds of `steps_per_round` steps fit in (epsilon, delta)."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise PrivacyBudgetError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    _check_delta(delta)
    if not (0 < sample_rate <= 1):
        raise PrivacyBudgetError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if steps_per_round < 1 or rounds < 1:
        raise PrivacyBudgetError(f"steps_per_round and rounds must be >= 1, got {steps_per_round} and {rounds}")
    spent = list(already_spent)
    total_steps = steps_per_round * rounds

    def composed(sigma: float) -> float:
        return ledger_epsilon(spent + [Mechanism(sigma, sample_rate, total_steps)], delta)

    if spent and ledger_epsilon(spent, delta) >= epsilon:
        raise PrivacyBudgetError(
            f"the budget (epsilon {epsilon:g}) is already spent ({ledger_epsilon(spent, delta):.4g}); no further round fits"
        )
    if spent:
        sigma = _bisect_noise(composed, epsilon)
    else:
        from opacus.accountants.utils import get_noise_multiplier

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optimal RDP order at the edge of the grid: the bound holds
                sigma = float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                                   steps=total_steps, accountant="rdp",
                                                   epsilon_tolerance=EPSILON_TOLERANCE))  # fmt: skip
        except ValueError as error:
            raise PrivacyBudgetError(f"epsilon {epsilon:g} is too small for {total_steps} steps: {error}") from None
    # The ledger composes per step and multiplies; Opacus composes `steps` at once. Float rounding could
    # put the two on either side of the target, so the ledger's answer is the one that must fit.
    for _ in range(1000):
        if composed(sigma) <= epsilon:
            return sigma
        sigma *= 1.0 + 1e-6
    raise PrivacyBudgetError(f"no noise multiplier near {sigma:g} fits epsilon {epsilon:g}")  # the accountants disagree


def _bisect_noise(composed, target: float) -> float:
    """Smallest sigma (to the tolerance) with composed(sigma) <= target; the same search as Opacus'."""
    low, high = 0.0, 10.0
    while composed(high) > target:
        high *= 2
        if high > 1e6:
            raise PrivacyBudgetError("the remaining budget is too small for the rest of the schedule")
    while target - composed(high) > EPSILON_TOLERANCE:
        middle = (low + high) / 2
        if composed(middle) < target:
            high = middle
        else:
            low = middle
    return high


class PartnerAccountant:
    """What one partner has spent on one model version; persisted as JSON under MSHALE_HOME."""

    def __init__(self, partner_id: str, model_version: int, *, delta: float, home: Path | None = None) -> None:
        if not (2 <= len(partner_id) <= 63 and set(partner_id) <= _PARTNER_ID_CHARS and partner_id[0] != "-"):
            raise PrivacyBudgetError(f"invalid partner id {partner_id!r} (lower-case letters, digits and '-')")
        if isinstance(model_version, bool) or not isinstance(model_version, int) or model_version < 0:
            raise PrivacyBudgetError(f"model_version must be an integer >= 0, got {model_version!r}")
        _check_delta(delta)
        self.partner_id = partner_id
        self.model_version = model_version
        self.delta = delta
        self.path = Path(home if home is not None else get_settings().home) / "privacy" / partner_id / f"model-{model_version}.json"
        self.history: list[Mechanism] = []
        self.round_ids: list[str | None] = []
        self._load()

    # -- reading

    @property
    def epsilon_spent(self) -> float:
        return ledger_epsilon(self.history, self.delta)

    def epsilon_after(self, mechanism: Mechanism) -> float:
        """Epsilon the history would reach with this mechanism added."""
        return ledger_epsilon([*self.history, mechanism], self.delta)

    def would_exceed(self, mechanism: Mechanism, epsilon_budget: float) -> bool:
        """True when running `mechanism` would take the spend above `epsilon_budget` (check before training)."""
        return self.epsilon_after(mechanism) > epsilon_budget

    def has_recorded(self, round_id: str) -> bool:
        return round_id in self.round_ids

    # -- writing

    def record(self, mechanism: Mechanism, *, round_id: str | None = None) -> bool:
        """Add a spend and persist it; False (and no change) when `round_id` is already recorded."""
        if round_id is not None and round_id in self.round_ids:
            return False
        self.history.append(mechanism)
        self.round_ids.append(round_id)
        self._save()
        return True

    def _save(self) -> None:
        document = {
            "format": ACCOUNTANT_FILE_FORMAT,
            "partner_id": self.partner_id,
            "model_version": self.model_version,
            "delta": self.delta,
            "accountant": ACCOUNTANT,
            "accountant_version": accountant_version(),
            "history": [
                {"noise_multiplier": m.noise_multiplier, "sample_rate": m.sample_rate, "steps": m.steps, "round_id": r}
                for m, r in zip(self.history, self.round_ids, strict=True)
            ],
        }
        write_atomic(self.path, json.dumps(document, indent=2, sort_keys=True) + "\n")

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            if document.get("format") != ACCOUNTANT_FILE_FORMAT or document.get("accountant") != ACCOUNTANT:
                raise ValueError("not a partner accountant file")
            if document["partner_id"] != self.partner_id or document["model_version"] != self.model_version:
                raise ValueError("it belongs to another partner or model version")
            entries = [
                (Mechanism(float(e["noise_multiplier"]), float(e["sample_rate"]), int(e["steps"])), e.get("round_id"))
                for e in document["history"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as error:
            # Never start again from zero: an unreadable record of spending must stop training, not reset it.
            raise PrivacyBudgetError(f"privacy accountant {self.path} cannot be used ({error}); restore it from a backup") from None
        if document["delta"] != self.delta:
            raise PrivacyBudgetError(
                f"privacy accountant {self.path} is kept at delta {document['delta']!r}, not {self.delta!r}"
            )
        self.history = [mechanism for mechanism, _ in entries]
        self.round_ids = [round_id for _, round_id in entries]
