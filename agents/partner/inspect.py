"""`inspect`: what exactly would leave the partner, and what is withheld and why.

Built on `transmission.plan_transmission`, the same plan `submit` sends, so what `inspect` shows is
what `submit` would publish. `inspection(plan)` returns plain data: a summary per protocol for the
table, and (`exact=True`) the exact JSON payload of every event that would be published (Tier 1),
or the exact vector each protocol adds to a `vectors.submitted` batch (Tier 2; how vectors are
grouped into batches depends on `submit --batch-size`, see `batches.py`).
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mshale_fl.agents.partner.batches import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE
from mshale_fl.agents.partner.featurize import GROUPS
from mshale_fl.agents.partner.policy import Form
from mshale_fl.agents.partner.transmission import EVENT_TYPE_OF_FORM, PlannedItem, TransmissionPlan
from mshale_fl.schemas.feature_vector import FeatureVector
from mshale_fl.schemas.protocol_spec import ProtocolSpec

MAX_OPERATION_GROUPS = 8
FEATURIZER_MODULE = "mshale_fl.agents.partner.featurize"


def operation_summary(spec: ProtocolSpec, limit: int = MAX_OPERATION_GROUPS) -> str:
    """The operation sequence, runs collapsed: `add, mix, centrifuge x2, wash x3, elute` (+N more)."""
    groups: list[tuple[str, int]] = []
    for step in spec.steps:
        name = step.operation.value
        if groups and groups[-1][0] == name:
            groups[-1] = (name, groups[-1][1] + 1)
        else:
            groups.append((name, 1))
    shown = [name if count == 1 else f"{name} x{count}" for name, count in groups[:limit]]
    if len(groups) > limit:
        shown.append(f"... (+{len(groups) - limit} more)")
    return ", ".join(shown)


def quantity_kinds(spec: ProtocolSpec) -> Counter[str]:
    return Counter(quantity.kind.value for step in spec.steps for quantity in step.quantities)


def classes(spec: ProtocolSpec) -> dict[str, list[str]]:
    """Every equipment, labware and reagent class the spec names, sorted."""
    found: dict[str, set[str]] = {"equipment": set(), "labware": set(), "reagents": set()}
    for step in spec.steps:
        found["equipment"].update(member.value for member in step.equipment)
        found["labware"].update(member.value for member in step.labware)
        found["reagents"].update(member.value for member in step.reagents)
    return {group: sorted(members) for group, members in found.items()}


def nonzero_by_group(vector: FeatureVector) -> dict[str, int]:
    """How many features of each layout group are non-zero (for the Tier 2 table)."""
    counts = {group.key: sum(1 for value in vector.values[group.start : group.stop] if value) for group in GROUPS}
    return {key: count for key, count in counts.items() if count}


@dataclass(frozen=True)
class ItemView:
    item: PlannedItem

    def as_dict(self, *, exact: bool) -> dict[str, Any]:
        item = self.item
        data: dict[str, Any] = {
            "source": item.source,
            "sensitivity": item.sensitivity.value,
            "label_source": item.label_source,
            "transmitted": item.transmittable,
            "decision": item.decision.as_dict(),
        }
        if item.transmittable and item.decision.form is Form.VECTORS and item.vector is not None:
            data["event_type"] = EVENT_TYPE_OF_FORM[Form.VECTORS]
            data["summary"] = {
                "values": len(item.vector.values),
                "nonzero": sum(1 for value in item.vector.values if value),
                "nonzero_by_group": nonzero_by_group(item.vector),
            }
            if exact:
                data["payload"] = {"sensitivity": item.sensitivity.value, "vector": item.vector.model_dump(mode="json")}
        elif item.transmittable and item.spec is not None:
            spec = item.spec
            data["event_type"] = EVENT_TYPE_OF_FORM[item.decision.form]
            data["summary"] = {
                "steps": len(spec.steps),
                "operations": operation_summary(spec),
                "quantities": sum(quantity_kinds(spec).values()),
                "quantity_kinds": dict(sorted(quantity_kinds(spec).items())),
                "classes": classes(spec),
                "domain": spec.domain.value,
                "organism": spec.organism.value,
            }
            if exact:
                data["payload"] = item.payload().model_dump(mode="json")
        return data


def inspection(plan: TransmissionPlan, *, exact: bool = False) -> dict[str, Any]:
    """Plain data for `inspect`: per protocol what leaves (summary, exact payload) or why it is withheld."""
    if plan.tier == 2:
        envelope = ("each vector travels in a vectors.submitted batch (one sensitivity label per batch, at most "
                    f"{MAX_BATCH_SIZE} vectors; {DEFAULT_BATCH_SIZE} unless `submit --batch-size` says otherwise) "
                    "inside an event envelope: event_id (derived from your partner id and the batch content), type, "
                    "schema_version, partner_id, occurred_at, correlation_id")  # fmt: skip
    else:
        envelope = ("each payload travels in an event envelope: event_id (derived from your partner id, the "
                    "content hash and the tier), type, schema_version, partner_id, occurred_at, correlation_id")  # fmt: skip
    return {
        "folder": str(plan.folder),
        "tier": plan.tier,
        "local_mode": plan.local_mode,
        "config": plan.config_source,
        "envelope": envelope,
        "summary": {
            "protocols": len(plan.items),
            "transmitted": len(plan.transmitted),
            "withheld": len(plan.withheld),
            "withheld_by_reason": dict(sorted(plan.withheld_reasons().items())),
            "unreadable": len(plan.unreadable),
        },
        "protocols": [ItemView(item).as_dict(exact=exact) for item in plan.items],
        "unreadable": list(plan.unreadable),
    }


@dataclass(frozen=True)
class Featurizer:
    """The partner featurizer (issue 5), when installed: `featurize(spec) -> FeatureVector` plus names."""

    featurize: Any
    feature_names: list[str]


def load_featurizer() -> Featurizer | None:
    """The featurizer if this installation has one, else None (vectors are a Tier 2 feature)."""
    try:
        module = importlib.import_module(FEATURIZER_MODULE)
    except ModuleNotFoundError as error:
        if error.name and FEATURIZER_MODULE.startswith(error.name):
            return None
        raise
    featurize = getattr(module, "featurize", None)
    names = next(
        (getattr(module, name) for name in ("FEATURE_NAMES", "feature_names") if hasattr(module, name)), None
    )
    if callable(names):
        names = names()
    if featurize is None or names is None:
        return None
    return Featurizer(featurize=featurize, feature_names=list(names))
