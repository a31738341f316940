"""What would leave the partner from an extraction output folder: the one plan `inspect` shows and `submit` sends.

`plan_transmission(folder)` reads `<folder>/manifest.json` and decides, per protocol, whether its
contribution may leave at the folder's tier (the tier `extract` wrote it for: 1 specs, 2 vectors).
Both gates must open:

1. the manifest written by `extract` says so (its `decision` when it was written for this tier,
   otherwise whether the tier's form is in its `may_leave_as`), and
2. the policy (`policy.decide`) says so again *now*, from the label and agreements recorded in the
   manifest — so an edited manifest cannot turn a `full-ip` or `internal` protocol transmittable —
   and, when a partner config is given (`load_partner_config`), from the agreements it declares
   now: a DPA recorded at extraction but no longer declared closes Tier 2.

An unknown label counts as `full-ip`, and a protocol whose text is the same as a `full-ip`
protocol's (same content hash) is withheld too: one text, the most restrictive label. A spec or
vector file that is missing, does not validate, or whose hash differs from the manifest's is
withheld (with a reason) rather than sent; so is a vector that is not the featurizer's vector of
its spec (written by another featurizer version, or edited). Files of withheld protocols are never
opened, so a `full-ip` spec or vector is not even read into memory.

What is published (`TransmissionPlan.submissions`): at Tier 1 one `spec.submitted` per protocol,
whose event id is uuid5 of the partner id, the spec's salted content hash and the tier
(`submission_event_id`); at Tier 2 `vectors.submitted` batches (`batches.py`), one vector per
distinct text, whose event id is derived from the batch's content. Either way submitting the same
folder again publishes the same event ids, and Mishale's inbox applies each once: no duplicate
contributions.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mshale_fl.agents.partner.batches import DEFAULT_BATCH_SIZE, batch_event_id, content_defined_batches
from mshale_fl.agents.partner.extract.output import MANIFEST_NAME, MANIFEST_VERSION, SPECS_FOLDER, VECTORS_FOLDER
from mshale_fl.agents.partner.extract.sensitivity import ConfigError, PartnerConfig, load_config
from mshale_fl.agents.partner.featurize import featurize, grid_violations
from mshale_fl.agents.partner.policy import FORM_OF_TIER, TIERS, Agreements, Decision, Form, decide
from mshale_fl.errors import UserFacingError
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.feature_vector import FeatureVector
from mshale_fl.schemas.payloads import SpecSubmitted, VectorsSubmitted
from mshale_fl.schemas.protocol_spec import ProtocolSpec
from mshale_fl.schemas.vocabulary import Sensitivity

SUBMISSION_NAMESPACE = uuid.UUID("6f1c2b0e-5d7a-5c43-9a51-8e0f3c7d2a64")
"""Fixed forever: changing it would make every resubmission look new."""

EVENT_TYPE_OF_FORM = {Form.SPEC: "spec.submitted", Form.VECTORS: "vectors.submitted"}
PLANNABLE_TIERS = (1, 2)
MOST_RESTRICTIVE_FIRST = (Sensitivity.FULL_IP, Sensitivity.EFFICIENCY, Sensitivity.INTERNAL, Sensitivity.PUBLISHED)
"""When several protocols share one text, their one vector travels under the first of these labels among them."""


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
    vector_file: str = ""
    """Tier 2 folders: the vector file the manifest names (relative to the folder)."""
    vector: FeatureVector | None = field(default=None, repr=False)
    """Tier 2 only, loaded only for transmittable protocols: exactly what `submit` sends for it."""

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
class Submission:
    """One event `submit` publishes and the protocols whose contribution it carries."""

    event: EventEnvelope[Any]
    items: tuple[PlannedItem, ...]
    """Tier 1: the one protocol. Tier 2: every protocol of the batch (protocols sharing a text share a vector)."""

    @property
    def event_id(self) -> uuid.UUID:
        return self.event.event_id

    @property
    def size(self) -> int:
        """What Mishale counts: 1 spec, or the vectors of the batch."""
        return len(self.event.payload.vectors) if self.event.type == "vectors.submitted" else 1


@dataclass(frozen=True)
class TransmissionPlan:
    folder: Path
    tier: int
    manifest_tier: int
    local_mode: bool
    agreements: Agreements
    items: tuple[PlannedItem, ...]
    unreadable: tuple[dict[str, Any], ...]
    config_source: str | None = None
    """The partner config whose agreements were applied on top of the manifest's, if any."""

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

    def submissions(self, partner_id: str, *, batch_size: int = DEFAULT_BATCH_SIZE) -> list[Submission]:
        """The events `submit` publishes for this plan, in publishing order, each with the protocols it carries."""
        items = self.transmitted
        if self.tier == 1:
            return [Submission(item.event(partner_id, self.tier), (item,)) for item in items]
        by_hash: dict[str, list[PlannedItem]] = {}
        for item in items:
            by_hash.setdefault(item.content_hash, []).append(item)
        by_label: dict[Sensitivity, list[list[PlannedItem]]] = {}
        for copies in by_hash.values():
            label = next(label for label in MOST_RESTRICTIVE_FIRST if any(c.sensitivity is label for c in copies))
            by_label.setdefault(label, []).append(copies)
        submissions = []
        for label in sorted(by_label, key=MOST_RESTRICTIVE_FIRST.index):
            for batch in content_defined_batches(by_label[label], lambda copies: copies[0].content_hash, batch_size):
                payload = VectorsSubmitted(sensitivity=label, vectors=[copies[0].vector for copies in batch])
                event = new_event("vectors.submitted", payload, partner_id=partner_id,
                                  event_id=batch_event_id(partner_id, payload))  # fmt: skip
                submissions.append(Submission(event, tuple(item for copies in batch for item in copies)))
        return submissions


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


def _inside(folder: Path, subfolder: str, relative: str) -> Path | None:
    root = (folder / subfolder).resolve()
    path = (folder / relative).resolve()
    return path if root in path.parents else None


def _load_spec(folder: Path, spec_file: str, content_hash: str, form: Form) -> tuple[ProtocolSpec | None, Decision | None]:
    """The spec, or the reason it cannot be sent."""
    path = _inside(folder, SPECS_FOLDER, spec_file)
    if path is None:
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


def _load_vector(folder: Path, vector_file: str, spec: ProtocolSpec) -> tuple[FeatureVector | None, Decision | None]:
    """The vector `submit` would send for `spec`, or the reason it cannot be sent."""
    again = "run `mshale-fl extract --tier 2` again"
    if not vector_file:
        return None, Decision(Form.VECTORS, False, "vector_file_missing", f"the manifest names no vector file; {again}")
    path = _inside(folder, VECTORS_FOLDER, vector_file)
    if path is None:
        return None, Decision(Form.VECTORS, False, "vector_file_outside_vectors", f"the manifest points outside {VECTORS_FOLDER}/")
    try:
        vector = FeatureVector.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None, Decision(Form.VECTORS, False, "vector_file_missing", f"{vector_file} is missing; {again}")
    except (OSError, ValidationError, ValueError):
        return None, Decision(Form.VECTORS, False, "vector_file_invalid", f"{vector_file} is not a valid FeatureVector; {again}")
    if vector.spec_hash != spec.content_hash:
        return None, Decision(Form.VECTORS, False, "vector_hash_mismatch",
                              f"{vector_file} does not belong to this protocol (spec hash differs); {again}")  # fmt: skip
    if grid_violations(vector.values) or vector != featurize(spec):
        return None, Decision(Form.VECTORS, False, "vector_stale",
                              f"{vector_file} is not the featurizer's vector of its spec (edited, or written by another "
                              f"featurizer version); {again}")  # fmt: skip
    return vector, None


def _agreements(manifest: dict[str, Any], config: PartnerConfig | None) -> Agreements:
    """The manifest's recorded agreements, narrowed to those the partner config still declares (if given)."""
    recorded = manifest.get("agreements") if isinstance(manifest.get("agreements"), dict) else {}
    declared = config.agreements_for_policy() if config is not None else Agreements(True, True, True)
    return Agreements(
        dpa=recorded.get("dpa") is True and declared.dpa,
        irb=recorded.get("irb") is True and declared.irb,
        federated_training=recorded.get("federated_training") is True and declared.federated_training,
    )


def manifest_tier(folder: Path) -> int:
    """The tier the folder was extracted for (raises `SpecsFolderError` for a folder that is not an output folder)."""
    tier = _manifest(Path(folder)).get("tier")
    return tier if tier in PLANNABLE_TIERS else 1


def load_partner_config(folder: Path, explicit: Path | None = None) -> PartnerConfig:
    """The partner config whose agreements apply at submit time: `explicit` (--config), else the one
    `extract` recorded in the manifest, else none (defaults: no agreements).

    Raises `ConfigError` for a config that cannot be read, including a recorded one that is gone.
    """
    if explicit is not None:
        return load_config(explicit)
    recorded = _manifest(Path(folder)).get("config")
    if not isinstance(recorded, str) or not recorded:
        return PartnerConfig()
    if not Path(recorded).is_file():
        raise ConfigError(
            f"the partner config used at extraction ({recorded}) no longer exists; pass --config FILE "
            "(the mshale.toml that declares your agreements)"
        )
    return load_config(Path(recorded))


def plan_transmission(folder: Path, *, tier: int | None = None, config: PartnerConfig | None = None) -> TransmissionPlan:
    """Decide, per protocol of an extraction output folder, what would leave at `tier` (default: the folder's
    own tier), under the agreements of the manifest and, if given, of `config` (see the module docstring).

    Raises `SpecsFolderError` for a missing, empty or foreign folder.
    """
    folder = Path(folder)
    manifest = _manifest(folder)
    if tier is None:
        tier = manifest.get("tier") if manifest.get("tier") in PLANNABLE_TIERS else 1
    if tier not in PLANNABLE_TIERS:
        raise ValueError(f"a folder is planned for tier {' or '.join(map(str, PLANNABLE_TIERS))}, not {tier!r} "
                         f"(tiers: {TIERS}; tier 3 sends training updates, not files)")  # fmt: skip
    local_mode = manifest.get("local_mode") is not False  # anything but an explicit false closes everything
    agreements = _agreements(manifest, config)
    form = FORM_OF_TIER[tier]
    records = manifest["protocols"]
    if not all(isinstance(record, dict) for record in records):
        raise SpecsFolderError(f"{folder / MANIFEST_NAME} has a malformed protocol entry; run `mshale-fl extract` again")
    full_ip_texts = {str(r.get("content_hash", "")) for r in records if _label(r.get("sensitivity")) is Sensitivity.FULL_IP}
    items = []
    for record in records:
        label = _label(record.get("sensitivity"))
        source = str(record.get("source", "?"))
        spec_file = str(record.get("spec", ""))
        vector_file = str(record.get("vector", "") or "")
        content_hash = str(record.get("content_hash", ""))
        decision = decide(label, tier, agreements, local_mode=local_mode)
        if decision.transmittable and not _manifest_allows(record, manifest.get("tier"), tier):
            explanation = (record.get("decision") or {}).get("explanation", "")
            decision = Decision(form, False, "manifest_withholds", f"the extraction manifest withholds it: {explanation}".rstrip(": "))
        if decision.transmittable and content_hash in full_ip_texts:
            decision = Decision(form, False, "same_text_as_full_ip",
                                "another protocol with the same text is labelled full-ip, so neither leaves")  # fmt: skip
        spec = vector = None
        if decision.transmittable:
            spec, refusal = _load_spec(folder, spec_file, content_hash, form)
            if spec is not None and form is Form.VECTORS:
                vector, refusal = _load_vector(folder, vector_file, spec)
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
                vector_file=vector_file,
                vector=vector,
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
        config_source=config.source if config is not None else None,
    )
