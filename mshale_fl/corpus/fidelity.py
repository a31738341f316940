"""How well the extractor recovers what the synthesizer meant: parse fidelity of synthesized files.

Each synthesized protocol knows its intended spec (`protocol.Draft`); `extract_written` reads its
file back from disk exactly as a partner's extractor does (`read_one`, `extract_spec`) and
`compare` sets the two side by side:

- operations: the extracted operation sequence equals the intended one;
- steps: intended steps recovered with their operation *and* all their quantities, aligned by
  `difflib.SequenceMatcher` over the operation sequences (so one missed step costs one step);
- temperatures, durations: the protocol's multiset of temperatures (durations) is the intended one;
- domain, organism: the spec's domain and organism are the intended ones;
- ground-truth features: every feature the ground truth reads has its intended value, and the
  logit the ground truth computes from the extracted features is within 1e-6 of the intended one.

Quantities are compared as the featurizer sees them: kind, representative value rounded to 6
significant digits, approximate or not, range or not.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mshale_fl.agents.partner.extract.pipeline import NoSteps, extract_spec
from mshale_fl.agents.partner.extract.reader import ReadFailure, read_one
from mshale_fl.agents.partner.featurize import feature_values
from mshale_fl.agents.partner.featurize.bins import representative, snap
from mshale_fl.corpus.ground_truth import GroundTruth
from mshale_fl.corpus.synth import PartnerCorpus, SynthesizedProtocol
from mshale_fl.schemas.protocol_spec import ProtocolSpec, Quantity
from mshale_fl.schemas.vocabulary import QuantityKind

_SALT = b"\x00" * 32  # the content hash plays no part here


def quantity_key(quantity: Quantity) -> tuple[str, float, bool, bool]:
    ranged = quantity.min is not None and quantity.max is not None and not quantity.approx
    return quantity.kind.value, snap(representative(quantity)), quantity.approx, ranged


def _of_kind(steps: Iterable, kind: QuantityKind) -> list[tuple]:
    return sorted(quantity_key(q) for step in steps for q in step.quantities if q.kind is kind)


@dataclass(frozen=True)
class ProtocolFidelity:
    source: str
    intended_steps: int
    extracted_steps: int
    steps_recovered: int
    operations: bool
    temperatures: bool
    durations: bool
    domain: bool
    organism: bool
    ground_truth_features: bool


def compare(protocol: SynthesizedProtocol, spec: ProtocolSpec | None, ground_truth: GroundTruth) -> ProtocolFidelity:
    """One protocol's intended spec against what was extracted (`None`: nothing could be extracted)."""
    intended = protocol.draft.steps
    if spec is None:
        return ProtocolFidelity(protocol.path, len(intended), 0, 0, False, False, False, False, False, False)
    wanted = [s.operation.value for s in intended]
    got = [s.operation.value for s in spec.steps]
    recovered = 0
    for block in difflib.SequenceMatcher(a=wanted, b=got, autojunk=False).get_matching_blocks():
        for offset in range(block.size):
            a, b = intended[block.a + offset], spec.steps[block.b + offset]
            recovered += sorted(map(quantity_key, a.quantities)) == sorted(map(quantity_key, b.quantities))
    extracted_features = feature_values(spec)
    indices = sorted({i for term in ground_truth.terms for i in term.indices})
    same_features = bool(np.array_equal(extracted_features[indices], protocol.features[indices]))
    logit_gap = abs(float(ground_truth.logits(extracted_features)[0] - ground_truth.logits(protocol.features)[0]))
    return ProtocolFidelity(
        source=protocol.path,
        intended_steps=len(intended),
        extracted_steps=len(spec.steps),
        steps_recovered=recovered,
        operations=wanted == got,
        temperatures=_of_kind(intended, QuantityKind.TEMPERATURE) == _of_kind(spec.steps, QuantityKind.TEMPERATURE),
        durations=_of_kind(intended, QuantityKind.DURATION) == _of_kind(spec.steps, QuantityKind.DURATION),
        domain=spec.domain is protocol.draft.spec_domain,
        organism=spec.organism is protocol.draft.organism,
        ground_truth_features=same_features and logit_gap < 1e-6,
    )


@dataclass(frozen=True)
class FidelityReport:
    """Shares over the protocols compared (steps: over their intended steps)."""

    protocols: int
    steps: float
    operations: float
    temperatures: float
    durations: float
    domain: float
    organism: float
    ground_truth_features: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarise(results: Iterable[ProtocolFidelity]) -> FidelityReport:
    results = list(results)
    if not results:
        raise ValueError("no protocols to summarise")

    def share(name: str) -> float:
        return sum(bool(getattr(r, name)) for r in results) / len(results)

    intended = sum(r.intended_steps for r in results)
    return FidelityReport(
        protocols=len(results),
        steps=sum(r.steps_recovered for r in results) / intended,
        operations=share("operations"),
        temperatures=share("temperatures"),
        durations=share("durations"),
        domain=share("domain"),
        organism=share("organism"),
        ground_truth_features=share("ground_truth_features"),
    )


def extract_written(folder: Path, protocol: SynthesizedProtocol) -> ProtocolSpec | None:
    """The spec a partner's extractor gets from the protocol's file under `folder` (None if none)."""
    read = read_one(folder / protocol.path, folder)
    if isinstance(read, ReadFailure):
        return None
    try:
        return extract_spec(read, _SALT).spec
    except NoSteps:
        return None


def measure_partner(folder: Path, partner: PartnerCorpus, ground_truth: GroundTruth) -> list[ProtocolFidelity]:
    """Fidelity of every protocol of a lab written under `folder`."""
    return [compare(p, extract_written(folder, p), ground_truth) for p in partner.protocols]
