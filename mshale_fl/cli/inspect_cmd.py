"""`mshale-fl inspect --specs DIR [--show-features] [--json]`: what `submit` would send, and what it withholds.

Reads the output folder of `mshale-fl extract` (specs/ and manifest.json) through the same plan
as `submit` (`mshale_fl.agents.partner.transmission`), so the two cannot disagree. Nothing is
sent and no key is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mshale_fl.agents.partner.inspect import inspection, load_featurizer
from mshale_fl.agents.partner.transmission import TransmissionPlan, plan_transmission
from mshale_fl.errors import UserFacingError

NO_FEATURIZER = (
    "Feature vectors are produced at Tier 2 (223 values per protocol, with a Data Processing Agreement); "
    "this installation has no featurizer yet, so there are no vectors to show. Tier 1 sends only the specs above."
)


def inspect(
    specs: Annotated[Path, typer.Option("--specs", help="The output folder of `mshale-fl extract` (specs/ and manifest.json).")],
    show_features: Annotated[
        bool, typer.Option("--show-features", help="Also show the Tier 2 feature vectors (when a featurizer is installed).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the exact JSON payloads that would be published.")] = False,
) -> None:
    """Show exactly what would be transmitted per protocol, and what is withheld and why. Sends nothing."""
    try:
        plan = plan_transmission(specs, tier=1)
    except UserFacingError as error:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    featurizer = load_featurizer() if show_features else None
    report = inspection(plan, exact=json_output)
    if json_output:
        if show_features:
            report["features"] = _features_json(plan, featurizer)
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
        return
    console = Console(highlight=False, soft_wrap=False)
    _print_report(console, report)
    if show_features:
        _print_features(console, plan, featurizer)


def _print_report(console: Console, report: dict[str, Any]) -> None:
    summary = report["summary"]
    mode = " (local mode: nothing is transmittable)" if report["local_mode"] else ""
    console.print(
        f"[bold]Tier {report['tier']}[/]{mode}: {summary['transmitted']} of {summary['protocols']} protocols would be "
        f"sent as spec.submitted events; {summary['withheld']} withheld."
    )
    sent = [row for row in report["protocols"] if row["transmitted"]]
    if sent:
        table = Table(title="Would be transmitted (closed vocabularies only: no text of yours)", title_justify="left",
                      show_lines=True)  # fmt: skip
        for column in ("protocol", "label", "steps", "operations", "quantities", "classes", "domain / organism"):
            table.add_column(column, overflow="fold")
        for row in sent:
            s = row["summary"]
            kinds = ", ".join(f"{kind} {count}" for kind, count in s["quantity_kinds"].items())
            classes = "; ".join(f"{group}: {', '.join(members)}" for group, members in s["classes"].items() if members)
            table.add_row(row["source"], row["sensitivity"], str(s["steps"]), s["operations"],
                          f"{s['quantities']}" + (f" ({kinds})" if kinds else ""), classes or "-",
                          f"{s['domain']} / {s['organism']}")  # fmt: skip
        console.print(table)
    withheld = [row for row in report["protocols"] if not row["transmitted"]]
    if withheld:
        table = Table(title="Withheld (never sent)", title_justify="left")
        for column in ("protocol", "label", "label from", "reason", "why"):
            table.add_column(column, overflow="fold")
        for row in withheld:
            decision = row["decision"]
            table.add_row(row["source"], row["sensitivity"], row["label_source"] or "-", decision["reason"],
                          decision["explanation"])  # fmt: skip
        console.print(table)
    for failure in report["unreadable"]:
        console.print(f"[yellow]not extracted:[/] {failure.get('source')}: {failure.get('reason')}")
    console.print(f"Each payload travels in an event envelope: {report['envelope'].split(': ', 1)[1]}. "
                  "`--json` prints the exact payloads.")  # fmt: skip


def _vectors(plan: TransmissionPlan, featurizer: Any) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """(source, vector) for every protocol that may leave as Tier 2 vectors; (source, why not) for the others."""
    vectors, without = [], []
    for item in plan.items:
        decision = plan.decision_at(item, 2)
        spec = plan.local_spec(item) if decision.transmittable else None
        if spec is None:
            without.append((item.source, decision.explanation if not decision.transmittable else "the spec cannot be read"))
            continue
        vectors.append((item.source, featurizer.featurize(spec)))
    return vectors, without


def _features_json(plan: TransmissionPlan, featurizer: Any) -> dict[str, Any]:
    if featurizer is None:
        return {"available": False, "note": NO_FEATURIZER}
    vectors, without = _vectors(plan, featurizer)
    return {
        "available": True,
        "tier": 2,
        "feature_names": featurizer.feature_names,
        "vectors": [{"source": source, "vector": vector.model_dump(mode="json")} for source, vector in vectors],
        "no_vector": [{"source": source, "why": why} for source, why in without],
    }


def _print_features(console: Console, plan: TransmissionPlan, featurizer: Any) -> None:
    if featurizer is None:
        console.print(f"[yellow]--show-features:[/] {NO_FEATURIZER}")
        return
    vectors, without = _vectors(plan, featurizer)
    console.print(f"[bold]Tier 2 feature vectors[/] ({len(featurizer.feature_names)} values each; sent only by a "
                  "Tier 2 submission, under a DPA). Non-zero values:")  # fmt: skip
    for source, vector in vectors:
        nonzero = [(name, value) for name, value in zip(featurizer.feature_names, vector.values, strict=True) if value]
        table = Table(title=f"{source}: {len(nonzero)} of {len(vector.values)} values non-zero", title_justify="left")
        table.add_column("feature")
        table.add_column("value", justify="right")
        for name, value in nonzero:
            table.add_row(name, f"{value:.4g}")
        console.print(table)
    for source, why in without:
        console.print(f"{source}: no vector would leave ({why})")
