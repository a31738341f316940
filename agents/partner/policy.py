"""What may leave the partner, per protocol: sensitivity label x contribution tier x agreements.

A pure function of its inputs (no I/O), shared by `extract` (the manifest), `inspect` (what would
be transmitted) and `submit` (what is transmitted), so the three can never disagree.

Forms of contribution, one per tier: tier 1 sends the ProtocolSpec, tier 2 feature vectors,
tier 3 DP-noised training updates. Two gates must both open:

- the tier's own agreement (DESIGN.md): tier 1 none, tier 2 a Data Processing Agreement (`dpa`),
  tier 3 the federated training agreement (`federated_training`);
- the label's cap: `published` may leave in any form; `internal` (procedures, no outcomes) at
  most as feature vectors; `efficiency` (procedures + outcomes) never as a spec, and as vectors
  or training updates only under a DPA or an IRB approval (`dpa` or `irb`); `full-ip` never, in
  any form, whatever the agreements.

`local_mode` closes everything: nothing is transmittable, extraction stays local.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mshale_fl.schemas.vocabulary import Sensitivity


class Form(StrEnum):
    SPEC = "spec"
    VECTORS = "vectors"
    TRAINING = "training"


FORM_OF_TIER: dict[int, Form] = {1: Form.SPEC, 2: Form.VECTORS, 3: Form.TRAINING}
TIERS = tuple(FORM_OF_TIER)


@dataclass(frozen=True, slots=True)
class Agreements:
    """What the partner has signed, as declared in its config (`[agreements]`)."""

    dpa: bool = False
    irb: bool = False
    federated_training: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    form: Form
    transmittable: bool
    reason: str  # a machine-readable code
    explanation: str

    def as_dict(self) -> dict[str, object]:
        return {"form": self.form.value, "transmittable": self.transmittable, "reason": self.reason,
                "explanation": self.explanation}  # fmt: skip


def _deny(form: Form, reason: str, explanation: str) -> Decision:
    return Decision(form, False, reason, explanation)


def decide_form(label: Sensitivity, form: Form, agreements: Agreements, *, local_mode: bool = False) -> Decision:
    """May a protocol with this label leave in this form?"""
    if label is Sensitivity.FULL_IP:
        return _deny(form, "full_ip_never_leaves", "full-ip protocols never leave the partner in any form")
    if local_mode:
        return _deny(form, "local_mode", "local mode: nothing is transmitted")
    if form is Form.SPEC:
        if label is Sensitivity.INTERNAL:
            return _deny(form, "internal_at_most_vectors", "internal protocols may leave at most as feature vectors (tier 2)")
        if label is Sensitivity.EFFICIENCY:
            return _deny(form, "efficiency_not_as_spec", "efficiency protocols may leave only as tier 2 vectors or tier 3 training")
        return Decision(form, True, "allowed", "published: the spec may be sent")
    if form is Form.VECTORS and not agreements.dpa:
        return _deny(form, "tier2_needs_dpa", "tier 2 needs a Data Processing Agreement ([agreements] dpa = true)")
    if form is Form.TRAINING:
        if label is Sensitivity.INTERNAL:
            return _deny(form, "internal_at_most_vectors", "internal protocols may leave at most as feature vectors (tier 2)")
        if not agreements.federated_training:
            return _deny(form, "tier3_needs_training_agreement",
                         "tier 3 needs the federated training agreement ([agreements] federated_training = true)")  # fmt: skip
    if label is Sensitivity.EFFICIENCY and not (agreements.dpa or agreements.irb):
        return _deny(form, "efficiency_needs_dpa_or_irb", "efficiency protocols need a DPA or an IRB approval")
    return Decision(form, True, "allowed", f"{label.value}: may be sent as {form.value}")


def decide(label: Sensitivity, tier: int, agreements: Agreements, *, local_mode: bool = False) -> Decision:
    """May a protocol with this label leave at this contribution tier (1 spec, 2 vectors, 3 training)?"""
    if tier not in FORM_OF_TIER:
        raise ValueError(f"tier must be one of {TIERS}, not {tier!r}")
    return decide_form(label, FORM_OF_TIER[tier], agreements, local_mode=local_mode)


def allowed_forms(label: Sensitivity, agreements: Agreements, *, local_mode: bool = False) -> tuple[Form, ...]:
    """Every form in which a protocol with this label may leave under these agreements."""
    return tuple(f for f in Form if decide_form(label, f, agreements, local_mode=local_mode).transmittable)
