"""From a corpus folder to ProtocolSpecs and a manifest: the extraction pipeline.

One protocol: its canonical text (title line, then one step per line) is annotated (action and
quantity spans, `spans.py`); every action that is not negated starts a step whose operation comes
from the action lexicon; the quantities and equipment / labware / reagent classes between it and
the next action belong to it (quantities before a line's first action belong to that action, and
an action introduced by "by" — `mix by inverting` — describes the step before it rather than
starting one). A line with quantities but no action becomes an `other` step; a line that is only
a caution (`Do not heat above 60 °C`) gives none. Domain and organism come from the whole text.

The spec's `content_hash` is HMAC-SHA256 of the canonical text keyed with the partner's secret
salt (`salt.py`), so Mishale can recognise a resubmitted protocol but cannot confirm a guess of
its text.

A corpus: files are read and extracted in `jobs` processes (the same work, in the same order, as
with one), then the main process resolves each protocol's sensitivity label, asks the policy what
may leave, writes every spec atomically and writes the manifest last.

Tier 2 also computes each spec's feature vector (`featurize`, from the spec alone, in the same
worker) and writes it to `vectors/<source>.vector.json` beside the specs; both stay local until
`submit` sends the vectors the manifest and the policy allow. Without a DPA in the partner config
(`[agreements] dpa = true`) the policy marks no vector transmittable; the `extract --tier 2`
command goes further and refuses to run (`PartnerConfig.require_agreement_for`), unless
`--local-mode` promises that nothing will leave.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mshale_fl.agents.partner.extract import classes
from mshale_fl.agents.partner.extract.operations import is_negated, operation_for
from mshale_fl.agents.partner.extract.output import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    canonical_json,
    remove_stale_specs,
    remove_stale_vectors,
    spec_bytes,
    spec_path,
    vector_bytes,
    vector_path,
)
from mshale_fl.agents.partner.extract.reader import (
    Protocol,
    ReadFailure,
    corpus_files,
    read_one,
)
from mshale_fl.agents.partner.extract.salt import load_or_create_salt
from mshale_fl.agents.partner.extract.sensitivity import (
    PartnerConfig,
    label_of,
    load_config,
)
from mshale_fl.agents.partner.extract.spans import Span, annotate
from mshale_fl.agents.partner.featurize import featurize
from mshale_fl.agents.partner.policy import TIERS, allowed_forms, decide
from mshale_fl.schemas.protocol_spec import (
    MAX_QUANTITIES_PER_STEP,
    MAX_STEPS,
    ProtocolSpec,
    Quantity,
    Step,
)
from mshale_fl.schemas.vocabulary import Operation

from mshale_fl.fileio import write_atomic

_MANNER = re.compile(r"(?i)\bby\s+(?:gently\s+|carefully\s+|slowly\s+|briefly\s+|repeatedly\s+)?$")


def content_hash(text: str, salt: bytes) -> str:
    """HMAC-SHA256 of the protocol's canonical text under the partner's salt (lower-case hex)."""
    return hmac.new(salt, text.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass
class _StepDraft:
    operation: Operation
    quantities: list[Quantity] = field(default_factory=list)
    segments: list[tuple[int, int]] = field(default_factory=list)


def _line_bounds(text: str) -> Iterator[tuple[int, int]]:
    start = 0
    for line in text.split("\n"):
        yield start, start + len(line)
        start += len(line) + 1


def _by_line(spans: list[Span], bounds: list[tuple[int, int]]) -> dict[int, list[Span]]:
    """The spans lying wholly within each line, by line number, in their order (one pass, not one per line)."""
    starts = [start for start, _ in bounds]
    grouped: dict[int, list[Span]] = {}
    for span in spans:
        number = bisect.bisect_right(starts, span.start) - 1
        if number >= 0 and span.end <= bounds[number][1]:
            grouped.setdefault(number, []).append(span)
    return grouped


def build_steps(text: str, spans: list[Span], *, skip_first_line: bool = True) -> list[Step]:
    """Steps of an annotated canonical text (see the module docstring for the rules)."""
    actions = [s for s in spans if s.label == "Action"]
    quantities = [s for s in spans if s.quantity is not None]
    action_ranges = [(s.start, s.end) for s in actions]
    action_starts = [start for start, _ in action_ranges]
    drafts: list[_StepDraft] = []
    bounds = list(_line_bounds(text))
    actions_of_line = _by_line(actions, bounds)
    quantities_of_line = _by_line(quantities, bounds)
    for number, (line_start, line_end) in enumerate(bounds):
        if skip_first_line and number == 0:
            continue
        line_actions = actions_of_line.get(number, [])
        line_quantities = quantities_of_line.get(number, [])
        if not line_actions:
            if line_quantities:
                drafts.append(_StepDraft(Operation.OTHER, [q.quantity for q in line_quantities],  # type: ignore[misc]
                                         [(line_start, line_end)]))  # fmt: skip
            continue
        line_text = text[line_start:line_end]
        current: _StepDraft | None = None
        for index, action in enumerate(line_actions):
            segment_start = line_start if index == 0 else action.start
            segment_end = line_actions[index + 1].start if index + 1 < len(line_actions) else line_end
            segment_quantities = [q.quantity for q in line_quantities if segment_start <= q.start < segment_end]
            before = text[line_start : action.start]
            if is_negated(before):
                current = None  # a caution: neither a step nor quantities of one
                continue
            if current is not None and _MANNER.search(before):
                current.quantities.extend(segment_quantities)  # type: ignore[arg-type]
                current.segments.append((segment_start, segment_end))
                continue
            current = _StepDraft(operation_for(text[action.start : action.end], line_text),
                                 list(segment_quantities), [(segment_start, segment_end)])  # type: ignore[arg-type]  # fmt: skip
            drafts.append(current)
    steps = []
    for draft in drafts:
        segment_text = " ".join(text[a:b] for a, b in draft.segments)
        offset_actions = _relative_ranges(draft.segments, action_ranges, action_starts)
        steps.append(
            Step(
                operation=draft.operation,
                quantities=draft.quantities[:MAX_QUANTITIES_PER_STEP],
                equipment=classes.equipment_in(segment_text, offset_actions),
                labware=classes.labware_in(segment_text, offset_actions),
                reagents=classes.reagents_in(segment_text, offset_actions),
            )
        )
    return steps


def _relative_ranges(
    segments: list[tuple[int, int]], ranges: list[tuple[int, int]], starts: list[int]
) -> list[tuple[int, int]]:
    """`ranges` (absolute offsets, sorted; `starts` their starts) re-expressed in the text of the joined segments."""
    relative = []
    offset = 0
    # Each segment's ranges are found by bisection, not by scanning all: linear in the text, not quadratic.
    for start, end in segments:
        for a, b in ranges[bisect.bisect_left(starts, start) : bisect.bisect_right(starts, end)]:
            if b <= end:
                relative.append((a - start + offset, b - start + offset))
        offset += end - start + 1
    return relative


@dataclass(frozen=True)
class ExtractedSpec:
    spec: ProtocolSpec
    truncated: bool  # the protocol had more steps than a spec may hold


class NoSteps(ValueError):
    """Nothing in the protocol could be read as a step (no action and no quantity)."""


def extract_spec(protocol: Protocol, salt: bytes) -> ExtractedSpec:
    text = protocol.text
    spans = annotate(text)
    steps = build_steps(text, spans)
    if not steps:
        raise NoSteps("no step found: no action and no quantity was recognised")
    return ExtractedSpec(
        ProtocolSpec(
            content_hash=content_hash(text, salt),
            domain=classes.domain_of(text),
            organism=classes.organism_of(text),
            steps=steps[:MAX_STEPS],
        ),
        truncated=len(steps) > MAX_STEPS,
    )


# ---------------------------------------------------------------- corpus


@dataclass(frozen=True)
class FileResult:
    """What a worker sends back for one file (no protocol text crosses the process boundary)."""

    source: str
    spec_json: bytes | None = None
    vector_json: bytes | None = None  # tier 2 only
    content_hash: str | None = None
    steps: int = 0
    truncated: bool = False
    front_matter_label: str | None = None
    failure: str | None = None


def extract_file(path: Path, root: Path, salt: bytes, with_vector: bool = False) -> FileResult:
    read = read_one(path, root)
    if isinstance(read, ReadFailure):
        return FileResult(read.source, failure=read.reason)
    label = _front_matter_label(read.front_matter.get("sensitivity"))
    try:
        extracted = extract_spec(read, salt)
    except NoSteps as error:
        return FileResult(read.source, failure=str(error), front_matter_label=label)
    return FileResult(
        read.source,
        spec_json=spec_bytes(extracted.spec),
        vector_json=vector_bytes(featurize(extracted.spec)) if with_vector else None,
        content_hash=extracted.spec.content_hash,
        steps=len(extracted.spec.steps),
        truncated=extracted.truncated,
        front_matter_label=label,
    )


def _front_matter_label(value: object) -> str | None:
    """The `sensitivity:` a protocol gives itself, as text; a list or mapping is no label at all.

    Never `str()` of a YAML structure: aliases let a few lines of front matter stand for a list of
    a billion items, which would take minutes and gigabytes to print. A non-text value becomes a
    placeholder that matches no label, so it is treated as `full-ip` and reported.
    """
    if value is None or isinstance(value, str):
        return value
    return f"<{type(value).__name__}>"


def _extract_batch(paths: list[Path], root: Path, salt: bytes, with_vector: bool) -> list[FileResult]:
    return [extract_file(path, root, salt, with_vector) for path in paths]


def _results(paths: list[Path], root: Path, salt: bytes, jobs: int, with_vector: bool) -> Iterator[FileResult]:
    if jobs <= 1 or len(paths) < 2:
        for path in paths:
            yield extract_file(path, root, salt, with_vector)
        return
    batch = max(1, min(16, len(paths) // (jobs * 4)))
    batches = [paths[i : i + batch] for i in range(0, len(paths), batch)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        # map() yields in submission order, so the output does not depend on which worker finished first
        for results in pool.map(_extract_batch, batches, [root] * len(batches), [salt] * len(batches),
                                [with_vector] * len(batches)):
            yield from results


@dataclass(frozen=True)
class ExtractionResult:
    manifest: dict
    manifest_path: Path
    removed_stale: tuple[Path, ...]

    @property
    def protocols(self) -> list[dict]:
        return self.manifest["protocols"]

    @property
    def unreadable(self) -> list[dict]:
        return self.manifest["unreadable"]


def extract_corpus(
    corpus: Path,
    output: Path,
    *,
    tier: int = 1,
    local_mode: bool = False,
    config: PartnerConfig | None = None,
    config_path: Path | None = None,
    jobs: int = 1,
    on_start: Callable[[int], None] | None = None,
    on_file: Callable[[FileResult], None] | None = None,
) -> ExtractionResult:
    """Extract every protocol under `corpus` into `output`; see the module docstring."""
    corpus, output = Path(corpus), Path(output)
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}")
    if not corpus.is_dir():
        raise NotADirectoryError(f"corpus folder {corpus} does not exist or is not a folder")
    config = config or load_config(config_path, corpus)
    agreements = config.agreements_for_policy()
    with_vector = tier == 2
    salt = load_or_create_salt(output)
    paths = [p for p in corpus_files(corpus) if output.resolve() not in p.resolve().parents]
    if on_start:
        on_start(len(paths))
    protocols: list[dict] = []
    unreadable: list[dict] = []
    written: set[Path] = set()
    written_vectors: set[Path] = set()
    for result in _results(paths, corpus, salt, jobs, with_vector):
        if on_file:
            on_file(result)
        if result.spec_json is None:
            unreadable.append({"source": result.source, "reason": result.failure})
            continue
        label = label_of(result.source, result.front_matter_label, config)
        decision = decide(label.sensitivity, tier, agreements, local_mode=local_mode)
        target = spec_path(output, result.source)
        write_atomic(target, result.spec_json)
        written.add(target)
        record = {
            "source": result.source,
            "spec": target.relative_to(output).as_posix(),
            "content_hash": result.content_hash,
            "steps": result.steps,
            "steps_truncated": result.truncated,
            "sensitivity": label.sensitivity.value,
            "label_source": label.source,
            "decision": decision.as_dict(),
            "may_leave_as": [f.value for f in allowed_forms(label.sensitivity, agreements, local_mode=local_mode)],
        }
        if result.vector_json is not None:
            vector_target = vector_path(output, result.source)
            write_atomic(vector_target, result.vector_json)
            written_vectors.add(vector_target)
            record["vector"] = vector_target.relative_to(output).as_posix()
        protocols.append(record)
    removed = remove_stale_specs(output, written) + remove_stale_vectors(output, written_vectors)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "tier": tier,
        "local_mode": local_mode,
        # Where the agreements came from, so `submit` can check the partner still declares them.
        "config": str(Path(config.source).resolve()) if config.source else None,
        "agreements": {
            "dpa": agreements.dpa,
            "irb": agreements.irb,
            "federated_training": agreements.federated_training,
        },
        "protocols": protocols,
        "unreadable": unreadable,
        "summary": _summary(protocols, unreadable),
    }
    manifest_path = output / MANIFEST_NAME
    write_atomic(manifest_path, canonical_json(manifest))
    return ExtractionResult(manifest, manifest_path, tuple(removed))


def _summary(protocols: Iterable[dict], unreadable: list[dict]) -> dict[str, object]:
    protocols = list(protocols)
    by_label: dict[str, int] = {}
    for record in protocols:
        by_label[record["sensitivity"]] = by_label.get(record["sensitivity"], 0) + 1
    return {
        "protocols": len(protocols),
        "transmittable": sum(1 for r in protocols if r["decision"]["transmittable"]),
        "withheld": sum(1 for r in protocols if not r["decision"]["transmittable"]),
        "unreadable": len(unreadable),
        "by_sensitivity": dict(sorted(by_label.items())),
    }
