"""`mshale-fl model ...`: version 0 of the shared model (`init`), and access to the published ones.

`init` and `card` are for Mishale's operators; `list` and `pull` are for partners (their API key
names them, as for `submit`) and go over the broker to the predict workers (mshale_fl/access/).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mshale_fl.errors import UserFacingError

app = typer.Typer(
    help="The shared model mshale1: version 0, the published versions, your access, downloads.", no_args_is_help=True
)
DEFAULT_OUTPUT = Path("models/mshale1_v0.pt")


@app.command("init")
def init(
    output: Path = typer.Option(DEFAULT_OUTPUT, "--output", "-o", help="Model file to write"),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the initial weights (0 gives the shipped file)"),
    force: bool = typer.Option(False, "--force", help="Replace an existing file with different weights"),
    as_json: bool = typer.Option(False, "--json", help="Print the path and digest as JSON"),
) -> None:
    """Write version 0 of mshale1 (223 -> 64 -> 32 -> 1): the same seed always gives the same weights and digest."""
    # Imported here: torch takes seconds to import and other commands should not pay for it.
    from mshale_fl.training.model import (
        ModelFileError,
        ModelMetadata,
        initial_model,
        load_model,
        model_digest,
        save_model,
    )

    model = initial_model(seed)
    digest = model_digest(model)
    if output.exists():
        try:
            existing, metadata = load_model(output)
            same = model_digest(existing) == digest and metadata == ModelMetadata(version=0)
        except ModelFileError:
            same = False
        if not same and not force:
            raise UserFacingError(f"{output} exists with other contents; pass --force to replace it")
    save_model(output, model, ModelMetadata(version=0, parent=None, rounds=0))
    if as_json:
        typer.echo(json.dumps({"path": str(output), "sha256": digest, "seed": seed, "version": 0}))
    else:
        typer.echo(f"wrote {output} (mshale1 version 0, seed {seed}, sha256 {digest})")


# -- partners: what they may have, and downloads ---------------------------------------------------

ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="MSHALE_API_KEY", show_default=False, show_envvar=True,
                 help="Your partner API key (better: set MSHALE_API_KEY)."),
]  # fmt: skip


def _need_key(api_key: str | None) -> str:
    if not api_key:
        raise UserFacingError("no API key: pass --api-key or set MSHALE_API_KEY")
    return api_key


def _client_settings() -> Any:
    import structlog

    from mshale_fl.config import get_settings
    from mshale_fl.logging import configure_logging

    settings = get_settings()
    if not structlog.is_configured():
        configure_logging(settings.log_level)  # to stderr: stdout stays clean for the table and --json
    return settings


def _version(value: str) -> int | str:
    if value == "latest":
        return value
    try:
        number = int(value)
    except ValueError:
        raise typer.BadParameter("a version number (0, 1, ...) or 'latest'") from None
    if number < 0:
        raise typer.BadParameter("a version number is 0 or more")
    return number


@app.command("list")
def list_models(
    api_key: ApiKeyOption = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for the answer.")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """The model versions Mishale has published and your access: predictions now, and which versions you may download."""
    from mshale_fl.access.client import open_access_client

    key = _need_key(api_key)
    settings = _client_settings()

    async def ask() -> Any:
        async with open_access_client(key, settings.broker_url) as client:
            return await client.list_models(timeout=timeout)

    reply = asyncio.run(ask())
    if as_json:
        typer.echo(reply.model_dump_json(indent=2))
        return
    _print_list(reply)


def _print_list(reply: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=False)
    tier = f"Tier {reply.tier}" if reply.tier is not None else "not registered"
    actions = Table("action", "access", "why / what would grant it", title=f"Access of partner {reply.partner_id} ({tier})",
                    title_justify="left")  # fmt: skip
    for action in reply.actions:
        if action.allowed:
            left = f"; {action.quota_remaining} predictions left today" if action.quota_remaining is not None else ""
            actions.add_row(action.action, "[green]yes[/]", escape(left.lstrip("; ")))
        else:
            reasons = "; ".join(f"{r.code}: {r.message}" for r in action.reasons)
            actions.add_row(
                action.action, "[red]no[/]", escape(reasons + (f" -> {action.remedy}" if action.remedy else ""))
            )
    console.print(actions)
    if not reply.versions:
        console.print("No model version is published yet.")
        return
    versions = Table("version", "parent", "rounds", "published", "sha256", "trained by", "you (epsilon)", "download",
                     title="Model versions", title_justify="left")  # fmt: skip
    for version in reply.versions:
        you = f"yes ({version.your_epsilon:.3g})" if version.you_contributed else "no"
        if version.download.allowed:
            download = "[green]yes[/]"
        else:
            download = "[red]no[/] " + escape("; ".join(r.code for r in version.download.reasons))
        versions.add_row(
            str(version.version), "-" if version.parent_version is None else str(version.parent_version), str(version.rounds),
            version.published_at.strftime("%Y-%m-%d %H:%M"), version.sha256[:12], f"{version.contributors} partner(s)", you, download,
        )  # fmt: skip
    console.print(versions)


@app.command("pull")
def pull(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the model and its papers into.")],
    version: Annotated[str, typer.Option("--version", help="A version number, or 'latest'.")] = "latest",
    api_key: ApiKeyOption = None,
    verifier_key: Annotated[
        str | None,
        typer.Option(
            "--verifier-key",
            envvar="MSHALE_AUDIT_VERIFIER_KEY",
            show_envvar=True,
            help="The audit log's verifier key (from Mishale: `mshale-fl audit pubkey`).",
        ),
    ] = None,  # fmt: skip
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for the whole download.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Download a model version you helped train (Tier 3) and keep it only if it matches the registry and the audit log."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from mshale_fl.access.client import open_access_client
    from mshale_fl.access.proofs import configured_verifier
    from mshale_fl.access.pull import save_pulled_model, verify_download
    from mshale_fl.access.wire import ModelDownloadReply

    requested = _version(version)
    key = _need_key(api_key)
    verifier = configured_verifier(verifier_key)  # before downloading: without it nothing could be checked
    settings = _client_settings()
    console = Console(stderr=True)
    progress = Progress(TextColumn(f"downloading model version {version}"), BarColumn(), DownloadColumn(),
                        console=console, transient=True, disable=as_json or not console.is_terminal)  # fmt: skip
    task = progress.add_task("pull", total=None)

    async def fetch() -> Any:
        async with open_access_client(key, settings.broker_url) as client:
            return await client.download(
                requested,
                timeout=timeout,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )

    with progress:
        downloaded = asyncio.run(fetch())
    if isinstance(downloaded, ModelDownloadReply):  # denied
        denial = downloaded.denial
        reasons = (
            "; ".join(f"{r.code}: {r.message}" for r in denial.reasons) if denial else downloaded.detail or "denied"
        )
        remedy = f" To get access: {denial.remedy}" if denial and denial.remedy else ""
        if as_json:
            typer.echo(downloaded.model_dump_json(indent=2))
        raise AccessDeniedError(f"model version {version} is not yours to download: {reasons}.{remedy}")
    pulled = verify_download(downloaded, verifier, requested=requested)
    paths = save_pulled_model(output, pulled)
    if as_json:
        typer.echo(json.dumps({"version": pulled.version, "sha256": pulled.sha256, "log_size": pulled.log_size,
                               "files": {kind: str(path) for kind, path in paths.items()}}, indent=2, sort_keys=True))  # fmt: skip
    else:
        typer.echo(
            f"wrote {paths['model']} (mshale1 version {pulled.version}, sha256 {pulled.sha256}): matches the registry "
            f"and the audit log (its publication is entry {pulled.receipt.index} of the signed log of size {pulled.log_size}); "
            f"model card {paths['card_markdown']}"
        )


class AccessDeniedError(UserFacingError):
    """The policy refused; exit status 1 (like a rejected submission), the reasons and remedy on one line."""

    exit_code = 1


@app.command("card")
def card(
    version: Annotated[str, typer.Option("--version", help="A version number, or 'latest'.")] = "latest",
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder to write model-<N>.json and model-<N>.md into.")
    ] = Path("."),
) -> None:
    """Write the model card of a registered version from the ledger (operators): JSON and Markdown."""
    from mshale_fl.access.cards import write_model_card
    from mshale_fl.access.registry import get_model_version, latest_model_version
    from mshale_fl.config import get_settings
    from mshale_fl.ledger.database import open_ledger

    requested = _version(version)
    engine = open_ledger(settings=get_settings())
    try:
        with engine.connect() as connection:
            model = (
                latest_model_version(connection)
                if requested == "latest"
                else get_model_version(connection, int(requested))
            )
    finally:
        engine.dispose()
    if model is None:
        raise UserFacingError("no model version is registered yet (the predict worker registers each model.published)")
    json_path, markdown_path = write_model_card(output, model)
    typer.echo(f"wrote {json_path} and {markdown_path}")
