"""Model cards: one per registered version, as JSON (for tools) and Markdown (for people).

Both are rendered from the registry row alone, deterministically (sorted keys and partners), so a
card can be regenerated and compared byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

from mshale_fl.access.registry import ModelVersion
from mshale_fl.fileio import write_atomic

CARD_FORMAT = "mshale-model-card/1"


def card_json(model: ModelVersion) -> str:
    return json.dumps({"format": CARD_FORMAT, **model.as_dict()}, indent=2, sort_keys=True) + "\n"


def card_markdown(model: ModelVersion) -> str:
    parent = "none (first version)" if model.parent_version is None else str(model.parent_version)
    lines = [
        f"# Model version {model.version}",
        "",
        "| field | value |",
        "|---|---|",
        f"| SHA-256 | `{model.sha256}` |",
        f"| parent version | {parent} |",
        f"| training rounds | {model.rounds} |",
        f"| published | {model.published_at.isoformat()} |",
        "",
        "## Metrics",
        "",
    ]
    if model.metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.6g} |" for name, value in sorted(model.metrics.items())]
    else:
        lines.append("No metrics were published.")
    lines += ["", "## Contributing partners and privacy spent", ""]
    if model.contributors:
        lines += ["| partner | epsilon | delta |", "|---|---|---|"]
        lines += [
            f"| {partner_id} | {spent.epsilon:.4g} | {spent.delta:.3g} |"
            for partner_id, spent in sorted(model.contributors.items())
        ]
    else:
        lines.append("No partner data trained this version.")
    return "\n".join(lines) + "\n"


def write_model_card(directory: Path | str, model: ModelVersion) -> tuple[Path, Path]:
    """Write `model-<version>.json` and `model-<version>.md` atomically; returns both paths."""
    directory = Path(directory)
    json_path = directory / f"model-{model.version}.json"
    markdown_path = directory / f"model-{model.version}.md"
    write_atomic(json_path, card_json(model))
    write_atomic(markdown_path, card_markdown(model))
    return json_path, markdown_path
