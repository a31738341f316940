"""`mshale-fl agent run|status|reset-witness --config partner.toml`: the partner daemon and its state.

`run` keeps the partner's contribution up to date (agents/partner/daemon.py): it watches the
corpus, submits new and changed protocols at the partner's tier, verifies Mishale's audit
checkpoints and, at Tier 3, takes part in training. It runs until SIGTERM or Ctrl-C and exits 0;
a config mistake is one line and exit 2. Logs go to stderr (JSON lines when not a terminal).

`status` prints what the agent has done, from its state file (it needs no API key and works
whether the daemon runs or not); `--json` for machines. `reset-witness` clears a halt after an
audit fork was investigated: it keeps the old witness as evidence and trusts the next checkpoint.
See docs/agent.md.
"""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mshale_fl.agents.partner.agent_config import STATE_FOLDER, read_agent_file, resolve_home
from mshale_fl.agents.partner.agent_state import WITNESS_FILE, AgentState, AgentStateError, running_pid
from mshale_fl.config import get_settings
from mshale_fl.logging import configure_logging

app = typer.Typer(help="The partner agent: a daemon that keeps your contribution up to date.", no_args_is_help=True)

ConfigOption = Annotated[Path, typer.Option("--config", help="The agent config (see examples/partner.toml).")]
MAX_FILES_SHOWN = 50


@app.callback()
def _agent() -> None:
    """The partner agent: a daemon that keeps your contribution up to date."""


@app.command("run")
def run(config: ConfigOption) -> None:
    """Watch the corpus, submit new and changed protocols at your tier, verify audit checkpoints, join training (Tier 3)."""
    from mshale_fl.agents.partner.agent_config import load_agent_config
    from mshale_fl.agents.partner.daemon import PartnerDaemon

    settings = get_settings()
    configure_logging(settings.log_level)
    agent_config = load_agent_config(config, settings)  # AgentConfigError: one line, exit 2
    daemon = PartnerDaemon(agent_config, publish_window=settings.publish_window)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await daemon.run(stop)

    asyncio.run(main())


def _state_dir(config: Path) -> Path:
    path, written = read_agent_file(config)
    return resolve_home(path, written, get_settings()) / STATE_FOLDER


def _summary(state_dir: Path, stored: dict[str, Any] | None) -> dict[str, Any]:
    pid = running_pid(state_dir)
    files = (stored or {}).get("files") or {}
    counts: dict[str, int] = {}
    for record in files.values():
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    audit = dict((stored or {}).get("audit") or {})
    return {
        "state_dir": str(state_dir),
        "running": pid is not None,
        "pid": pid if pid and pid > 0 else None,
        "partner_id": (stored or {}).get("partner_id"),
        "daemon": (stored or {}).get("daemon") or {},
        "halted": (stored or {}).get("halted"),
        "counts": dict(sorted(counts.items())),
        "audit": {**audit, "pending": len(audit.get("pending") or [])},
        "files": files,
    }


@app.command("status")
def status(
    config: ConfigOption,
    json_output: Annotated[bool, typer.Option("--json", help="Print the state as JSON.")] = False,
) -> None:
    """What the agent has submitted, withheld and verified, and whether it runs (from its state; no key needed)."""
    state_dir = _state_dir(config)
    summary = _summary(state_dir, AgentState.read(state_dir))
    if json_output:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    console = Console(highlight=False, soft_wrap=True)
    if summary["partner_id"] is None:
        console.print(f"The agent has not run with state folder {state_dir} yet "
                      f"(`mshale-fl agent run --config {config}` starts it).")  # fmt: skip
        return
    daemon = summary["daemon"]
    running = f"running (pid {summary['pid']})" if summary["running"] else "not running"
    console.print(f"Partner [bold]{summary['partner_id']}[/], tier {daemon.get('tier', '?')} "
                  f"(submits {'vectors' if daemon.get('submit_tier') == 2 else 'specs'}): {running}; "
                  f"corpus {escape(str(daemon.get('corpus', '?')))}")  # fmt: skip
    console.print(f"Started {daemon.get('started_at') or '-'}, last scan {daemon.get('last_scan_at') or '-'}"
                  + (f", stopped {daemon['stopped_at']}" if daemon.get("stopped_at") and not summary["running"] else ""))  # fmt: skip
    counts = ", ".join(f"{count} {name}" for name, count in summary["counts"].items()) or "none yet"
    console.print(f"Files: {counts}")
    audit = summary["audit"]
    if audit.get("checkpoint_size") is not None:
        console.print(f"Audit: checkpoint of size {audit['checkpoint_size']} verified at {audit.get('checked_at')}; "
                      f"{audit['pending']} receipt(s) pending")  # fmt: skip
    else:
        console.print(f"Audit: no checkpoint verified yet; {audit['pending']} receipt(s) pending")
    if summary["halted"]:
        halted = summary["halted"]
        console.print(f"[bold red]HALTED[/] since {halted.get('at')}: {escape(str(halted.get('reason')))}: "
                      f"{escape(str(halted.get('error')))}")  # fmt: skip
    attention = {source: record for source, record in summary["files"].items() if record["status"] != "accepted"}
    if attention:
        table = Table("file", "status", "label", "why", title="Files not accepted", title_justify="left")
        for source, record in sorted(attention.items())[:MAX_FILES_SHOWN]:
            table.add_row(escape(source), record["status"], record.get("sensitivity") or "-",
                          escape("; ".join(record.get("reasons") or []) or "-"))  # fmt: skip
        console.print(table)
        if len(attention) > MAX_FILES_SHOWN:
            console.print(f"... {len(attention) - MAX_FILES_SHOWN} more (--json lists every file)")


@app.command("reset-witness")
def reset_witness(config: ConfigOption) -> None:
    """After an audit fork was investigated: keep the old witness as evidence, clear the halt, trust the next checkpoint."""
    state_dir = _state_dir(config)
    if running_pid(state_dir) is not None:
        raise AgentStateError(f"the agent runs with state folder {state_dir}; stop it first (systemctl stop mshale-agent)")
    stored = AgentState.read(state_dir)
    if stored is None:
        raise AgentStateError(f"no agent state in {state_dir}: nothing to reset")
    state = AgentState.load(state_dir, str(stored.get("partner_id")))
    witness = state_dir / WITNESS_FILE
    kept = None
    if witness.exists():
        kept = witness.with_name(f"{WITNESS_FILE}.{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.old")
        witness.rename(kept)
    state.halted = None
    for key in ("checkpoint_size", "checkpoint_root", "checked_at"):
        state.audit.pop(key, None)
    state.save()
    typer.echo("halt cleared; the next checkpoint seen is trusted" + (f"; old witness kept as {kept}" if kept else ""))
