"""Helpers of the Tier 2 submission tests: a corpus with every label under a DPA, agreements, bad vectors."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from tier1.support import build_corpus, wlp_texts

from mshale_fl.ledger.agreements import AgreementKind, AgreementTerms
from mshale_fl.schemas.events import EventEnvelope, new_event
from mshale_fl.schemas.feature_vector import FeatureVector
from mshale_fl.schemas.payloads import VectorsSubmitted
from mshale_fl.schemas.vocabulary import Sensitivity

DPA_SECTION = "\n[agreements]\ndpa = true\n"


def build_tier2_corpus(root: Path, shared_dir: Path) -> dict[str, str]:
    """The Tier 1 corpus (every label) with a DPA declared, plus two copies of texts already in it:

    - `published/wlp-a-copy.txt`, the text of `published/wlp-a.txt` (two protocols, one vector);
    - `published/looks-public.md`, the text of the full-ip `secret/wlp-e.md` (must never leave).

    Returns {source: label}.
    """
    labels = build_corpus(root, shared_dir)
    config = root / "mshale.toml"
    config.write_text(config.read_text() + DPA_SECTION)
    wlp = wlp_texts(shared_dir, 6)
    (root / "published" / "wlp-a-copy.txt").write_text(wlp[0], encoding="utf-8")
    (root / "published" / "looks-public.md").write_text(wlp[4], encoding="utf-8")
    return {**labels, "published/wlp-a-copy.txt": "published", "published/looks-public.md": "published"}


def dpa(*, valid_from: date | None = None, valid_until: date | None = None) -> AgreementTerms:
    today = date.today()
    return AgreementTerms(AgreementKind.DPA, valid_until=valid_until or today + timedelta(days=365),
                          valid_from=valid_from or today - timedelta(days=1), attorney_reviewed=True)  # fmt: skip


def training_agreement() -> AgreementTerms:
    return AgreementTerms(AgreementKind.TRAINING, valid_until=date.today() + timedelta(days=365))


def vectors_event(partner_id: str, vectors: list[FeatureVector], label: Sensitivity = Sensitivity.INTERNAL) -> EventEnvelope[Any]:
    return new_event("vectors.submitted", VectorsSubmitted(sensitivity=label, vectors=vectors), partner_id=partner_id)


def raw_body(event: EventEnvelope[Any], edit: Any) -> bytes:
    """The event's JSON after `edit(data)` changed it in place: a body the strict contract may refuse.

    Python's json writes NaN and Infinity as bare tokens, as a careless client would.
    """
    data = event.model_dump(mode="json")
    edit(data)
    return json.dumps(data).encode()


def first_vector(data: dict[str, Any]) -> dict[str, Any]:
    vector: dict[str, Any] = data["payload"]["vectors"][0]
    return vector


def new_id() -> str:
    return str(uuid.uuid4())
