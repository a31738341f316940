"""The console's one HTML page, rendered from the state dict (`state.py`).

Self-contained: inline CSS, inline SVG, no script, no link to anything but itself and
`/api/state`; it reloads itself with `<meta http-equiv="refresh">`. Every value from a source
passes through `escape`, since partner names and error messages are data, not markup.
"""

from __future__ import annotations

from html import escape
from typing import Any

from mshale_fl.console.plot import line_plot_svg

BAR_WIDTH, BAR_HEIGHT = 240, 22

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2329; background: #f4f6f8; }
header { background: #1d2b3a; color: #fff; padding: 10px 20px; display: flex; gap: 24px; align-items: baseline; }
header h1 { font-size: 18px; margin: 0; }
header .meta { color: #c8d3de; font-size: 12px; }
header a { color: #c8d3de; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; padding: 16px 20px; }
section { overflow-x: auto; background: #fff; border: 1px solid #d7dde3; border-radius: 6px; padding: 12px 16px; }
section h2 { font-size: 16px; margin: 0 0 8px; }
.source { color: #68737d; font-size: 12px; margin: 0 0 8px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px 4px 0; border-bottom: 1px solid #edf0f2; vertical-align: top; }
th { font-size: 12px; color: #68737d; font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.id, .tier { white-space: nowrap; }
.eps { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0 0 12px; }
svg.plot { max-width: 720px; height: auto; display: block; }
.unavailable { background: #fff4e5; border: 1px solid #f0b35b; padding: 8px; border-radius: 4px; }
.good { color: #17803d; font-weight: 600; }
.bad { color: #b42318; font-weight: 600; }
.muted { color: #68737d; }
.tag { display: inline-block; padding: 0 6px; border-radius: 3px; background: #e8eef4; margin: 0 4px 2px 0; font-size: 12px; }
.tag.inactive { background: #f3e8e8; color: #8a3b3b; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 12px; }
code { font-size: 12px; word-break: break-all; }
"""


def _status_block(panel: dict[str, Any]) -> str:
    return f'<p class="source">source: {escape(str(panel.get("source", "")))}</p>'


def _unavailable(panel: dict[str, Any]) -> str:
    return f'<p class="unavailable" role="alert">{escape(panel["error"] or "unavailable")}</p>'


def _section(anchor: str, title: str, panel: dict[str, Any], body: str) -> str:
    content = body if panel.get("ok") else _unavailable(panel)
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{_status_block(panel)}{content}</section>'


def _partners(panel: dict[str, Any]) -> str:
    if not panel.get("ok"):
        return ""
    if not panel["partners"]:
        return '<p class="muted">No partners registered (`mshale-fl partners add`).</p>'
    rows = []
    for partner in panel["partners"]:
        agreements = "".join(
            f'<span class="tag{"" if agreement["active"] else " inactive"}">{escape(agreement["kind"])} '
            f'{escape(agreement["valid_from"])} → {escape(agreement["valid_until"])}'
            f'{"" if agreement["active"] else " (not active)"}</span>'
            for agreement in partner["agreements"]
        ) or '<span class="muted">none</span>'
        status_class = "good" if partner["status"] == "active" else "bad"
        rows.append(
            f'<tr class="partner" data-partner-id="{escape(partner["id"])}">'
            f'<td class="id"><strong>{escape(partner["id"])}</strong><br><span class="muted">{escape(partner["display_name"])}</span></td>'
            f'<td class="tier">Tier {int(partner["tier"])}</td>'
            f'<td>{"academic" if partner["academic"] else "commercial"}</td>'
            f'<td class="{status_class}">{escape(partner["status"])}</td>'
            f'<td class="agreements">{agreements}</td></tr>'
        )
    return (
        "<table><thead><tr><th>partner</th><th>tier</th><th>kind</th><th>status</th><th>agreements</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _rounds(count: int) -> str:
    return f"{count} round" if count == 1 else f"{count} rounds"


def _budget_bar(fraction: float, pause_fraction: float, *, low: bool) -> str:
    filled = max(0.0, min(fraction, 1.0)) * BAR_WIDTH
    line_x = pause_fraction * BAR_WIDTH
    colour = "#b42318" if low else "#2e7d4f"
    percent = round(pause_fraction * 100)
    return (
        f'<svg class="budget-bar" width="{BAR_WIDTH + 40}" height="{BAR_HEIGHT + 12}" role="img" '
        f'aria-label="{fraction * 100:.1f} % of the budget remaining; paused below {percent} %">'
        f'<rect x="0" y="0" width="{BAR_WIDTH}" height="{BAR_HEIGHT}" fill="#e8eef4"/>'
        f'<rect class="remaining" x="0" y="0" width="{filled:.1f}" height="{BAR_HEIGHT}" fill="{colour}"/>'
        f'<line class="pause-line" x1="{line_x:.1f}" x2="{line_x:.1f}" y1="-2" y2="{BAR_HEIGHT + 2}" '
        f'stroke="#111" stroke-width="2" stroke-dasharray="3,2"><title>pause line: {percent} % remaining</title></line>'
        f'<text x="{line_x:.1f}" y="{BAR_HEIGHT + 11}" font-size="10" text-anchor="middle">{percent} %</text>'
        f'<text x="{BAR_WIDTH + 6}" y="{BAR_HEIGHT - 8}" font-size="11">{fraction * 100:.0f} %</text>'
        "</svg>"
    )


def _budgets(panel: dict[str, Any]) -> str:
    if not panel.get("ok"):
        return ""
    pause = float(panel["pause_fraction"])
    legend = (
        f'<p class="legend">Bars show the share of each budget (ε per partner and model version) still '
        f"remaining; the dashed line is the {round(pause * 100)} % pause line: below it the partner is "
        "paused for that model version.</p>"
    )
    rows = []
    for budget in panel["budgets"]:
        low = budget["below_pause_line"] or budget["state"] == "paused"
        state = escape(budget["state"]) + (f' ({escape(budget["pause_reason"])})' if budget["pause_reason"] else "")
        rows.append(
            f'<tr class="budget" data-partner-id="{escape(budget["partner_id"])}" '
            f'data-model-version="{int(budget["model_version"])}" data-state="{escape(budget["state"])}">'
            f'<td class="id"><strong>{escape(budget["partner_id"])}</strong></td>'
            f'<td class="num">v{int(budget["model_version"])}</td>'
            f"<td>{_budget_bar(float(budget['fraction_remaining']), pause, low=low)}</td>"
            f'<td class="eps">ε {budget["epsilon_remaining"]:.3g} of {budget["epsilon_total"]:.3g} left'
            f'<br><span class="muted">spent {budget["epsilon_spent"]:.3g}, δ {budget["delta"]:.0e}, '
            f'{_rounds(int(budget["rounds_committed"]))}</span></td>'
            f'<td class="{"bad" if low else "good"}">{state}</td></tr>'
        )
    for partner in panel["unopened"]:
        rows.append(
            f'<tr class="budget unopened" data-partner-id="{escape(partner["partner_id"])}">'
            f'<td class="id"><strong>{escape(partner["partner_id"])}</strong></td><td></td>'
            f'<td colspan="3" class="muted">no budget opened yet (opens at its first training round, '
            f'ε {partner["epsilon_per_model_version"]:.3g} per model version)</td></tr>'
        )
    if not rows:
        return legend + '<p class="muted">No privacy budgets yet: no partner has trained.</p>'
    return (
        legend
        + "<table><thead><tr><th>partner</th><th>model</th><th>remaining</th><th>ε</th><th>state</th></tr></thead>"
        + f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _training(panel: dict[str, Any]) -> str:
    if not panel.get("ok"):
        return ""
    parts: list[str] = []
    plot = panel["plot"]
    if plot is None:
        parts.append(
            f'<p class="muted">No training run under {escape(panel["runs_dir"])} yet '
            "(`mshale-fl serve` writes its runs there).</p>"
        )
    elif not plot["points"]:
        parts.append(f'<p class="plot-empty muted">No plot: {escape(plot["empty_reason"] or "no points")}.</p>')
    else:
        metric, label = plot["metric"], plot["label"]
        if plot["is_loss"]:
            caption = f"Plotted: <code>{escape(metric)}</code>, {escape(label)}, per round of run {escape(plot['run_id'])}."
        else:
            caption = (
                f"No evaluation loss (<code>eval_loss</code>) is recorded for run {escape(plot['run_id'])}; "
                f"plotted instead: <code>{escape(metric)}</code>, {escape(label)}."
            )
        title = f"{metric} per round, run {plot['run_id']}"
        points = [(int(point["round"]), float(point["value"])) for point in plot["points"]]
        parts.append(f'<figure><p class="plot-caption">{caption}</p>{line_plot_svg(points, y_label=metric, title=title)}</figure>')
    if panel["runs"]:
        rows = []
        for run in panel["runs"]:
            last = run["last_round"]
            last_text = (
                f"round {last['round']}{' failed' if last['failed'] else ''}: "
                + (", ".join(escape(p) for p in last["participants"]) or "no participants")
                if last
                else '<span class="muted">no round completed</span>'
            )
            failed = f" ({int(run['rounds_failed'])} failed)" if run["rounds_failed"] else ""
            rows.append(
                f'<tr class="run" data-run-id="{escape(run["run_id"])}">'
                f'<td><code>{escape(run["run_id"])}</code>{" <span class=tag>active</span>" if run["active"] else ""}</td>'
                f'<td>model v{int(run["model_version"])}</td>'
                f'<td class="progress">{escape(run["progress"])}</td>'
                f'<td class="num">{int(run["rounds_done"])} / {int(run["rounds_planned"])}'
                f"{failed}</td>"
                f"<td>{last_text}</td></tr>"
            )
        shown = len(panel["runs"])
        more = f'<p class="muted">{panel["runs_total"] - shown} older runs not shown.</p>' if panel["runs_total"] > shown else ""
        parts.append(
            "<table><thead><tr><th>run</th><th>trains</th><th>progress</th><th>rounds</th><th>last round</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>{more}"
        )
    for problem in panel["unreadable"]:
        parts.append(f'<p class="unavailable">{escape(problem)}</p>')
    return "".join(parts)


def _audit(panel: dict[str, Any]) -> str:
    if not panel.get("ok"):
        return ""
    checkpoint = panel["latest_checkpoint"]
    verification = panel["verification"]
    parts = []
    if checkpoint is None:
        parts.append('<p class="bad checkpoint-status">No signed checkpoint in the log yet.</p>')
    else:
        signature = (
            '<span class="good">signature valid</span>'
            if checkpoint["signature_ok"]
            else f'<span class="bad">signature INVALID: {escape(checkpoint["signature_error"] or "")}</span>'
        )
        parts.append(
            f'<p class="checkpoint-status">Latest signed checkpoint: tree size <strong class="checkpoint-size">'
            f'{int(checkpoint["size"])}</strong>, {signature}'
            + (f'<br>root <code>{escape(checkpoint["root"])}</code>' if checkpoint["root"] else "")
            + "</p>"
            f'<pre class="checkpoint-note">{escape(checkpoint["note"])}</pre>'
        )
    verdict = (
        f'<span class="good">VERIFIED</span>: {int(verification["entries"])} entries and '
        f'{int(verification["checkpoints"])} checkpoints verify up to size {int(verification["verified_size"])}'
        if verification["ok"]
        else f'<span class="bad">VERIFICATION FAILED</span>: {int(verification["problem_count"])} problem(s); '
        f'the log verifies up to size {int(verification["verified_size"])}, first bad position '
        f'{escape(str(verification["first_bad_position"]))}'
    )
    parts.append(
        f'<p class="verification" data-ok="{"true" if verification["ok"] else "false"}">Full verification '
        f"(<code>audit verify</code>): {verdict}.<br>"
        f'<span class="muted">verified at {escape(verification["verified_at"])}'
        f'{"; the log has grown since and is re-verified at the next interval" if verification["log_grew_since"] else ""}'
        f"; verifier key from {escape(panel['verifier'])}</span></p>"
    )
    issues = verification["problems"] + verification["warnings"]
    if issues:
        parts.append(
            "<ul>"
            + "".join(
                f'<li>[{escape(item["kind"])}] at {escape(str(item["position"]))}: {escape(item["message"])}</li>'
                for item in issues
            )
            + "</ul>"
        )
    return "".join(parts)


def _dead_letters(panel: dict[str, Any]) -> str:
    if not panel.get("ok"):
        return ""
    rows = []
    for queue in panel["queues"]:
        if not queue["declared"]:
            count = '<td class="num muted" colspan="3">queue not declared (`mshale-fl broker declare`)</td>'
        elif queue["messages"] is None:
            count = '<td class="num muted" colspan="3">no statistics yet</td>'
        else:
            count = (
                f'<td class="num count">{int(queue["messages"])}</td>'
                f'<td class="num">{int(queue["ready"] or 0)}</td><td class="num">{int(queue["unacked"] or 0)}</td>'
            )
        rows.append(
            f'<tr class="dead-letter-queue" data-queue="{escape(queue["queue"])}">'
            f'<td><code>{escape(queue["queue"])}</code><br><span class="muted">{escape(queue["meaning"])}</span></td>'
            f"{count}</tr>"
        )
    return (
        "<table><thead><tr><th>queue</th><th class=num>messages</th><th class=num>ready</th><th class=num>unacked</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        '<p class="muted">Counts come from the broker\'s statistics, refreshed every few seconds.</p>'
    )


def render_page(state: dict[str, Any]) -> str:
    refresh = int(state["refresh_seconds"])
    sections = [
        _section("partners", "Partners", state["partners"], _partners(state["partners"])),
        _section("training", "Training rounds", state["training"], _training(state["training"])),
        _section("budgets", "Privacy budgets", state["budgets"], _budgets(state["budgets"])),
        _section("audit", "Audit log", state["audit"], _audit(state["audit"])),
        _section("dead-letters", "Dead letters", state["dead_letters"], _dead_letters(state["dead_letters"])),
    ]
    return (
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{refresh}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>mshale-fl console</title>"
        f"<style>{STYLE}</style></head><body>"
        "<header><h1>mshale-fl console</h1>"
        f'<span class="meta">read-only · generated {escape(state["generated_at"])} · refreshes every {refresh} s · '
        '<a href="/api/state">/api/state</a></span></header>'
        f"<main>{''.join(sections)}</main></body></html>"
    )


__all__ = ["render_page"]
