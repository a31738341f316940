"""The layout tables of docs/features.md, generated from `layout.py` so the doc cannot drift from the code.

    .venv/bin/python -m mshale_fl.agents.partner.featurize.docs [--check] [PATH]

rewrites the part of PATH (default docs/features.md) between the two marker lines; the prose
around it is kept. `--check` changes nothing and exits 1 if the file is out of date (the tier 2
tests run the same check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mshale_fl.agents.partner.featurize.layout import FEATURES, GROUPS, Encoding
from mshale_fl.schemas.feature_vector import FEATURE_DIM, FEATURE_SCHEMA_VERSION

BEGIN = "<!-- BEGIN GENERATED LAYOUT (python -m mshale_fl.agents.partner.featurize.docs) -->"
END = "<!-- END GENERATED LAYOUT -->"
DEFAULT_PATH = Path(__file__).resolve().parents[3] / "docs" / "features.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def layout_markdown() -> str:
    """The group table and the per-feature table, as Markdown."""
    lines = [
        f"Feature schema version {FEATURE_SCHEMA_VERSION}: {FEATURE_DIM} features in {len(GROUPS)} groups. "
        "Every value is in [0, 1] and a multiple of 1/grid.",
        "",
        "| group | indices | features | meaning | unit | scaling | grid |",
        "|---|---|---:|---|---|---|---:|",
    ]
    for group in GROUPS:
        lines.append(
            f"| `{group.key}` | {group.start}-{group.stop - 1} | {len(group.members)} | {_cell(group.meaning)} | "
            f"{_cell(group.unit)} | {_cell(group.scaling)} | {group.grid} |"
        )
    lines += ["", "| index | name | meaning | covers |", "|---:|---|---|---|"]
    for feature in FEATURES:
        member = feature.member
        if member.selects:
            covers = ", ".join(f"`{s.value}`" for s in member.selects)
        elif feature.group.kind is not None:
            low = "-inf" if member.low is None else f"{member.low:g}"
            high = "inf" if member.high is None else f"{member.high:g}"
            covers = f"[{low}, {high}) {feature.group.unit}"
        elif feature.group.encoding is Encoding.ONE_HOT and feature.group.key == "step_count":
            covers = f"[{member.low or 1:g}, {'inf' if member.high is None else f'{member.high:g}'}) steps"
        else:
            covers = ""
        lines.append(f"| {feature.index} | `{feature.name}` | {_cell(member.meaning)} | {covers} |")
    return "\n".join(lines) + "\n"


def render(document: str) -> str:
    """`document` with the generated section replaced by the current layout."""
    if BEGIN not in document or END not in document:
        raise ValueError(f"the document needs the marker lines {BEGIN!r} and {END!r}")
    head, rest = document.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{layout_markdown()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the feature layout tables of docs/features.md.")
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date; change nothing")
    args = parser.parse_args(argv)
    try:
        current = args.path.read_text(encoding="utf-8")
        wanted = render(current)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        if current != wanted:
            print(f"{args.path} is out of date: run python -m mshale_fl.agents.partner.featurize.docs", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        from mshale_fl.fileio import write_atomic

        write_atomic(args.path, wanted.encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
