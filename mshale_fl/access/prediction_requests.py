"""What `mshale-fl predict` may send, and the `prediction.requested` events that carry it.

Asking for a prediction sends the spec or vector to Mishale (the request is an event: it is logged
and kept on the event stream, like a submission), so exactly the same rule decides what may leave
as for `submit`: `transmission.plan_transmission` over the extraction output folder, manifest and
policy both agreeing, at Tier 1 for specs and Tier 2 (with a DPA) for vectors. A `full-ip`
protocol is never sent, and is not even read; an `internal` protocol gets a prediction only as a
vector. What is withheld is listed with its reason instead of a prediction.

`--specs` / `--vectors` may name the extraction output folder, a folder inside it, or one spec or
vector file inside it: the folder holding `manifest.json` is found upwards from the path.

Requests: one item per request unless `batch_size` > 1 (a batch needs Tier 2). Protocols with the
same text (content hash) share one item. Each run asks anew (fresh event ids): a newer model may
answer differently, and each answer counts against the day's quota.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mshale_fl.agents.partner.extract.output import MANIFEST_NAME
from mshale_fl.agents.partner.extract.sensitivity import AgreementRequired, PartnerConfig
from mshale_fl.agents.partner.transmission import PlannedItem, SpecsFolderError, TransmissionPlan, plan_transmission
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.payloads import PredictionRequested

__all__ = ["MAX_BATCH", "PredictionAsk", "extraction_folder", "plan_predictions"]

Kind = Literal["specs", "vectors"]
TIER_OF_KIND: dict[str, int] = {"specs": 1, "vectors": 2}
MAX_BATCH = 1_000  # the contract's bound on specs (and on vectors) per request


def extraction_folder(path: Path) -> Path:
    """The extraction output folder `path` is or lies in (the nearest one holding manifest.json)."""
    path = Path(path)
    if not path.exists():
        raise SpecsFolderError(
            f"{path} does not exist; pass an extraction output folder (`mshale-fl extract --output`)"
        )
    start = path.resolve() if path.is_dir() else path.resolve().parent
    for folder in (start, *start.parents):
        if (folder / MANIFEST_NAME).is_file():
            return folder
    raise SpecsFolderError(
        f"{path} is not inside an extraction output folder (no {MANIFEST_NAME} above it): predictions are asked "
        "for what `mshale-fl extract` wrote, so its labels decide what may leave"
    )


def _selected(item: PlannedItem, folder: Path, wanted: Path, kind: Kind) -> bool:
    if wanted == folder:
        return True
    relative = item.spec_file if kind == "specs" else item.vector_file
    if not relative:
        return False
    path = (folder / relative).resolve()
    return path == wanted or wanted in path.parents


@dataclass(frozen=True)
class PredictionAsk:
    """The plan for one `predict` run: the requests to send, each with the protocols it asks about."""

    kind: Kind
    plan: TransmissionPlan
    selected: tuple[PlannedItem, ...]
    requests: tuple[tuple[EventEnvelope[Any], tuple[PlannedItem, ...]], ...]

    @property
    def withheld(self) -> list[PlannedItem]:
        return [item for item in self.selected if not item.transmittable]


def plan_predictions(
    path: Path, kind: Kind, partner_id: str, *, config: PartnerConfig | None = None, batch_size: int = 1
) -> PredictionAsk:
    """Decide what may be sent from `path` and build the requests (raises `SpecsFolderError`, `AgreementRequired`)."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be between 1 and {MAX_BATCH}")
    folder = extraction_folder(path)
    wanted = Path(path).resolve()
    tier = TIER_OF_KIND[kind]
    plan = plan_transmission(folder, tier=tier, config=config)
    if tier == 2 and not plan.local_mode and not plan.agreements.dpa:
        raise AgreementRequired(
            "predictions for feature vectors send Tier 2 data, which needs a Data Processing Agreement: "
            f"{plan.config_source or 'the extraction manifest'} does not declare `[agreements] dpa = true`, so nothing is sent"
        )
    selected = tuple(item for item in plan.items if _selected(item, folder, wanted, kind))
    if not selected:
        raise SpecsFolderError(f"no protocol of {folder} lies under {path}")
    by_hash: dict[str, list[PlannedItem]] = {}
    for item in selected:
        if item.transmittable:
            by_hash.setdefault(item.content_hash, []).append(item)
    groups = list(by_hash.values())
    requests = []
    for start in range(0, len(groups), batch_size):
        batch = groups[start : start + batch_size]
        if kind == "specs":
            payload = PredictionRequested(specs=[copies[0].spec for copies in batch])
        else:
            payload = PredictionRequested(vectors=[copies[0].vector for copies in batch])
        event = new_event("prediction.requested", payload, partner_id=partner_id)
        requests.append((event, tuple(item for copies in batch for item in copies)))
    return PredictionAsk(kind=kind, plan=plan, selected=selected, requests=tuple(requests))
