"""`mshale-fl inspect --specs DIR [--show-features] [--config FILE] [--json]`: what `submit` would send, and what it withholds.

Reads the output folder of `mshale-fl extract` (specs/, vectors/ at Tier 2, manifest.json) through
the same plan as `submit` (`mshale_fl.agents.partner.transmission`), with the same partner config,
so the two cannot disagree. Nothing is sent and no key is needed. `--show-features` names every
one of the 223 features of each vector that would leave (Tier 2), with its value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mshale_fl.agents.partner.inspect import inspection, load_featurizer
from mshale_fl.agents.partner.policy import Form
from mshale_fl.agents.partner.transmission import TransmissionPlan, load_partner_config, manifest_tier, plan_transmission
from mshale_fl.errors import UserFacingError

NO_FEATURIZER = (
    "Feature vectors are produced at Tier 2 (223 values per protocol, with a Data Processing Agreement); "
    "this installation has no featurizer yet, so there are no vectors to show. Tier 1 sends only the specs above."
)


def inspect(
    specs: Annotated[Path, typer.Option("--specs", help="The output folder of `mshale-fl extract` (specs/ and manifest.json).")],
    show_features: Annotated[
        bool, typer.Option("--show-features", help="Also show every feature of each Tier 2 vector that would leave, by name.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Partner config declaring your agreements (default: the one extract used)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the exact JSON payloads that would be published.")] = False,
) -> None:
    """Show exactly what would be transmitted per protocol, and what is withheld and why. Sends nothing."""
    try:
        tier = manifest_tier(specs)
        partner_config = load_partner_config(specs, config) if tier == 2 or config is not None else None
        plan = plan_transmission(specs, tier=tier, config=partner_config)
    except UserFacingError as error:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
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
    form = "feature vectors in vectors.submitted batches" if report["tier"] == 2 else "spec.submitted events"
    console.print(
        f"[bold]Tier {report['tier']}[/]{mode}: {summary['transmitted']} of {summary['protocols']} protocols would be "
        f"sent as {form}; {summary['withheld']} withheld."
    )
    sent = [row for row in report["protocols"] if row["transmitted"]]
    if sent and report["tier"] == 2:
        table = Table(title="Would be transmitted: one 223-value feature vector each (no text, no exact quantity)",
                      title_justify="left", show_lines=True)  # fmt: skip
        for column in ("protocol", "label", "non-zero values", "non-zero by group"):
            table.add_column(column, overflow="fold")
        for row in sent:
            s = row["summary"]
            groups = ", ".join(f"{group} {count}" for group, count in s["nonzero_by_group"].items())
            table.add_row(escape(row["source"]), row["sensitivity"], f"{s['nonzero']} of {s['values']}", groups)
        console.print(table)
    elif sent:
        table = Table(title="Would be transmitted (closed vocabularies only: no text of yours)", title_justify="left",
                      show_lines=True)  # fmt: skip
        for column in ("protocol", "label", "steps", "operations", "quantities", "classes", "domain / organism"):
            table.add_column(column, overflow="fold")
        for row in sent:
            s = row["summary"]
            kinds = ", ".join(f"{kind} {count}" for kind, count in s["quantity_kinds"].items())
            classes = "; ".join(f"{group}: {', '.join(members)}" for group, members in s["classes"].items() if members)
            table.add_row(escape(row["source"]), row["sensitivity"], str(s["steps"]), s["operations"],
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
            table.add_row(escape(row["source"]), row["sensitivity"], escape(row["label_source"] or "-"), decision["reason"],
                          escape(decision["explanation"]))  # fmt: skip
        console.print(table)
    for failure in report["unreadable"]:
        console.print(f"[yellow]not extracted:[/] {failure.get('source')}: {failure.get('reason')}")
    if report["tier"] == 2:
        console.print(f"{report['envelope'][0].upper()}{report['envelope'][1:]}. `--json` prints every vector exactly; "
                      "`--show-features` names every value.")  # fmt: skip
    else:
        console.print(f"Each payload travels in an event envelope: {report['envelope'].split(': ', 1)[1]}. "
                      "`--json` prints the exact payloads.")  # fmt: skip


def _vectors(plan: TransmissionPlan, featurizer: Any) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """(source, vector) for every protocol that may leave as Tier 2 vectors; (source, why not) for the others.

    For a Tier 2 folder these are the vector files `submit` sends, as the plan loaded and checked
    them; for a Tier 1 folder, vectors computed from the local specs (what Tier 2 would send).
    """
    vectors, without = [], []
    for item in plan.items:
        if plan.tier == 2:
            if item.transmittable and item.decision.form is Form.VECTORS and item.vector is not None:
                vectors.append((item.source, item.vector))
            else:
                without.append((item.source, item.decision.explanation))
            continue
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
        "vectors": [
            {"source": source, "vector": vector.model_dump(mode="json"),
             "values_by_name": dict(zip(featurizer.feature_names, vector.values, strict=True))}
            for source, vector in vectors
        ],  # fmt: skip
        "no_vector": [{"source": source, "why": why} for source, why in without],
    }


def _print_features(console: Console, plan: TransmissionPlan, featurizer: Any) -> None:
    if featurizer is None:
        console.print(f"[yellow]--show-features:[/] {NO_FEATURIZER}")
        return
    vectors, without = _vectors(plan, featurizer)
    console.print(f"[bold]Tier 2 feature vectors[/] ({len(featurizer.feature_names)} values each; sent only by a "
                  "Tier 2 submission, under a DPA). Every feature by name, grouped as in docs/features.md; "
                  "non-zero values in bold:")  # fmt: skip
    for source, vector in vectors:
        console.print(_feature_table(source, featurizer.feature_names, vector.values))
    for source, why in without:
        console.print(escape(f"{source}: no vector would leave ({why})"))


def _feature_table(source: str, names: list[str], values: list[float]) -> Table:
    """One row per layout group naming each of its features (`<group>.<feature>`) with its value."""
    nonzero = sum(1 for value in values if value)
    table = Table(title=escape(f"{source}: {nonzero} of {len(values)} values non-zero"), title_justify="left", show_lines=True)
    table.add_column("group")
    table.add_column("features (name=value)", overflow="fold")
    groups: dict[str, list[str]] = {}
    for name, value in zip(names, values, strict=True):
        group, _, member = name.partition(".")
        cell = f"{member or name}={value:g}"
        groups.setdefault(group, []).append(f"[bold]{cell}[/]" if value else f"[dim]{cell}[/]")
    for group, cells in groups.items():
        table.add_row(group, "  ".join(cells))
    return table
