"""Extraction quality against brat gold: precision, recall and F1 per type, exact and overlapping spans.

Exact matching counts a predicted span as correct when a gold span of the same type has the same
start and end offsets. Overlap matching pairs each predicted span with at most one unpaired gold
span of the same type that shares at least one character (greedy in text order), so one long
prediction cannot be credited for several gold spans.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mshale_fl.agents.partner.extract.spans import EVALUATED_TYPES, annotate

SpanKey = tuple[str, int, int]  # (label, start, end)


@dataclass(frozen=True, slots=True)
class Scores:
    precision: float
    recall: float
    f1: float

    @classmethod
    def from_counts(cls, matched_predicted: int, predicted: int, matched_gold: int, gold: int) -> Scores:
        precision = matched_predicted / predicted if predicted else (1.0 if not gold else 0.0)
        recall = matched_gold / gold if gold else (1.0 if not predicted else 0.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(precision, recall, f1)

    def as_dict(self) -> dict[str, float]:
        return {"precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4)}


@dataclass(frozen=True, slots=True)
class Report:
    exact: dict[str, Scores]
    overlap: dict[str, Scores]
    counts: dict[str, tuple[int, int]]  # type -> (gold, predicted)
    protocols: int
    seconds: float

    @property
    def protocols_per_s(self) -> float:
        return self.protocols / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "types": {t: {"exact": self.exact[t].as_dict(), "overlap": self.overlap[t].as_dict()} for t in self.exact},
            "protocols_per_s": round(self.protocols_per_s, 2),
        }


def read_brat_spans(path: Path) -> list[SpanKey]:
    """Text-bound annotations (`T` lines) of a brat `.ann` file; a discontinuous span counts from its
    first start to its last end."""
    spans = []
    for line in _read_exact(path).split("\n"):
        if not line.startswith("T"):
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        label, _, offsets = fields[1].partition(" ")
        pieces = [piece.split() for piece in offsets.split(";")]
        spans.append((label, int(pieces[0][0]), int(pieces[-1][1])))
    return spans


def _overlap_matches(gold: list[SpanKey], predicted: list[SpanKey]) -> int:
    unpaired = sorted(gold, key=lambda s: (s[1], s[2]))
    used = [False] * len(unpaired)
    matched = 0
    for _, start, end in sorted(predicted, key=lambda s: (s[1], s[2])):
        for index, (_, gold_start, gold_end) in enumerate(unpaired):
            if not used[index] and gold_start < end and start < gold_end:
                used[index] = True
                matched += 1
                break
    return matched


def score(documents: Iterable[tuple[list[SpanKey], list[SpanKey]]], types: Iterable[str] = EVALUATED_TYPES) -> Report:
    """Scores from (gold, predicted) span lists, one pair per document."""
    types = list(types)
    exact_hits: dict[str, int] = defaultdict(int)
    overlap_hits: dict[str, int] = defaultdict(int)
    gold_count: dict[str, int] = defaultdict(int)
    predicted_count: dict[str, int] = defaultdict(int)
    protocols = 0
    for gold, predicted in documents:
        protocols += 1
        for label in types:
            gold_spans = [s for s in gold if s[0] == label]
            predicted_spans = [s for s in predicted if s[0] == label]
            gold_count[label] += len(gold_spans)
            predicted_count[label] += len(predicted_spans)
            exact_hits[label] += len(set(gold_spans) & set(predicted_spans))
            overlap_hits[label] += _overlap_matches(gold_spans, predicted_spans)
    exact = {t: Scores.from_counts(exact_hits[t], predicted_count[t], exact_hits[t], gold_count[t]) for t in types}
    overlap = {t: Scores.from_counts(overlap_hits[t], predicted_count[t], overlap_hits[t], gold_count[t]) for t in types}
    counts = {t: (gold_count[t], predicted_count[t]) for t in types}
    return Report(exact, overlap, counts, protocols, 0.0)


def _read_exact(path: Path) -> str:
    """The text as stored: brat offsets count characters of the file, so newlines are not translated."""
    with path.open(encoding="utf-8", newline="") as handle:
        return handle.read()


def wlp_documents(folder: Path) -> list[tuple[Path, Path]]:
    """(text, annotation) pairs of a WLP split folder, in a stable order."""
    pairs = []
    for text_path in sorted(Path(folder).rglob("*.txt")):
        annotation = text_path.with_suffix(".ann")
        if annotation.is_file():
            pairs.append((text_path, annotation))
    return pairs


def evaluate_wlp(folder: Path) -> Report:
    """Annotate every protocol of a WLP folder and score it against its gold; time only the extractor."""
    pairs = wlp_documents(folder)
    if not pairs:
        raise FileNotFoundError(f"no .txt/.ann pairs under {folder}")
    texts = [_read_exact(text) for text, _ in pairs]
    golds = [read_brat_spans(annotation) for _, annotation in pairs]
    annotate("Warm up: add 5 µl, spin at 300 x g, 37 °C, 1 min.")  # loads the tagger and pint outside the timing
    started = time.perf_counter()
    predictions = [[(s.label, s.start, s.end) for s in annotate(text)] for text in texts]
    elapsed = time.perf_counter() - started
    report = score(zip(golds, predictions, strict=True))
    return Report(report.exact, report.overlap, report.counts, report.protocols, elapsed)
