"""`mshale-fl corpus synth`: synthetic partner corpora with outcomes from a hidden ground truth.

Writes DIR/<partner-id>/ folders a partner's extractor and trainer read as they are (protocols,
outcome sidecars, `mshale.toml`), plus DIR/manifest.json, and the ground truth's parameters to
DIR/_ground_truth.json only with `--reveal-ground-truth`. See mshale_fl/corpus/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mshale_fl.corpus.synth import (
    GROUND_TRUTH_NAME,
    MAX_PARTNERS,
    MAX_PROTOCOLS,
    MIN_PROTOCOLS,
    SynthCorpus,
    check_sizes,
    synthesize,
    write_synth_corpus,
)

app = typer.Typer(help="Synthetic partner corpora for demos, tests and evaluation.", no_args_is_help=True)
DEFAULT_PROTOCOLS = 60


# A callback keeps `corpus` a command group with its single command named `synth`.
@app.callback()
def _corpus_group() -> None:
    """Synthetic partner corpora for demos, tests and evaluation."""


@app.command("synth")
def synth(
    partners: Annotated[int, typer.Option("--partners", min=1, max=MAX_PARTNERS, help="Number of partner labs.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write; must be empty or new (see --force).")],
    protocols_per_partner: Annotated[
        int,
        typer.Option("--protocols-per-partner", min=MIN_PROTOCOLS, max=MAX_PROTOCOLS,
                     help=f"Protocols per lab (at least {MIN_PROTOCOLS}: one of each sensitivity label)."),
    ] = DEFAULT_PROTOCOLS,  # fmt: skip
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed: the same seed always writes the same corpus.")] = 0,
    reveal_ground_truth: Annotated[
        bool,
        typer.Option("--reveal-ground-truth",
                     help=f"Also write DIR/{GROUND_TRUTH_NAME}: the outcome function's parameters, for evaluation "
                          "(never inside a partner folder)."),
    ] = False,  # fmt: skip
    force: Annotated[
        bool, typer.Option("--force", help="Replace a synthesized corpus already in --out (other files are left).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")] = False,
) -> None:
    """Write realistic protocols of several domains for N partner labs, with outcomes from a hidden function of their features."""
    check_sizes(partners, protocols_per_partner)
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True, disable=json_output or not console.is_terminal,
    )  # fmt: skip
    total = partners * protocols_per_partner
    with progress:
        task = progress.add_task("synthesizing", total=total)
        corpus = synthesize(partners, protocols_per_partner, seed, on_protocol=lambda _: progress.advance(task))
        progress.reset(task, total=total, description="writing")
        manifest = write_synth_corpus(corpus, out, force=force, reveal_ground_truth=reveal_ground_truth,
                                      on_protocol=lambda _: progress.advance(task))  # fmt: skip
    if json_output:
        typer.echo(json.dumps({
            "out": str(out),
            "manifest": str(manifest),
            "ground_truth": str(out / GROUND_TRUTH_NAME) if reveal_ground_truth else None,
            "seed": seed,
            "protocols_per_partner": protocols_per_partner,
            "partners": [{k: v for k, v in p.summary().items() if k != "profile"} for p in corpus.partners],
        }, sort_keys=True))  # fmt: skip
        return
    _print_summary(corpus, out, manifest, reveal_ground_truth)


def _print_summary(corpus: SynthCorpus, out: Path, manifest: Path, revealed: bool) -> None:
    console = Console(highlight=False, soft_wrap=True)
    table = Table("partner", "protocols", "with outcomes", "domains (most first)", "labels")
    for partner in corpus.partners:
        summary = partner.summary()
        domains = sorted(summary["domains"].items(), key=lambda item: (-item[1], item[0]))  # type: ignore[union-attr]
        labels = ", ".join(f"{label} {count}" for label, count in summary["labels"].items())  # type: ignore[union-attr]
        table.add_row(partner.partner_id, str(summary["protocols"]), str(summary["outcomes"]),
                      ", ".join(f"{name} {count}" for name, count in domains), labels)  # fmt: skip
    console.print(f"Synthesized {len(corpus.partners)} partner corpora in {out} (seed {corpus.seed})")
    console.print(table)
    console.print(f"Manifest: {manifest}")
    if revealed:
        console.print(f"Ground truth: {out / GROUND_TRUTH_NAME} (keep it away from the partners)")
    else:
        console.print("Ground truth: hidden (--reveal-ground-truth writes it for evaluation)")
    console.print(f"Each {out}/<partner-id>/ is a partner corpus: pass it to `extract --corpus` or `join --corpus`")
