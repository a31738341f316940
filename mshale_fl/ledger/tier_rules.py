"""The tier gate: which agreements a tier needs, as a pure rule over a partner's agreements.

One rule set serves `partners add` (a partner cannot be registered at a tier its agreements do
not support) and the validator (`access.may_submit`, checked again at submission time, because
agreements expire). Every refusal carries a machine-readable code and a sentence saying what to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from mshale_fl.ledger._sql import now_utc, utc_date
from mshale_fl.ledger.agreements import Agreement, AgreementKind
from mshale_fl.schemas.payloads import Reason


@dataclass(frozen=True)
class Decision:
    allowed: bool
    code: str
    message: str

    def reason(self, field: str | None = None) -> Reason:
        """As the `Reason` of a `submission.rejected` / `access.denied` payload."""
        return Reason(code=self.code, field=field, message=self.message)


ALLOWED = Decision(True, "ok", "allowed")


def _gate(kind: AgreementKind, agreements: list[Agreement], day: date, *, academic: bool, tier: int) -> Decision:
    label = {AgreementKind.DPA: "Data Processing Agreement (DPA)", AgreementKind.TRAINING: "Tier 3 training agreement"}[
        kind
    ]
    code = {AgreementKind.DPA: "dpa", AgreementKind.TRAINING: "training"}[kind]
    of_kind = [agreement for agreement in agreements if agreement.kind is kind]
    if not of_kind:
        return Decision(False, f"agreement.{code}_missing", f"Tier {tier} needs a {label}; none is on record")
    active = [agreement for agreement in of_kind if agreement.active_on(day)]
    if not active:
        latest = max(of_kind, key=lambda agreement: agreement.valid_until)
        when = "expired on" if latest.valid_until < day else "starts on"
        moment = latest.valid_until if latest.valid_until < day else min(a.valid_from for a in of_kind)
        return Decision(False, f"agreement.{code}_inactive", f"Tier {tier} needs an active {label}; it {when} {moment}")
    if kind is AgreementKind.DPA and not academic and not any(agreement.attorney_reviewed for agreement in active):
        return Decision(
            False,
            "agreement.dpa_not_reviewed",
            "the DPA was not reviewed by an attorney, which only academic partners may skip",
        )
    return ALLOWED


def tier_gate(tier: int, *, academic: bool, agreements: Iterable[Agreement], at: datetime | None = None) -> Decision:
    """Whether these agreements support sending at `tier` on the day of `at` (UTC)."""
    day = utc_date(at or now_utc())
    agreements = list(agreements)
    if tier == 1:
        return ALLOWED
    if tier == 2:
        return _gate(AgreementKind.DPA, agreements, day, academic=academic, tier=tier)
    if tier == 3:
        return _gate(AgreementKind.TRAINING, agreements, day, academic=academic, tier=tier)
    return Decision(False, "tier.invalid", f"tier must be 1, 2 or 3, got {tier}")
