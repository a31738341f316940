"""Extraction quality and speed on the WLP train and dev splits; appends a section to BENCHMARKS.md.

    .venv/bin/python benchmarks/extract_quality.py [--wlp ../shared/corpora/wlp] [--no-write]

Quality: exact-span and overlap precision / recall / F1 per type against the brat gold, beside
the published WNUT 2020 baseline CRF (exact-span F1 on its held-out test split). The action
tagger is trained on train, so train figures are fit figures and dev figures are the honest
estimate. Speed: protocols per second of the extractor, and as a ratio to a baseline measured in
the same run (reading and tokenising the same texts), so machines can be compared.
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

from mshale_fl.agents.partner.extract.evaluation import (
    Report,
    evaluate_wlp,
    wlp_documents,
)
from mshale_fl.agents.partner.extract.spans import EVALUATED_TYPES
from mshale_fl.agents.partner.extract.tokens import tokenize

from mshale_fl.cli.extract_cmd import WNUT_2020_BASELINE_F1
from mshale_fl.fileio import write_atomic
from mshale_fl.testing.machine import describe

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    return describe()


def tokenise_rate(folder: Path) -> float:
    """Baseline: protocols/s of reading and tokenising the same files (no extraction)."""
    pairs = wlp_documents(folder)
    started = time.perf_counter()
    for text, _ in pairs:
        with text.open(encoding="utf-8", newline="") as handle:
            tokenize(handle.read())
    return len(pairs) / (time.perf_counter() - started)


def section(reports: dict[str, Report], baselines: dict[str, float]) -> str:
    lines = [
        f"## Extraction quality (WLP) — {datetime.date.today().isoformat()}",
        "",
        f"Machine: {machine()}. Script: `benchmarks/extract_quality.py`.",
        "Exact-span F1 is the headline (the published baseline is exact-span F1 of the WNUT 2020 CRF on the",
        "held-out test split). The action tagger is trained on train only: dev is the honest estimate.",
        "",
        "| type | baseline F1 | dev exact P | dev exact R | dev exact F1 | dev overlap F1 | train exact F1 | train overlap F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    dev, train = reports["dev"], reports["train"]
    for label in EVALUATED_TYPES:
        baseline = WNUT_2020_BASELINE_F1.get(label)
        lines.append(
            f"| {label} | {'-' if baseline is None else f'{baseline:.3f}'} | {dev.exact[label].precision:.3f} | "
            f"{dev.exact[label].recall:.3f} | **{dev.exact[label].f1:.3f}** | {dev.overlap[label].f1:.3f} | "
            f"{train.exact[label].f1:.3f} | {train.overlap[label].f1:.3f} |"
        )
    lines += ["", "| split | protocols | protocols/s | read+tokenise baseline protocols/s | extractor / baseline speed |",
              "|---|---|---|---|---|"]  # fmt: skip
    for split, report in reports.items():
        lines.append(f"| {split} | {report.protocols} | {report.protocols_per_s:.1f} | {baselines[split]:.1f} | "
                     f"{report.protocols_per_s / baselines[split]:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wlp", type=Path, default=ROOT.parent / "shared" / "corpora" / "wlp")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    args = parser.parse_args()
    reports = {split: evaluate_wlp(args.wlp / split) for split in ("train", "dev")}
    baselines = {split: tokenise_rate(args.wlp / split) for split in reports}
    text = section(reports, baselines)
    print(text)
    if not args.no_write:
        existing = args.output.read_text(encoding="utf-8") if args.output.exists() else "# Benchmarks\n"
        write_atomic(args.output, (existing.rstrip("\n") + "\n\n" + text).encode("utf-8"))
        print(f"appended to {args.output}")


if __name__ == "__main__":
    main()
