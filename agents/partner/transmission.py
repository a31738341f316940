"""What would leave the partner from an extraction output folder: the one plan `inspect` shows and `submit` sends.

`plan_transmission(folder, tier=1)` reads `<folder>/manifest.json` and decides, per protocol,
whether its contribution may leave. Both gates must open:

1. the manifest written by `extract` says so (its `decision` when it was written for this tier,
   otherwise whether the tier's form is in its `may_leave_as`), and
2. the policy (`policy.decide`) says so again *now*, from the label and agreements recorded in the
   manifest — so an edited manifest cannot turn a `full-ip` or `internal` protocol transmittable.

An unknown label counts as `full-ip`. A spec file that is missing, does not validate, or whose
content hash differs from the manifest's is withheld (with a reason) rather than sent. Spec files
of withheld protocols are never opened, so a `full-ip` spec is not even read into memory.

The event id of a submission is deterministic (`submission_event_id`): uuid5 of the partner id,
the spec's salted content hash and the tier. Submitting the same protocols again therefore
publishes the same event ids, and Mishale's inbox applies each once: no duplicate contributions.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mshale_fl.agents.partner.extract.output import MANIFEST_NAME, MANIFEST_VERSION, SPECS_FOLDER
from mshale_fl.agents.partner.policy import FORM_OF_TIER, Agreements, Decision, Form, decide
from mshale_fl.errors import UserFacingError
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.payloads import SpecSubmitted
from mshale_fl.schemas.protocol_spec import ProtocolSpec
from mshale_fl.schemas.vocabulary import Sensitivity

SUBMISSION_NAMESPACE = uuid.UUID("6f1c2b0e-5d7a-5c43-9a51-8e0f3c7d2a64")
"""Fixed forever: changing it would make every resubmission look new."""

EVENT_TYPE_OF_FORM = {Form.SPEC: "spec.submitted", Form.VECTORS: "vectors.submitted"}


class SpecsFolderError(UserFacingError):
    """The folder given as --specs is missing, empty or not an extraction output folder."""


def submission_event_id(partner_id: str, content_hash: str, tier: int) -> uuid.UUID:
    """The event id of a partner's submission of one protocol at a tier: the same every time."""
    return uuid.uuid5(SUBMISSION_NAMESPACE, f"{partner_id}/{content_hash}/{tier}")


@dataclass(frozen=True)
class PlannedItem:
    """One protocol of the folder and what happens to it at the planned tier."""

    source: str
    spec_file: str
    content_hash: str
    sensitivity: Sensitivity
    label_source: str
    decision: Decision
    """The final word: transmittable only if the manifest and the policy both allow it."""
    manifest_decision: dict[str, Any]
    may_leave_as: tuple[str, ...] = ()
    """The forms the manifest says this protocol could ever leave in (`spec`, `vectors`, `training`)."""
    spec: ProtocolSpec | None = field(default=None, repr=False)
    """Loaded only for transmittable protocols."""

    @property
    def transmittable(self) -> bool:
        return self.decision.transmittable

    def payload(self) -> SpecSubmitted:
        """The exact payload of the `spec.submitted` event (only for a transmittable spec)."""
        if not self.transmittable or self.spec is None or self.decision.form is not Form.SPEC:
            raise ValueError(f"{self.source} is not transmittable as a spec")
        return SpecSubmitted(sensitivity=self.sensitivity, spec=self.spec)

    def event(self, partner_id: str, tier: int = 1) -> EventEnvelope[Any]:
        """The `spec.submitted` event, with its deterministic id, as `submit` publishes it."""
        event_id = submission_event_id(partner_id, self.content_hash, tier)
        return new_event(EVENT_TYPE_OF_FORM[self.decision.form], self.payload(), partner_id=partner_id, event_id=event_id)


@dataclass(frozen=True)
class TransmissionPlan:
    folder: Path
    tier: int
    manifest_tier: int
    local_mode: bool
    agreements: Agreements
    items: tuple[PlannedItem, ...]
    unreadable: tuple[dict[str, Any], ...]

    @property
    def transmitted(self) -> list[PlannedItem]:
        return [item for item in self.items if item.transmittable]

    @property
    def withheld(self) -> list[PlannedItem]:
        return [item for item in self.items if not item.transmittable]

    def withheld_reasons(self) -> Counter[str]:
        return Counter(item.decision.reason for item in self.withheld)

    def decision_at(self, item: PlannedItem, tier: int) -> Decision:
        """What the manifest and the policy say about `item` at another tier (for `inspect --show-features`)."""
        decision = decide(item.sensitivity, tier, self.agreements, local_mode=self.local_mode)
        if decision.transmittable and FORM_OF_TIER[tier].value not in item.may_leave_as:
            return Decision(decision.form, False, "manifest_withholds", f"the extraction manifest withholds it as {decision.form.value}")
        return decision

    def local_spec(self, item: PlannedItem) -> ProtocolSpec | None:
        """The item's spec read for local display only (never for sending); None if it cannot be read."""
        if item.spec is not None:
            return item.spec
        spec, _ = _load_spec(self.folder, item.spec_file, item.content_hash, item.decision.form)
        return spec


def _label(value: object) -> Sensitivity:
    try:
        return Sensitivity(value)  # type: ignore[arg-type]
    except ValueError:
        return Sensitivity.FULL_IP


def _manifest(folder: Path) -> dict[str, Any]:
    if not folder.exists():
        raise SpecsFolderError(f"specs folder {folder} does not exist; run `mshale-fl extract --output {folder}` first")
    if not folder.is_dir():
        raise SpecsFolderError(f"{folder} is not a folder; pass the --output folder of `mshale-fl extract`")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        if (folder.parent / MANIFEST_NAME).is_file():
            raise SpecsFolderError(f"{folder} is the specs/ folder inside the extraction output; pass --specs {folder.parent}")
        if not any(folder.iterdir()):
            raise SpecsFolderError(f"specs folder {folder} is empty; run `mshale-fl extract --output {folder}` first")
        raise SpecsFolderError(
            f"{folder} has no {MANIFEST_NAME}: it is not an extraction output folder "
            "(pass the folder given to `mshale-fl extract --output`, which holds specs/ and manifest.json)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SpecsFolderError(f"{path} cannot be read ({error}); run `mshale-fl extract` again") from None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise SpecsFolderError(f"{path} is not an extraction manifest of version {MANIFEST_VERSION}; run `mshale-fl extract` again")
    if not isinstance(manifest.get("protocols"), list) or not manifest["protocols"]:
        raise SpecsFolderError(f"{path} lists no protocols: the corpus had no readable protocol, so there is nothing to send")
    return manifest


def _manifest_allows(record: dict[str, Any], manifest_tier: object, tier: int) -> bool:
    decision = record.get("decision")
    if manifest_tier == tier and isinstance(decision, dict):
        return decision.get("transmittable") is True
    may_leave_as = record.get("may_leave_as")
    return isinstance(may_leave_as, list) and FORM_OF_TIER[tier].value in may_leave_as


def _load_spec(folder: Path, spec_file: str, content_hash: str, form: Form) -> tuple[ProtocolSpec | None, Decision | None]:
    """The spec, or the reason it cannot be sent."""
    specs_root = (folder / SPECS_FOLDER).resolve()
    path = (folder / spec_file).resolve()
    if specs_root not in path.parents:
        return None, Decision(form, False, "spec_file_outside_specs", f"the manifest points outside {SPECS_FOLDER}/")
    try:
        spec = ProtocolSpec.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None, Decision(form, False, "spec_file_missing", f"{spec_file} is missing; run `mshale-fl extract` again")
    except (OSError, ValidationError, ValueError):
        return None, Decision(form, False, "spec_file_invalid", f"{spec_file} is not a valid ProtocolSpec; run `mshale-fl extract` again")  # fmt: skip
    if spec.content_hash != content_hash:
        return None, Decision(form, False, "spec_hash_mismatch",
                              f"{spec_file} does not belong to this manifest (content hash differs); run `mshale-fl extract` again")  # fmt: skip
    return spec, None


def plan_transmission(folder: Path, *, tier: int = 1) -> TransmissionPlan:
    """Decide, per protocol of an extraction output folder, what would leave at `tier` (see the module docstring).

    Raises `SpecsFolderError` for a missing, empty or foreign folder.
    """
    if tier != 1:
        raise ValueError("only Tier 1 (specs) is planned from a specs folder; vectors come with the featurizer")
    folder = Path(folder)
    manifest = _manifest(folder)
    local_mode = manifest.get("local_mode") is not False  # anything but an explicit false closes everything
    recorded = manifest.get("agreements") if isinstance(manifest.get("agreements"), dict) else {}
    agreements = Agreements(
        dpa=recorded.get("dpa") is True, irb=recorded.get("irb") is True,
        federated_training=recorded.get("federated_training") is True,
    )  # fmt: skip
    form = FORM_OF_TIER[tier]
    items = []
    for record in manifest["protocols"]:
        if not isinstance(record, dict):
            raise SpecsFolderError(f"{folder / MANIFEST_NAME} has a malformed protocol entry; run `mshale-fl extract` again")
        label = _label(record.get("sensitivity"))
        source = str(record.get("source", "?"))
        spec_file = str(record.get("spec", ""))
        content_hash = str(record.get("content_hash", ""))
        decision = decide(label, tier, agreements, local_mode=local_mode)
        if decision.transmittable and not _manifest_allows(record, manifest.get("tier"), tier):
            explanation = (record.get("decision") or {}).get("explanation", "")
            decision = Decision(form, False, "manifest_withholds", f"the extraction manifest withholds it: {explanation}".rstrip(": "))
        spec = None
        if decision.transmittable:
            spec, refusal = _load_spec(folder, spec_file, content_hash, form)
            decision = refusal or decision
        items.append(
            PlannedItem(
                source=source,
                spec_file=spec_file,
                content_hash=content_hash,
                sensitivity=label,
                label_source=str(record.get("label_source", "")),
                decision=decision,
                manifest_decision=dict(record.get("decision") or {}),
                may_leave_as=tuple(str(form) for form in record.get("may_leave_as") or () if isinstance(form, str)),
                spec=spec,
            )
        )
    return TransmissionPlan(
        folder=folder,
        tier=tier,
        manifest_tier=int(manifest.get("tier", 0) or 0),
        local_mode=local_mode,
        agreements=agreements,
        items=tuple(items),
        unreadable=tuple(manifest.get("unreadable") or ()),
    )
