"""Tier 2 featurizer throughput: vectors/s from specs and from raw protocols; appends a section to BENCHMARKS.md.

    .venv/bin/python benchmarks/featurize.py [--wlp ../shared/corpora/wlp] [--rounds 5] [--no-write]

Inputs are the WLP train + dev protocols (read once into memory, so disk speed is not measured).
Measured per round, the rounds interleaved so that load from other work on the machine hits every
side alike (medians reported):

- baseline: `json.loads` of the same specs' JSON bytes (the cheapest thing any consumer of a spec does);
- `ProtocolSpec.model_validate_json` of the same bytes (what reading a spec file costs);
- `feature_values(spec)`: the numpy vector from an in-memory spec;
- `featurize(spec)`: the same plus the validated FeatureVector model;
- spec JSON -> FeatureVector (parse, validate, featurize: the `extract --tier 2` path from spec files);
- raw protocol -> FeatureVector (`extract_spec` + `featurize`), beside `extract_spec` alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from mshale_fl.agents.partner.extract import Protocol, extract_spec, read_one
from mshale_fl.agents.partner.extract.output import spec_bytes
from mshale_fl.agents.partner.featurize import feature_values, featurize
from mshale_fl.schemas.protocol_spec import ProtocolSpec

from mshale_fl.testing.machine import describe

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    return describe()


def load(wlp: Path) -> list[Protocol]:
    protocols = []
    for split in ("train", "dev"):
        for path in sorted((wlp / split).glob("*.txt")):
            protocol = read_one(path, wlp / split)
            if not isinstance(protocol, Protocol):
                raise SystemExit(f"{split}/{path.name}: {protocol.reason}")
            protocols.append(protocol)
    return protocols


def rate(work: Callable[[], int]) -> float:
    """Items per second of one call of `work` (which returns how many items it processed)."""
    started = time.perf_counter()
    items = work()
    return items / (time.perf_counter() - started)


def measure(protocols: list[Protocol], rounds: int, repeat: int) -> dict[str, list[float]]:
    salt = secrets.token_bytes(32)
    specs = [extract_spec(p, salt).spec for p in protocols]
    blobs = [spec_bytes(s) for s in specs]
    many_specs, many_blobs = specs * repeat, blobs * repeat

    def each(items: list, function: Callable) -> Callable[[], int]:
        def work() -> int:
            for item in items:
                function(item)
            return len(items)

        return work

    spec_sides = {
        "json.loads of spec JSON (baseline)": each(many_blobs, json.loads),
        "ProtocolSpec.model_validate_json": each(many_blobs, ProtocolSpec.model_validate_json),
        "feature_values(spec) -> float32 array": each(many_specs, feature_values),
        "featurize(spec) -> FeatureVector": each(many_specs, featurize),
        "spec JSON -> FeatureVector": each(many_blobs, lambda blob: featurize(ProtocolSpec.model_validate_json(blob))),
    }
    raw_sides = {
        "raw protocol -> spec (extract_spec only)": each(protocols, lambda p: extract_spec(p, salt)),
        "raw protocol -> FeatureVector (extract_spec + featurize)": each(
            protocols, lambda p: featurize(extract_spec(p, salt).spec)
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in (*spec_sides, *raw_sides)}
    for _ in range(rounds):
        for name, work in spec_sides.items():
            results[name].append(rate(work))
    for _ in range(max(2, (rounds + 1) // 2)):  # a pass over raw text takes ~15 s: fewer rounds
        for name, work in raw_sides.items():
            results[name].append(rate(work))
    return results


def section(results: dict[str, list[float]], protocols: int, rounds: int, repeat: int, load_before: str) -> str:
    baseline = statistics.median(results["json.loads of spec JSON (baseline)"])
    lines = [
        f"## Tier 2 featurizer throughput — {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine()}. Load average before/after: {load_before} / {_load()}. "
        f"Script: `benchmarks/featurize.py --rounds {rounds}`. Input: the {protocols} WLP train + dev protocols "
        f"in memory (spec-level sides run over them {repeat} times per round; rounds interleave the sides; "
        "medians). One process, one core.",
        "",
        "| side | items/s (median) | range over rounds | ratio to `json.loads` baseline |",
        "|---|---:|---:|---:|",
    ]
    for name, rates in results.items():
        median = statistics.median(rates)
        lines.append(f"| {name} | {median:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | {median / baseline:.3f} |")
    extract_only = statistics.median(results["raw protocol -> spec (extract_spec only)"])
    per_vector = 1e6 / statistics.median(results["featurize(spec) -> FeatureVector"])
    per_extract = 1e6 / extract_only
    lines += [
        "",
        f"Featurizing costs about {per_vector:.0f} µs per spec against {per_extract / 1000:.1f} ms to extract the "
        f"spec from text, so from raw protocols extraction dominates (featurizing adds "
        f"{100 * per_vector / per_extract:.1f} % to it).",
    ]
    return "\n".join(lines) + "\n"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def append(path: Path, text: str) -> None:
    """Append with one O_APPEND write, so sections written by concurrent runs never overwrite each other."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, ("\n" + text).encode("utf-8"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wlp", type=Path, default=ROOT.parent / "shared" / "corpora" / "wlp")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=4, help="passes over the corpus per spec-level round")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    args = parser.parse_args()
    if not (args.wlp / "train").is_dir() or not (args.wlp / "dev").is_dir():
        raise SystemExit(f"error: {args.wlp} needs train/ and dev/ folders (the WLP corpus)")
    if args.rounds < 1 or args.repeat < 1:
        raise SystemExit("error: --rounds and --repeat must be at least 1")
    load_before = _load()
    protocols = load(args.wlp)
    results = measure(protocols, args.rounds, args.repeat)
    text = section(results, len(protocols), args.rounds, args.repeat, load_before)
    print(text)
    if not args.no_write:
        append(args.output, text)
        print(f"appended to {args.output}")


if __name__ == "__main__":
    main()
