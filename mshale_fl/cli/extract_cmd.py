"""`mshale-fl extract` (also `mshale-extract`) and `mshale-fl eval extract`.

`extract` turns a partner's corpus folder into ProtocolSpecs and a manifest of what may leave
(see `mshale_fl.agents.partner.extract.pipeline`); nothing is sent anywhere. `--tier 2` also
writes each spec's feature vector to `vectors/`, and refuses (one line, exit 2) when the partner
config declares no Data Processing Agreement. `eval extract`
measures span extraction against brat gold (the WLP corpus).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mshale_fl.agents.partner.extract.evaluation import evaluate_wlp
from mshale_fl.agents.partner.extract.pipeline import FileResult, extract_corpus
from mshale_fl.agents.partner.extract.salt import SaltError, salt_path
from mshale_fl.agents.partner.extract.sensitivity import ConfigError, load_config

# Exact-span F1 of the WNUT 2020 baseline CRF on the WLP test split (Tabassum et al. 2020).
WNUT_2020_BASELINE_F1 = {"Temperature": 0.918, "Time": 0.886, "Speed": 0.855, "Action": 0.844, "Amount": 0.842}
PROGRESS_THRESHOLD = 20  # files; shorter runs finish before a bar would help

eval_app = typer.Typer(help="Measure extraction quality.", no_args_is_help=True)


# A callback keeps `eval` a command group with its single command named `extract`, however it is mounted.
@eval_app.callback()
def _eval_group() -> None:
    """Measure extraction quality."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(message))}", highlight=False)
    return typer.Exit(code)


def extract(
    corpus: Annotated[Path, typer.Option("--corpus", help="Folder of protocols (read recursively).")],
    output: Annotated[Path, typer.Option("--output", help="Folder for specs/, vectors/ (tier 2) and manifest.json.")],
    tier: Annotated[
        int, typer.Option("--tier", min=1, max=2, help="Contribution tier: 1 specs, 2 feature vectors (needs a DPA).")
    ] = 1,
    local_mode: Annotated[bool, typer.Option("--local-mode", help="Extract only; mark nothing as transmittable.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Partner config (default: mshale.toml at the corpus root).")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=256, help="Worker processes.")] = 1,
    json_output: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")] = False,
) -> None:
    """Extract a ProtocolSpec from every protocol of a corpus, locally, and record what may leave."""
    if not corpus.is_dir():
        raise _fail(f"corpus folder {corpus} does not exist or is not a folder")
    if output.exists() and not output.is_dir():
        raise _fail(f"output {output} exists and is not a folder")
    try:
        partner_config = load_config(config, corpus)
        if not local_mode:
            partner_config.require_agreement_for(tier)
    except ConfigError as error:
        raise _fail(str(error)) from None

    console = Console(stderr=True)
    show_progress = not json_output and console.is_terminal
    progress = Progress(
        TextColumn("extracting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True, disable=not show_progress,
    )  # fmt: skip
    task = progress.add_task("extract", total=None)

    def on_start(total: int) -> None:
        progress.update(task, total=total, visible=total >= PROGRESS_THRESHOLD)

    def on_file(_: FileResult) -> None:
        progress.advance(task)

    try:
        with progress:
            result = extract_corpus(corpus, output, tier=tier, local_mode=local_mode, config=partner_config,
                                    jobs=jobs, on_start=on_start, on_file=on_file)  # fmt: skip
    except (SaltError, ConfigError) as error:
        raise _fail(str(error)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted: files already written are complete, no partial file was left", 130) from None
    except OSError as error:
        raise _fail(f"cannot write to {output}: {error.strerror or error}") from None

    manifest = result.manifest
    if json_output:
        typer.echo(json.dumps({
            "output": str(output),
            "manifest": str(result.manifest_path),
            "salt": str(salt_path(output)),
            "tier": tier,
            "local_mode": local_mode,
            "config": partner_config.source,
            "summary": manifest["summary"],
            "vectors": sum(1 for record in manifest["protocols"] if "vector" in record),
            "unreadable": manifest["unreadable"],
            "removed_stale_specs": [str(p) for p in result.removed_stale],
        }, sort_keys=True))  # fmt: skip
        return
    _print_summary(manifest, result.manifest_path, partner_config.source)


def _print_summary(manifest: dict, manifest_path: Path, config_source: str | None) -> None:
    console = Console(highlight=False, soft_wrap=True)
    summary = manifest["summary"]
    mode = "local mode (nothing transmittable)" if manifest["local_mode"] else f"tier {manifest['tier']}"
    console.print(f"Extracted [bold]{summary['protocols']}[/] protocols ({mode}); "
                  f"config: {config_source or 'none (every protocol is full-ip unless labelled)'}")  # fmt: skip
    table = Table("sensitivity", "protocols", "transmittable", "withheld because")
    by_label: dict[str, list[dict]] = {}
    for record in manifest["protocols"]:
        by_label.setdefault(record["sensitivity"], []).append(record)
    for label, records in sorted(by_label.items()):
        reasons = sorted({r["decision"]["reason"] for r in records if not r["decision"]["transmittable"]})
        table.add_row(label, str(len(records)), str(sum(r["decision"]["transmittable"] for r in records)),
                      ", ".join(reasons) or "-")  # fmt: skip
    console.print(table)
    vectors = sum(1 for record in manifest["protocols"] if "vector" in record)
    if vectors:
        console.print(f"Feature vectors: {vectors} written to {manifest_path.parent / 'vectors'} (local until you submit; "
                      f"`mshale-fl inspect --specs {manifest_path.parent} --show-features` shows every value)")  # fmt: skip
    if manifest["unreadable"]:
        console.print(f"[yellow]{len(manifest['unreadable'])} file(s) could not be read:[/]")
        for failure in manifest["unreadable"]:
            console.print(f"  {failure['source']}: {failure['reason']}")
    console.print(f"Manifest: {manifest_path}")


@eval_app.command("extract")
def eval_extract(
    wlp: Annotated[Path, typer.Option("--wlp", help="A WLP split folder of .txt/.ann pairs.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print scores as JSON.")] = False,
) -> None:
    """Precision, recall and F1 per type against brat gold, exact-span and overlap, plus protocols/s."""
    if not wlp.is_dir():
        raise _fail(f"{wlp} is not a folder")
    try:
        report = evaluate_wlp(wlp)
    except FileNotFoundError as error:
        raise _fail(str(error)) from None
    if json_output:
        typer.echo(json.dumps(report.as_json(), sort_keys=True))
        return
    table = Table("type", "gold", "predicted", "exact P", "exact R", "exact F1", "overlap F1", "baseline F1")
    for label, exact in report.exact.items():
        gold, predicted = report.counts[label]
        baseline = WNUT_2020_BASELINE_F1.get(label)
        table.add_row(label, str(gold), str(predicted), f"{exact.precision:.3f}", f"{exact.recall:.3f}",
                      f"{exact.f1:.3f}", f"{report.overlap[label].f1:.3f}",
                      "-" if baseline is None else f"{baseline:.3f}")  # fmt: skip
    console = Console(highlight=False)
    console.print(table)
    console.print(f"{report.protocols} protocols, {report.protocols_per_s:.1f} protocols/s")


def main() -> None:
    """Entry point of the `mshale-extract` console script."""
    command = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    command.command()(extract)
    command(prog_name="mshale-extract", args=sys.argv[1:])
