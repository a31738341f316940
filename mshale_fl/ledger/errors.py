"""Errors of the ledger. `str()` of each is one line written for a person (the CLI prints it).

`PermanentLedgerError` marks errors that retrying an event cannot fix (it names a partner or a
round the ledger has never heard of): the consumer runtime maps it to its PermanentError and
dead-letters the event at once instead of redelivering it up to the delivery limit.
"""

from __future__ import annotations

from mshale_fl.errors import UserFacingError


class LedgerError(UserFacingError):
    """Base of every ledger error; the CLI prints it as one line and exits with `exit_code` (2)."""


class PermanentLedgerError(LedgerError):
    """An event the ledger can never apply; redelivery would fail the same way."""


class UnknownPartner(PermanentLedgerError):
    def __init__(self, partner_id: str) -> None:
        self.partner_id = partner_id
        super().__init__(f"no partner {partner_id!r} in the ledger; register it with `mshale-fl partners add`")


class ReservationNotFound(PermanentLedgerError):
    def __init__(self, partner_id: str, round_id: str) -> None:
        self.partner_id = partner_id
        self.round_id = round_id
        super().__init__(
            f"no privacy-budget reservation for partner {partner_id!r} in round {round_id!r}; "
            "a round must reserve budget before it trains"
        )


class InvalidPartnerId(LedgerError):
    pass


class PartnerExists(LedgerError):
    def __init__(self, partner_id: str) -> None:
        self.partner_id = partner_id
        super().__init__(f"partner {partner_id!r} is already registered (ids are never reused, even after revoke)")


class PartnerNotActive(LedgerError):
    def __init__(self, partner_id: str) -> None:
        self.partner_id = partner_id
        super().__init__(f"partner {partner_id!r} is revoked")


class TierRequirementNotMet(LedgerError):
    """The partner lacks the agreement its tier needs (a DPA for Tier 2, a training agreement for Tier 3)."""

    def __init__(self, partner_id: str, tier: int, code: str, message: str) -> None:
        self.partner_id = partner_id
        self.tier = tier
        self.code = code
        super().__init__(f"partner {partner_id!r} cannot be Tier {tier}: {message}")


class BudgetExceeded(LedgerError):
    """A reservation was refused before anything was spent.

    `scope` is "model_version" (the (partner, model_version) budget), "dataset" (the cap across
    model versions trained on the same data) or "paused" (the budget is paused below 10 %).
    """

    def __init__(
        self,
        *,
        partner_id: str,
        model_version: int,
        scope: str,
        epsilon_total: float,
        epsilon_spent: float,
        epsilon_requested: float,
        message: str | None = None,
    ) -> None:
        self.partner_id = partner_id
        self.model_version = model_version
        self.scope = scope
        self.epsilon_total = epsilon_total
        self.epsilon_spent = epsilon_spent
        self.epsilon_requested = epsilon_requested
        super().__init__(
            message
            or (
                f"privacy budget of partner {partner_id!r} ({scope.replace('_', ' ')}, model version {model_version}) "
                f"would be exceeded: {epsilon_spent:.4g} spent or reserved, {epsilon_requested:.4g} after this round, "
                f"total {epsilon_total:.4g}"
            )
        )

    @property
    def code(self) -> str:
        return {"model_version": "budget.exceeded", "dataset": "budget.dataset_exceeded"}.get(
            self.scope, "budget.paused"
        )


class BudgetPaused(BudgetExceeded):
    """The budget is paused: remaining fell below 10 %; an operator must raise it (or a new version starts)."""

    def __init__(self, *, partner_id: str, model_version: int, epsilon_total: float, epsilon_spent: float) -> None:
        super().__init__(
            partner_id=partner_id,
            model_version=model_version,
            scope="paused",
            epsilon_total=epsilon_total,
            epsilon_spent=epsilon_spent,
            epsilon_requested=epsilon_spent,
            message=(
                f"partner {partner_id!r} is paused for model version {model_version}: less than 10 % of its privacy "
                f"budget remains ({epsilon_spent:.4g} of {epsilon_total:.4g}); raise it with "
                f"`mshale-fl budget --partner-id {partner_id} --model-version {model_version} --set-total EPS`"
            ),
        )


class NoBudget(LedgerError):
    def __init__(self, partner_id: str, model_version: int) -> None:
        super().__init__(f"partner {partner_id!r} has no budget for model version {model_version} yet")


class ReservationConflict(LedgerError):
    """The same round was reserved before with a different mechanism or model version."""


class ReleaseRefused(LedgerError):
    """Training started with this reservation, so its data was touched: it can only be committed."""
